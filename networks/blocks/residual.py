"""The residual block of NAS-Lung's stages 3-5: two conv+norm+act units and an identity or projection shortcut."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_act_layer

from naslung.networks.errors import ConfigError

__all__ = ["ResidualBlock"]


class ResidualBlock(nn.Module):
    """Residual block of Jiang et al. 2021 (Sec. 3.1, Fig. 2), after He et al.'s basic block.

    ``out = act(norm(conv2(act(norm(conv1(x))))) + shortcut(x))``. Every convolution is followed by batch
    normalisation and ReLU as the paper says; the second ReLU is applied after the shortcut is added, as in He et
    al. 2016. The shortcut is the identity when input and output have the same channels and stride 1, otherwise
    "an additional 3D convolutional layer" (Fig. 2, right): a 1x1 convolution with the block's stride, and a norm.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution and of the projection shortcut; 2 halves every spatial size.
        kernel_size: kernel of the two main convolutions.
        act: activation, a name or ``(name, kwargs)``.
        norm: normalisation, a name or ``(name, kwargs)``.

    Shapes:
        input ``x``: (B, in_channels, *spatial); output: (B, out_channels, *ceil(spatial / stride)).

    Raises:
        ConfigError: for non-positive channels or stride.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, stride, kernel_size) < 1:
            raise ConfigError(
                f"ResidualBlock: channels, stride and kernel_size must be positive, got in_channels={in_channels}, "
                f"out_channels={out_channels}, stride={stride}, kernel_size={kernel_size}."
            )
        self.conv1 = Convolution(
            spatial_dims, in_channels, out_channels, strides=stride, kernel_size=kernel_size, act=act, norm=norm,
            bias=False,
        )  # fmt: skip
        self.conv2 = Convolution(
            spatial_dims, out_channels, out_channels, kernel_size=kernel_size, act=None, norm=norm, bias=False
        )
        self.shortcut: nn.Module
        if in_channels != out_channels or stride != 1:
            self.shortcut = Convolution(
                spatial_dims, in_channels, out_channels, strides=stride, kernel_size=1, act=None, norm=norm, bias=False
            )
        else:
            self.shortcut = nn.Identity()
        self.act = get_act_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` (B, in_channels, *spatial)."""
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))
