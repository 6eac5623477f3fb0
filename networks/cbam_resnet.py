"""NAS-Lung's general network (Fig. 1): Conv1, Conv2, three stages of residual blocks, CBAM, pooling and a head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.networks.blocks import Convolution

from naslung.networks.blocks.cbam import CBAMBlock
from naslung.networks.blocks.residual import ResidualBlock
from naslung.networks.initialisation import init_resnet_weights_
from naslung.networks.spec import PAPER_MODEL_1, ArchSpec
from naslung.networks.staged_network import STAGE_NAMES, StagedCBAMNetwork

__all__ = ["ATTENTION_OPTIONS", "STAGE_NAMES", "CBAMResNet3D"]

ATTENTION_OPTIONS = ("channel_first", "spatial_first", "none")
"""``attention`` values: CBAM channel-first (the paper's), spatial-first (Table 3) or no CBAM (Table 2's base)."""


class CBAMResNet3D(StagedCBAMNetwork):
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
        super().__init__(spatial_dims, in_channels, num_classes, arch, attention, head, ATTENTION_OPTIONS)

        def conv_unit(c_in: int, c_out: int) -> Convolution:
            return Convolution(spatial_dims, c_in, c_out, kernel_size=3, act=act, norm=norm, bias=False)

        def residual_block(index: int, c_in: int, c_out: int, kernel: int) -> ResidualBlock:
            stride = 2 if index == 0 else 1  # each of stages 3-5 downsamples in its first block
            return ResidualBlock(spatial_dims, c_in, c_out, stride=stride, kernel_size=kernel, act=act, norm=norm)

        def cbam(channels: int) -> CBAMBlock:
            return CBAMBlock(
                spatial_dims, channels, reduction=cbam_reduction, spatial_kernel_size=spatial_kernel_size,
                order=self.attention, act=act, record_spatial_map=record_attention,
            )  # fmt: skip

        self._build_stages(conv_unit, residual_block, cbam, margin)
        init_resnet_weights_(self, spatial_dims)
