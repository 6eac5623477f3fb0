"""NAS-Lung's networks in the authors' layout, layer for layer as their ``ConvRes`` (fei-hdu/NAS-Lung)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from monai.utils import look_up_option

from naslung.networks.blocks.reference_cbam import ReferenceCBAMBlock
from naslung.networks.blocks.reference_residual import ReferenceResidualBlock
from naslung.networks.errors import ConfigError
from naslung.networks.heads import HEADS, classification_head
from naslung.networks.spec import PAPER_MODEL_1, ArchSpec

__all__ = ["REFERENCE_ATTENTION_OPTIONS", "STAGES", "ReferenceConvRes3D"]

REFERENCE_ATTENTION_OPTIONS = ("channel_first", "none")
"""``attention`` values of the reference layout: the authors' CBAM (:class:`ReferenceCBAMBlock`, channel gate
first) or none. The authors' layer has no spatial-first order: its output ``M_S * x + x`` is defined by the order."""

STAGES = ("stage3", "stage4", "stage5")
"""Attribute names of the residual stages 3-5 (``stage1`` is Conv1, ``stage2`` Conv2 and CBAM)."""


class ReferenceConvRes3D(nn.Module):
    """NAS-Lung's general network exactly as the authors' code builds it (``ConvRes`` of fei-hdu/NAS-Lung).

    For ``arch = [C1, C2, [C^3_1..C^3_L], [C^4_1..C^4_M], [C^5_1..C^5_N]]`` and a 32^3 nodule cube:

    ========  ==================================================================  ================
    stage     layers                                                              output
    ========  ==================================================================  ================
    stage1    3^3 conv (bias) + BN + ReLU                                         (B, C1, 32^3)
    stage2    3^3 conv (bias) + BN + ReLU, CBAM                                   (B, C2, 32^3)
    stage3    ``downsample``: stride-2 3^3 conv (no bias) + BN + ReLU keeping     (B, C^3_L, 16^3)
              the channels; L :class:`ReferenceResidualBlock`; CBAM
    stage4    the same with M blocks                                              (B, C^4_M, 8^3)
    stage5    the same with N blocks                                              (B, C^5_N, 4^3)
    pool      global average (the authors' ``AvgPool3d(4)`` on 4^3), ``features``  (B, C^5_N)
    head      A-Softmax's angular layer (the authors' ``AngleLinear``)            (B, K)
    ========  ==================================================================  ================

    CBAM is :class:`ReferenceCBAMBlock` (softmax channel gate, ``M_S * x + x``). Table 5's Model-1
    ``[4,4,[4,4],[4,8],[8,8]]`` has 16,128 parameters in this layout with the angular head (13,314 in
    :class:`~naslung.networks.CBAMResNet3D`'s). The authors' code fixes C1 = C2 = 4, one input channel, two classes
    and margin 4; here they follow the spec and the arguments, and with those values the layout, the parameter
    shapes and the eval-mode logits are the authors' (their weights convert with
    :func:`naslung.networks.reference_weights.convert_authors_state_dict`). Weights start at PyTorch's default
    initialisation, as in the authors' code.

    The angular head's weight is stored (K, F) here and (F, K) in the authors' ``AngleLinear``; both normalise each
    class vector, so eval logits are ``||x|| cos(theta_j)`` in both. ``head="linear"`` (softmax training) is offered
    for ablations; the authors' weights need ``head="angular"``.

    Args:
        spatial_dims: number of spatial dimensions (3 for CT cubes; 2 works too).
        in_channels: input channels (1 for a CT cube).
        num_classes: K, the number of classes (2: benign, malignant).
        arch: the spec, as :class:`ArchSpec`, its text or nested lists. A block written ``[c, k]`` uses k^3 main
            convolutions (the authors' code has 3 only).
        attention: ``"channel_first"`` (the authors' CBAM, default) or ``"none"`` (``None`` too).
        head: ``"angular"`` (default, the authors') or ``"linear"``.
        margin: A-Softmax margin m in {1, 2, 3, 4} (the authors' 4).
        act: activation, a name or ``(name, kwargs)``.
        norm: normalisation, a name or ``(name, kwargs)``.
        cbam_reduction: reduction of CBAM's channel MLP (the authors' 4).
        spatial_kernel_size: kernel of CBAM's spatial convolution (the authors' 3).
        record_attention: keep each stage's last spatial attention map, see :meth:`attention_maps`.

    Shapes:
        input: (B, in_channels, *spatial), spatial sizes divisible by 8 (e.g. 32^3);
        output: (B, num_classes) logits in eval mode; (B, 2, K) in training mode with the angular head.

    Raises:
        ConfigError: for an invalid spec or option.
    """

    layout = "reference"

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        arch: ArchSpec | str | Sequence[Any] = PAPER_MODEL_1,
        attention: str | None = "channel_first",
        head: str = "angular",
        margin: int = 4,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        cbam_reduction: int = 4,
        spatial_kernel_size: int = 3,
        record_attention: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ConfigError(f"ReferenceConvRes3D: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}.")
        if in_channels < 1 or num_classes < 1:
            raise ConfigError(
                f"ReferenceConvRes3D: in_channels and num_classes must be positive, got {in_channels}, {num_classes}."
            )
        self.arch = ArchSpec.coerce(arch)
        self.attention = _option(attention, REFERENCE_ATTENTION_OPTIONS, "attention")
        self.head_type = _option(head, HEADS, "head")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes

        def cbam(channels: int) -> OrderedDict[str, nn.Module]:
            if self.attention == "none":
                return OrderedDict()
            block = ReferenceCBAMBlock(
                spatial_dims, channels, reduction=cbam_reduction, spatial_kernel_size=spatial_kernel_size,
                record_spatial_map=record_attention,
            )  # fmt: skip
            return OrderedDict(cbam=block)

        def unit(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> Convolution:
            return Convolution(spatial_dims, c_in, c_out, strides=stride, kernel_size=3, act=act, norm=norm, bias=bias)

        spec = self.arch
        self.stage1 = unit(in_channels, spec.stage1)
        self.stage2 = nn.Sequential(OrderedDict(conv2=unit(spec.stage1, spec.stage2), **cbam(spec.stage2)))
        channels = spec.stage2
        for name, blocks, kernels in zip(STAGES, spec.stages, spec.kernel_sizes, strict=True):
            layers: OrderedDict[str, nn.Module] = OrderedDict(downsample=unit(channels, channels, 2, bias=False))
            for index, (out_channels, kernel) in enumerate(zip(blocks, kernels, strict=True)):
                layers[f"block{index + 1}"] = ReferenceResidualBlock(
                    spatial_dims, channels, out_channels, kernel_size=kernel, act=act, norm=norm
                )
                channels = out_channels
            layers.update(cbam(channels))
            setattr(self, name, nn.Sequential(layers))
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.head = classification_head(self.head_type, channels, num_classes, margin)
        self.feature_channels = channels

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: the globally pooled output of stage 5, the input of the head.

        Args:
            x: (B, in_channels, *spatial) nodule cubes.

        Returns:
            (B, C^5_N) feature vectors.
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
        """
        maps: dict[str, torch.Tensor] = {}
        for name in ("stage2", *STAGES):
            block = getattr(getattr(self, name), "cbam", None)
            if isinstance(block, ReferenceCBAMBlock) and block.spatial_map is not None:
                maps[name] = block.spatial_map
        return maps


def _option(value: Any, supported: Sequence[str], what: str) -> str:
    """Validate a string option of :class:`ReferenceConvRes3D` with MONAI's ``look_up_option``."""
    try:
        return look_up_option("none" if value is None else value, supported)
    except ValueError:
        raise ConfigError(
            f"ReferenceConvRes3D: {what} {value!r} is not supported in the reference layout; use one of "
            f"{tuple(supported)}."
        ) from None
