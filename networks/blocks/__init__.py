"""Building blocks of naslung's networks (MONAI-style, ``spatial_dims`` aware)."""

from __future__ import annotations

from .cbam import CBAM_ORDERS, CBAMBlock, ChannelAttention, SpatialAttention
from .narrow_channels import ChannelsLastBatchNorm3d, ChannelsLastCBAMBlock, use_narrow_channel_kernels
from .reference_cbam import ReferenceCBAMBlock
from .reference_residual import ReferenceResidualBlock
from .residual import ResidualBlock

__all__ = [
    "CBAM_ORDERS",
    "CBAMBlock",
    "ChannelAttention",
    "SpatialAttention",
    "ResidualBlock",
    "ChannelsLastBatchNorm3d",
    "ChannelsLastCBAMBlock",
    "use_narrow_channel_kernels",
    "ReferenceCBAMBlock",
    "ReferenceResidualBlock",
]
