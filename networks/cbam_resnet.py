"""NAS-Lung's general network (Fig. 1): Conv1, Conv2, three stages of residual blocks, CBAM, pooling and a head."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from monai.utils import look_up_option

from naslung.networks.blocks.cbam import CBAMBlock
from naslung.networks.blocks.residual import ResidualBlock
from naslung.networks.errors import ConfigError
from naslung.networks.heads import HEADS, classification_head
from naslung.networks.initialisation import init_resnet_weights_
from naslung.networks.spec import PAPER_MODEL_1, ArchSpec

__all__ = ["ATTENTION_OPTIONS", "STAGE_NAMES", "CBAMResNet3D"]

ATTENTION_OPTIONS = ("channel_first", "spatial_first", "none")
"""``attention`` values: CBAM channel-first (the paper's), spatial-first (Table 3) or no CBAM (Table 2's base)."""

"""``head`` values: a fully connected layer (softmax training) or A-Softmax's :class:`AngularLinear`."""

STAGE_NAMES = ("stage1", "stage2", "stage3", "stage4", "stage5")
"""Attribute names of the five stages; stages 2-5 end with CBAM (their ``cbam`` child) unless attention is off."""


def _option(value: Any, supported: Sequence[str], what: str) -> str:
    """Validate a string option of :class:`CBAMResNet3D` with MONAI's ``look_up_option``."""
    try:
        return look_up_option("none" if value is None else value, supported)
    except ValueError:
        raise ConfigError(f"CBAMResNet3D: {what} {value!r} is not supported; use one of {tuple(supported)}.") from None


