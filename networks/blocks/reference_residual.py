"""The residual block of the NAS-Lung authors' code: conv+BN+ReLU units with biases and a 1x1 projection."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

from naslung.networks.errors import ConfigError

__all__ = ["ReferenceResidualBlock"]


class ReferenceResidualBlock(nn.Module):
    """Residual block of the NAS-Lung authors' code (``ResidualBlock`` of fei-hdu/NAS-Lung, ``models/cnn_res.py``).

    ``out = act(norm(conv2(act(norm(conv1(x)))))) + act(norm(shortcut(x)))``: both main units and the shortcut are
    conv + BN + ReLU, every convolution has a bias, the shortcut is a 1x1 convolution in every block (also when
    the shapes agree), the stride is always 1 and no activation follows the sum. Compare
    :class:`~naslung.networks.blocks.ResidualBlock` (He et al.'s basic block, Fig. 2 of the paper). Parameters:
    ``(C_in + C_out) * C_out * k^d + C_in * C_out + 3 * C_out`` convolution weights and biases plus ``6 * C_out``
    batch-norm weights.

    Args:
        spatial_dims: number of spatial dimensions d (3 for CT cubes).
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        kernel_size: kernel k of the two main convolutions (the authors' 3), odd; the shortcut stays 1x1.
        act: activation, a name or ``(name, kwargs)``.
        norm: normalisation, a name or ``(name, kwargs)``.

    Shapes:
        input ``x``: (B, C_in, *spatial); output: (B, C_out, *spatial).

    Raises:
        ConfigError: for non-positive channels or a non-positive or even kernel.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, kernel_size) < 1 or kernel_size % 2 == 0:
            raise ConfigError(
                f"ReferenceResidualBlock: channels must be positive and kernel_size odd and positive, got "
                f"in_channels={in_channels}, out_channels={out_channels}, kernel_size={kernel_size}."
            )

        def unit(c_in: int, k: int) -> Convolution:
            return Convolution(spatial_dims, c_in, out_channels, kernel_size=k, act=act, norm=norm, bias=True)

        self.conv1 = unit(in_channels, kernel_size)
        self.conv2 = unit(out_channels, kernel_size)
        self.shortcut = unit(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` (B, C_in, *spatial)."""
        return self.conv2(self.conv1(x)) + self.shortcut(x)
