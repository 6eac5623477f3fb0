"""Building blocks of naslung's networks (MONAI-style, ``spatial_dims`` aware)."""

from __future__ import annotations

from .cbam import CBAM_ORDERS, CBAMBlock, ChannelAttention, SpatialAttention
from .reference_cbam import ReferenceCBAMBlock
from .reference_residual import ReferenceResidualBlock
from .residual import ResidualBlock

__all__ = [
    "CBAM_ORDERS",
    "CBAMBlock",
    "ChannelAttention",
    "SpatialAttention",
    "ResidualBlock",
    "ReferenceCBAMBlock",
    "ReferenceResidualBlock",
]