class CBAMResNet3D(nn.Module):
    """The general 3D network of NAS-Lung (Jiang et al. 2021, Sec. 3.1-3.3, Fig. 1-3), any spec of eq. (7).

    Layout for ``arch = [C1, C2, [C^3_1..C^3_L], [C^4_1..C^4_M], [C^5_1..C^5_N]]`` and a 32^3 nodule cube:

    ========  =====================================================  ================
    stage     layers                                                 output
    ========  =====================================================  ================
    stage1    Conv1: 3^3 conv + BN + ReLU                            (B, C1, 32^3)
    stage2    Conv2: 3^3 conv + BN + ReLU, CBAM                      (B, C2, 32^3)
    stage3    L residual blocks, the first with stride 2, CBAM       (B, C^3_L, 16^3)
    stage4    M residual blocks, the first with stride 2, CBAM       (B, C^4_M, 8^3)
    stage5    N residual blocks, the first with stride 2, CBAM       (B, C^5_N, 4^3)
    stage6    global average pooling (``features``), then the head   (B, C^5_N), (B, K)
    ========  =====================================================  ================

    Residual blocks use 3^3 convolutions unless the spec names another kernel for a block (``[c, k]``, see
    :class:`ArchSpec`). Downsampling happens only at the first residual block of stages 3, 4 and 5 (stride 2 in
    its first convolution and in its projection shortcut), so a 32^3 cube is pooled from 4^3 as in the authors'
    code (``AvgPool3d(4)``). Stages 1-2 stay at input resolution so that stage 2's spatial attention map, the one
    the paper visualises (Fig. 5, Sec. 4.4), has one value per input voxel. The authors' code instead starts each
    of stages 3-5 with an extra stride-2 3^3 conv + BN + ReLU and gives every block a 1x1 projection; here the
    stride is folded into the first block and the shortcut is the identity whenever shapes allow (Fig. 2), which
    is cheaper.

    Parameter count: Table 5's Model-1 ``[4,4,[4,4],[4,8],[8,8]]`` has 13,316 parameters here (0.013 M, linear head;
    13,314 with the angular head; 16,128 in the authors' layout), not the 0.14 M the table prints. No layout of
    Fig. 1-2 reaches 0.14 M with at most 8 channels: the largest convolution of Model-1 (8 -> 8, 3^3) holds 1,728
    weights; even if all 18 convolutions of its stages were that large they would hold 31 k, and CBAM (326 here)
    and the head (18) add little. The table's 0.14 for Model-1 is therefore not a parameter count in millions of
    this spec (a different unit or a typo); ``benchmarks/latency.py`` prints the count beside it.

    The head is a fully connected layer (``head="linear"``) or A-Softmax's :class:`AngularLinear`
    (``head="angular"``, the paper's choice, to be trained with ``AngularSoftmaxLoss``). In eval mode both return
    (B, K) logits, so MONAI post-transforms (softmax, argmax) apply; in training mode the angular head returns
    (B, 2, K), see :class:`AngularLinear`.

    Args:
        spatial_dims: number of spatial dimensions, 3 for CT cubes (2 works too, for slices).
        in_channels: input channels (1 for a CT cube).
        num_classes: K, the number of classes (2: benign, malignant).
        arch: the spec, as :class:`ArchSpec`, its text ``"[4,4,[4,4],[4,8],[8,8]]"`` or nested lists.
        attention: ``"channel_first"`` (default), ``"spatial_first"`` or ``"none"`` (``None`` too).
        head: ``"linear"`` (default) or ``"angular"``.
        margin: A-Softmax margin m in {1, 2, 3, 4}, used by the angular head.
        act: activation, a name or ``(name, kwargs)``.
        norm: normalisation, a name or ``(name, kwargs)``.
        cbam_reduction: reduction of CBAM's channel MLP.
        spatial_kernel_size: kernel of CBAM's spatial-attention convolution.
        record_attention: keep each stage's last spatial attention map, see :meth:`attention_maps`.

    Shapes:
        input: (B, in_channels, *spatial), spatial sizes divisible by 8 for the table above (e.g. 32^3);
        output: (B, num_classes) logits (eval mode).

    Raises:
        ConfigError: for an invalid spec or option.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        arch: ArchSpec | str | Sequence[Any] = PAPER_MODEL_1,
        attention: str | None = "channel_first",
        head: str = "linear",
        margin: int = 4,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        cbam_reduction: int = 4,
        spatial_kernel_size: int = 3,
        record_attention: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ConfigError(f"CBAMResNet3D: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}.")
        if in_channels < 1 or num_classes < 1:
            raise ConfigError(
                f"CBAMResNet3D: in_channels and num_classes must be positive, got {in_channels}, {num_classes}."
            )
        self.arch = ArchSpec.coerce(arch)
        self.attention = _option(attention, ATTENTION_OPTIONS, "attention")
        self.head_type = _option(head, HEADS, "head")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes

        def cbam(channels: int) -> OrderedDict[str, nn.Module]:
            if self.attention == "none":
                return OrderedDict()
            block = CBAMBlock(
                spatial_dims, channels, reduction=cbam_reduction, spatial_kernel_size=spatial_kernel_size,
                order=self.attention, act=act, record_spatial_map=record_attention,
            )  # fmt: skip
            return OrderedDict(cbam=block)

        spec = self.arch
        self.stage1 = Convolution(spatial_dims, in_channels, spec.stage1, kernel_size=3, act=act, norm=norm, bias=False)
        conv2 = Convolution(spatial_dims, spec.stage1, spec.stage2, kernel_size=3, act=act, norm=norm, bias=False)
        self.stage2 = nn.Sequential(OrderedDict(conv2=conv2, **cbam(spec.stage2)))
        channels = spec.stage2
        for name, blocks, kernels in zip(STAGE_NAMES[2:], spec.stages, spec.kernel_sizes, strict=True):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            for index, (out_channels, kernel) in enumerate(zip(blocks, kernels, strict=True)):
                stride = 2 if index == 0 else 1
                layers[f"block{index + 1}"] = ResidualBlock(
                    spatial_dims, channels, out_channels, stride=stride, kernel_size=kernel, act=act, norm=norm
                )
                channels = out_channels
            layers.update(cbam(channels))
            setattr(self, name, nn.Sequential(layers))
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.head = classification_head(self.head_type, channels, num_classes, margin)
        self.feature_channels = channels
        init_resnet_weights_(self, spatial_dims)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: the globally pooled output of stage 5, the input of the head.

        Args:
            x: (B, in_channels, *spatial) nodule cubes.

        Returns:
            (B, C^5_N) feature vectors (for t-SNE, Fig. 6, and the Davies-Bouldin index, Table 4).
        """
        x = self.stage5(self.stage4(self.stage3(self.stage2(self.stage1(x)))))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify ``x`` (B, in_channels, *spatial): (B, num_classes) logits in eval mode."""
        return self.head(self.features(x))

    def attention_maps(self) -> dict[str, torch.Tensor]:
        """The spatial attention map of each stage's CBAM from the last forward pass.

        Returns:
            ``{"stage2": (B, 1, 32, 32, 32), "stage3": (B, 1, 16, 16, 16), ...}`` for a 32^3 input, detached,
            values in (0, 1); empty without attention, before any forward pass, or with ``record_attention=False``.
            Call it on the eager module (a TorchScript copy records too, in each ``stageN.cbam.spatial_map``).
        """
        maps: dict[str, torch.Tensor] = {}
        for name in STAGE_NAMES[1:]:
            block = getattr(getattr(self, name), "cbam", None)
            if isinstance(block, CBAMBlock) and block.spatial_map is not None:
                maps[name] = block.spatial_map
        return maps
