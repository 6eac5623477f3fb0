"""Mixed-convolution residual networks (MC3-18) of Tran et al. 2018, built from MONAI convolution blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from monai.networks.layers.utils import get_act_layer

from naslung.networks.errors import ConfigError
from naslung.networks.heads import HEADS, classification_head
from naslung.networks.initialisation import init_resnet_weights_

__all__ = ["MixedConvBlock", "MC3", "mc3_18"]


def _axes(value_in_plane: int, value_on_slice: int, slice_axis: int) -> tuple[int, int, int]:
    """A 3-tuple with ``value_on_slice`` at ``slice_axis`` and ``value_in_plane`` elsewhere."""
    return tuple(value_on_slice if axis == slice_axis else value_in_plane for axis in range(3))  # type: ignore[return-value]


class MixedConvBlock(nn.Module):
    """The basic residual block of an MC network: two 3D (3x3x3) or two 2D-in-3D (1x3x3) convolutions.

    ``out = act(norm(conv2(act(norm(conv1(x))))) + shortcut(x))`` as in He et al.'s basic block. In a 2D block the
    kernel is 1 along ``slice_axis`` and so is the stride, so each slice is convolved and downsampled on its own
    (Tran et al. 2018, Sec. 3.2 "Conv3DNoTemporal"); the shortcut is a 1x1x1 convolution with the same stride and a
    norm when the shape changes, else the identity.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: in-plane stride of the first convolution (and along ``slice_axis`` too in a 3D block).
        full_3d: 3x3x3 convolutions (True) or 2D in-plane ones (False).
        slice_axis: the spatial axis (0, 1 or 2) a 2D block does not convolve along.
        act: activation, a name or ``(name, kwargs)``.
        norm: normalisation, a name or ``(name, kwargs)``.

    Shapes:
        input ``x``: (B, in_channels, D0, D1, D2); output: (B, out_channels, ...) with the in-plane sizes divided by
        ``stride`` (rounded up), and the ``slice_axis`` size too in a 3D block.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        full_3d: bool = True,
        slice_axis: int = 0,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        kernel = _axes(3, 3 if full_3d else 1, slice_axis)
        strides = _axes(stride, stride if full_3d else 1, slice_axis)
        self.conv1 = Convolution(
            3, in_channels, out_channels, strides=strides, kernel_size=kernel, act=act, norm=norm, bias=False
        )
        self.conv2 = Convolution(3, out_channels, out_channels, kernel_size=kernel, act=None, norm=norm, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            self.shortcut = Convolution(
                3, in_channels, out_channels, strides=strides, kernel_size=1, act=None, norm=norm, bias=False
            )
        self.act = get_act_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` (B, in_channels, D0, D1, D2)."""
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class MC3(nn.Module):
    """Mixed-convolution ResNet "MCx" (Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions for Action
    Recognition", Sec. 3.2, Fig. 1c), the CovidNet3D baseline MC3_18, for 3D CT cubes.

    The video network's temporal axis is the CT cube's ``slice_axis``; naslung's cubes are (X, Y, Z), so the default
    ``slice_axis=2`` makes the 2D convolutions axial (each z slice is a "frame"). Layout (torchvision's ``mc3_18``
    with ``layers=(2, 2, 2, 2)``, ``layers_3d=1``) and shapes for a 32^3 cube, (X, Y, Z):

    ==============  ==========================================================  ===================
    module          layers                                                      output
    ==============  ==========================================================  ===================
    stem            7x7 in-plane, 3 along z, stride 2 in-plane; BN, ReLU        (B, 64, 16, 16, 32)
    stages.layer1   2 basic blocks, 3x3x3 convolutions ("mixed": 3D first)      (B, 64, 16, 16, 32)
    stages.layer2   2 basic blocks, 3x3x1 (2D) convolutions, stride 2 in-plane  (B, 128, 8, 8, 32)
    stages.layer3   same, 256 channels                                          (B, 256, 4, 4, 32)
    stages.layer4   same, 512 channels                                          (B, 512, 2, 2, 32)
    pool, head      global average pooling (``features``), then the head        (B, 512), (B, K)
    ==============  ==========================================================  ===================

    As in the video network, the slice axis is never downsampled (the 2D layers stride in-plane only). Grad-CAM
    (:func:`naslung.pipeline.analysis.features.default_gradcam_layer`) looks at ``stages``, the last layer's output.

    Parameter count: torchvision's ``mc3_18`` (3-channel clips, 400 Kinetics classes) has 11,695,440 parameters
    (11,490,240 without its 400-way fc: the "11.49 M" often quoted). With ``in_channels=1`` the stem loses
    2 x 64 x 147 = 18,816 weights and a 2-class fc has 1,026 instead of 205,200, so ``mc3_18()`` here has
    **11,472,450** (11,472,448 with the bias-free angular head); ``MC3(in_channels=3, num_classes=400)`` matches
    torchvision's 11,695,440 exactly, which the tests check.

    Args:
        spatial_dims: must be 3 (the network mixes 3D and in-plane convolutions of a volume).
        in_channels: input channels (1 for a CT cube).
        num_classes: K, the number of classes (2: benign, malignant).
        layers: basic blocks per residual layer (ResNet-18: ``(2, 2, 2, 2)``).
        block_inplanes: channels of the residual layers (before ``widen_factor``).
        layers_3d: how many residual layers, from the first, use 3x3x3 convolutions; the rest are 2D. MCx of the
            paper has ``layers_3d = x - 2`` (MC3: 1; ``layers_3d=len(layers)`` is R3D, 0 is R2D on each slice).
        widen_factor: scales ``block_inplanes`` (as MONAI's ``ResNet``), e.g. 0.25 for a small test network.
        slice_axis: spatial axis (0, 1 or 2) that plays the video's time: the 2D layers do not convolve along it.
        head: ``"linear"`` (default) or ``"angular"`` (:class:`AngularLinear`, for A-Softmax training).
        margin: A-Softmax margin m in {1, 2, 3, 4}, used by the angular head.
        act: activation, a name or ``(name, kwargs)``.
        norm: normalisation, a name or ``(name, kwargs)``.

    Shapes:
        input: (B, in_channels, D0, D1, D2); output: (B, num_classes) logits in eval mode ((B, 2, K) in training
        mode with the angular head, see :class:`AngularLinear`).

    Raises:
        ConfigError: for an invalid option.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        layers: Sequence[int] = (2, 2, 2, 2),
        block_inplanes: Sequence[int] = (64, 128, 256, 512),
        layers_3d: int = 1,
        widen_factor: float = 1.0,
        slice_axis: int = 2,
        head: str = "linear",
        margin: int = 4,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ConfigError(f"MC3: spatial_dims must be 3 (it mixes 3D and 2D convolutions), got {spatial_dims!r}.")
        if slice_axis not in (0, 1, 2):
            raise ConfigError(f"MC3: slice_axis must be 0, 1 or 2 (a spatial axis), got {slice_axis!r}.")
        if len(layers) != len(block_inplanes) or not layers or min(layers) < 1:
            raise ConfigError(
                f"MC3: layers {tuple(layers)} and block_inplanes {tuple(block_inplanes)} need the same positive length "
                "and at least one block per layer."
            )
        if not 0 <= layers_3d <= len(layers):
            raise ConfigError(f"MC3: layers_3d must be in 0..{len(layers)}, got {layers_3d!r}.")
        widths = [int(c * widen_factor) for c in block_inplanes]
        if in_channels < 1 or num_classes < 1 or min(widths) < 1:
            raise ConfigError(
                f"MC3: in_channels, num_classes and the widened channels {widths} must be positive "
                f"(in_channels={in_channels}, num_classes={num_classes}, widen_factor={widen_factor})."
            )
        if head not in HEADS:
            raise ConfigError(f"MC3: head {head!r} is not supported; use one of {HEADS}.")
        self.head_type = head
        self.slice_axis = slice_axis
        self.stem = Convolution(
            3, in_channels, widths[0], strides=_axes(2, 1, slice_axis), kernel_size=_axes(7, 3, slice_axis),
            act=act, norm=norm, bias=False,
        )  # fmt: skip
        channels = widths[0]
        self.stages = nn.Sequential()
        for index, (blocks, width) in enumerate(zip(layers, widths, strict=True)):
            stage = nn.Sequential()
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                stage.add_module(
                    str(block),
                    MixedConvBlock(channels, width, stride, index < layers_3d, slice_axis, act=act, norm=norm),
                )
                channels = width
            self.stages.add_module(f"layer{index + 1}", stage)
        self.pool = Pool[Pool.ADAPTIVEAVG, 3](1)
        self.head = classification_head(self.head_type, channels, num_classes, margin)
        self.feature_channels = channels
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation for convolutions, unit/zero norms, N(0, 0.01) linear weights (torchvision's video nets)."""
        init_resnet_weights_(self, 3)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.constant_(module.bias, 0.0)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: the globally pooled output of the last layer, (B, C) for ``x`` (B, C_in, ...)."""
        return torch.flatten(self.pool(self.stages(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify ``x`` (B, in_channels, D0, D1, D2): (B, num_classes) logits in eval mode."""
        return self.head(self.features(x))


def mc3_18(spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2, **kwargs: Any) -> MC3:
    """MC3-18: ResNet-18's layout with 3D convolutions in the stem and ``layer1``, 2D ones after (see :class:`MC3`)."""
    kwargs = {"layers": (2, 2, 2, 2), "layers_3d": 1, **kwargs}
    return MC3(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, **kwargs)
