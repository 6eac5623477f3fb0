"""Convolutional Block Attention Module (CBAM): channel attention, spatial attention and their composition."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer
from monai.utils import look_up_option

from naslung.networks.errors import ConfigError

__all__ = [
    "CBAM_ORDERS",
    "ChannelAttention",
    "SpatialAttention",
    "CBAMBlock",
    "SpatialMapRecorder",
    "spatial_gate_conv",
]

CBAM_ORDERS = ("channel_first", "spatial_first")
"""Orders of the two attention steps: Woo et al.'s (and the paper's final) channel-first, and Table 3's switch."""


def spatial_gate_conv(spatial_dims: int, kernel_size: int, where: str) -> nn.Module:
    """CBAM's spatial-gate convolution: 2 channel-pooled maps in, 1 map out, bias-free, size kept (``kernel_size``
    odd). Raises ConfigError naming ``where`` (caller and argument, e.g. ``"SpatialAttention: kernel_size"``)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"{where} must be odd and positive, got {kernel_size}.")
    return Conv[Conv.CONV, spatial_dims](2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=False)


class SpatialMapRecorder(nn.Module):
    """Base of the CBAM blocks: when ``record_spatial_map`` is true, each forward pass keeps its spatial attention map
    in :attr:`spatial_map` (detached, (B, 1, *spatial)) for the figures (Fig. 5); output unchanged, TorchScript too."""

    spatial_map: Optional[torch.Tensor]  # noqa: UP045
    # TorchScript types module attributes from evaluated annotations (postponed here); subclasses declare none.
    __annotations__["spatial_map"] = Optional[torch.Tensor]  # noqa: UP045

    def __init__(self, record_spatial_map: bool = True) -> None:
        super().__init__()
        self.record_spatial_map = record_spatial_map
        self.spatial_map = None

    def _record(self, spatial_map: torch.Tensor) -> None:
        """Keep ``spatial_map`` (B, 1, *spatial), detached, when recording is on."""
        if self.record_spatial_map:
            self.spatial_map = spatial_map.detach()


class ChannelAttention(nn.Module):
    """Channel attention map of CBAM (Woo et al. 2018; Jiang et al. 2021, Sec. 3.2, eq. 2).

    ``M_C(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))``, with one MLP (two fully connected layers with a
    ReLU between them, here 1x1 convolutions so the result keeps the singleton spatial axes) shared by the
    two global descriptors.

    The MLP's last layer starts at zero (:meth:`reset_parameters`), so the map starts at ``sigmoid(0) = 0.5`` for
    every channel: with the convolutions' He initialisation it would start saturated, scaling stage 5 of Model-1
    by about 0.04 and leaving A-Softmax's logits ``||x|| cos(theta)`` near zero at the paper's lr 2e-4.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: channels C of the feature map.
        reduction: hidden width of the MLP is ``max(1, C // reduction)``. NAS-Lung's networks are narrow
            (4-128 channels), so the default is 4 (as the authors' code) rather than CBAM's 16.
        act: activation between the two MLP layers, a name or ``(name, kwargs)``.

    Shapes:
        input ``x``: (B, C, *spatial); output: the attention weights, (B, C, 1, ..., 1), values in (0, 1).
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, reduction: int = 4, act: str | tuple = ("relu", {"inplace": True})
    ) -> None:
        super().__init__()
        if in_channels < 1 or reduction < 1:
            raise ConfigError(
                f"ChannelAttention: in_channels and reduction must be positive, got {in_channels} and {reduction}."
            )
        conv_type = Conv[Conv.CONV, spatial_dims]
        hidden = max(1, in_channels // reduction)
        self.avg_pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.max_pool = Pool[Pool.ADAPTIVEMAX, spatial_dims](1)
        self.mlp = nn.Sequential(
            conv_type(in_channels, hidden, kernel_size=1), get_act_layer(act), conv_type(hidden, in_channels, 1)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero the MLP's last layer so the attention map starts at 0.5 (the first layer keeps its init)."""
        last = self.mlp[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the channel attention weights of ``x`` (B, C, *spatial) as (B, C, 1, ..., 1)."""
        # One pass of the shared MLP over both descriptors, stacked along the batch axis.
        descriptors = torch.cat([self.avg_pool(x), self.max_pool(x)], dim=0)
        from_avg, from_max = self.mlp(descriptors).chunk(2, dim=0)
        return torch.sigmoid(from_avg + from_max)


class SpatialAttention(nn.Module):
    """Spatial attention map of CBAM (Woo et al. 2018; Jiang et al. 2021, Sec. 3.2, eq. 3).

    ``M_S(F) = sigmoid(Conv([AvgPool_c(F); MaxPool_c(F)]))``, the pooling taken across channels. The convolution
    starts at zero (:meth:`reset_parameters`), so the map starts at 0.5 everywhere, as :class:`ChannelAttention`'s.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        kernel_size: kernel of the convolution. The default 3 follows the authors' 3D code; CBAM's 2D default 7
            would cost 7^3 * 2 = 686 MACs per voxel, at 32^3 more than all of Table 5's Model-1.

    Shapes:
        input ``x``: (B, C, *spatial); output: the attention map, (B, 1, *spatial), values in (0, 1).
    """

    def __init__(self, spatial_dims: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = spatial_gate_conv(spatial_dims, kernel_size, "SpatialAttention: kernel_size")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero the convolution so the attention map starts at 0.5."""
        nn.init.zeros_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the spatial attention map of ``x`` (B, C, *spatial) as (B, 1, *spatial)."""
        pooled = torch.cat([torch.mean(x, dim=1, keepdim=True), torch.amax(x, dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class CBAMBlock(SpatialMapRecorder):
    """Convolutional Block Attention Module (Woo et al. 2018), as used in NAS-Lung (Jiang et al. 2021, eq. 1).

    Channel-first (default): ``F' = M_C(F) * F``, ``F'' = M_S(F') * F'``. Spatial-first (Table 3): the two steps
    swapped. The output has the shape of the input. Both maps start at 0.5 (see :class:`ChannelAttention`), so at
    initialisation the block scales its input by 0.25 and learns its attention from there.

    The last spatial attention map is kept in :attr:`spatial_map`, see :class:`SpatialMapRecorder`.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: channels C of the feature map.
        reduction: channel-MLP reduction, see :class:`ChannelAttention`.
        spatial_kernel_size: kernel of the spatial-attention convolution, see :class:`SpatialAttention`.
        order: ``"channel_first"`` or ``"spatial_first"``.
        act: activation inside the channel MLP.
        record_spatial_map: keep the last spatial attention map in :attr:`spatial_map`.

    Raises:
        ConfigError: for an unknown ``order`` or invalid sizes.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        reduction: int = 4,
        spatial_kernel_size: int = 3,
        order: str = "channel_first",
        act: str | tuple = ("relu", {"inplace": True}),
        record_spatial_map: bool = True,
    ) -> None:
        super().__init__(record_spatial_map)
        try:
            order = look_up_option(order, CBAM_ORDERS)
        except ValueError as err:
            raise ConfigError(
                f"CBAMBlock order {order!r} is not supported; use one of {CBAM_ORDERS}. ({err})"
            ) from None
        self.order = order
        self.channel_first = order == "channel_first"
        self.channel_attention = ChannelAttention(spatial_dims, in_channels, reduction=reduction, act=act)
        self.spatial_attention = SpatialAttention(spatial_dims, kernel_size=spatial_kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Refine ``x`` (B, C, *spatial) by channel and spatial attention; same shape out."""
        return self._refine(x)

    def _refine(self, x: torch.Tensor) -> torch.Tensor:
        """Both attention steps in the block's order; records the spatial map (subclasses change only the layout)."""
        if self.channel_first:
            x = x * self.channel_attention(x)
            spatial_map = self.spatial_attention(x)
            x = x * spatial_map
        else:
            spatial_map = self.spatial_attention(x)
            x = x * spatial_map
            x = x * self.channel_attention(x)
        self._record(spatial_map)
        return x
