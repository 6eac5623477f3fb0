"""NAS-Lung's networks in the authors' layout, layer for layer as their ``ConvRes`` (fei-hdu/NAS-Lung)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch.nn as nn
from monai.networks.blocks import Convolution

from naslung.networks.blocks.reference_cbam import ReferenceCBAMBlock
from naslung.networks.blocks.reference_residual import ReferenceResidualBlock
from naslung.networks.spec import PAPER_MODEL_1, ArchSpec
from naslung.networks.staged_network import STAGE_NAMES, StagedCBAMNetwork

__all__ = ["REFERENCE_ATTENTION_OPTIONS", "STAGES", "ReferenceConvRes3D"]

REFERENCE_ATTENTION_OPTIONS = ("channel_first", "none")
"""``attention`` values of the reference layout: the authors' CBAM (:class:`ReferenceCBAMBlock`, channel gate
first) or none. The authors' layer has no spatial-first order: its output ``M_S * x + x`` is defined by the order."""

STAGES = STAGE_NAMES[2:]
"""Attribute names of the residual stages 3-5 (``stage1`` is Conv1, ``stage2`` Conv2 and CBAM)."""


class ReferenceConvRes3D(StagedCBAMNetwork):
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
        super().__init__(spatial_dims, in_channels, num_classes, arch, attention, head, REFERENCE_ATTENTION_OPTIONS)

        def unit(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> Convolution:
            return Convolution(spatial_dims, c_in, c_out, strides=stride, kernel_size=3, act=act, norm=norm, bias=bias)

        def downsample(channels: int) -> OrderedDict[str, nn.Module]:
            return OrderedDict(downsample=unit(channels, channels, 2, bias=False))

        def residual_block(index: int, c_in: int, c_out: int, kernel: int) -> ReferenceResidualBlock:
            return ReferenceResidualBlock(spatial_dims, c_in, c_out, kernel_size=kernel, act=act, norm=norm)

        def cbam(channels: int) -> ReferenceCBAMBlock:
            return ReferenceCBAMBlock(
                spatial_dims, channels, reduction=cbam_reduction, spatial_kernel_size=spatial_kernel_size,
                record_spatial_map=record_attention,
            )  # fmt: skip

        self._build_stages(unit, residual_block, cbam, margin, stage_opening=downsample)
