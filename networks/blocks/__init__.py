"""Building blocks of naslung's networks (MONAI-style, ``spatial_dims`` aware)."""

from __future__ import annotations

from .cbam import CBAM_ORDERS, CBAMBlock, ChannelAttention, SpatialAttention
from .residual import ResidualBlock

__all__ = ["CBAM_ORDERS", "CBAMBlock", "ChannelAttention", "SpatialAttention", "ResidualBlock"]
