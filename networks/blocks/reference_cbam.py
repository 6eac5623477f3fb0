"""CBAM as the NAS-Lung authors' code computes it: a softmax channel gate and a residual spatial gate."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Pool

from naslung.networks.blocks.cbam import SpatialMapRecorder, spatial_gate_conv
from naslung.networks.errors import ConfigError

__all__ = ["ReferenceCBAMBlock"]


class ReferenceCBAMBlock(SpatialMapRecorder):
    """The attention layer of the NAS-Lung authors' code (``ResCBAMLayer`` of fei-hdu/NAS-Lung, ``models/cnn_res.py``).

    It differs from Woo et al.'s CBAM (:class:`~naslung.networks.blocks.CBAMBlock`) in three ways, which
    :class:`~naslung.networks.reference_convres.ReferenceConvRes3D` keeps so that the authors' weights load:

    * channel gate: ``M_C = softmax_C(MLP(AvgPool(x)) + MLP(MaxPool(x)))``, a softmax over the channels instead of a
      sigmoid; the shared MLP is two bias-free linear layers ``C -> C // 4 -> C`` with **no** activation between;
    * spatial gate: ``M_S = sigmoid(Conv([MaxPool_c(F'); AvgPool_c(F')]))`` on ``F' = M_C * x``, a bias-free 3^3
      convolution over the channel-wise max and mean, in that order;
    * output: ``M_S * x + x``. The spatial gate multiplies the block's *input* (not ``F'``) and the input is added
      back, so the channel gate acts only through the spatial map.

    The authors pool the channel descriptors with ``AvgPool3d(s)``/``MaxPool3d(s)`` of the feature size ``s`` that a
    32^3 cube gives each stage; here the pooling is global (adaptive), the same on a 32^3 cube and defined on other
    sizes. Parameters: ``2 * C * (C // 4) + 2 * 3^d``.

    Args:
        spatial_dims: number of spatial dimensions d (3 for CT cubes; 1 and 2 work too).
        in_channels: channels C of the feature map.
        reduction: hidden width of the channel MLP is ``C // reduction`` (the authors' 4). It may be 0 for
            ``C < reduction``, as in the authors' code: the channel gate is then uniform, ``1 / C``.
        spatial_kernel_size: kernel of the spatial gate's convolution (the authors' 3), odd.
        record_spatial_map: keep the last spatial map in :attr:`spatial_map`, see :class:`SpatialMapRecorder`.

    Shapes:
        input ``x``: (B, C, *spatial); output: same shape.

    Raises:
        ConfigError: for non-positive channels or reduction, or an even kernel.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        reduction: int = 4,
        spatial_kernel_size: int = 3,
        record_spatial_map: bool = True,
    ) -> None:
        super().__init__(record_spatial_map)
        if in_channels < 1 or reduction < 1:
            raise ConfigError(
                f"ReferenceCBAMBlock: in_channels and reduction must be positive, got {in_channels} and {reduction}."
            )
        hidden = in_channels // reduction
        self.in_channels = in_channels
        self.avg_pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.max_pool = Pool[Pool.ADAPTIVEMAX, spatial_dims](1)
        self.channel_mlp = nn.Sequential(
            nn.Linear(in_channels, hidden, bias=False), nn.Linear(hidden, in_channels, bias=False)
        )
        where = "ReferenceCBAMBlock: spatial_kernel_size"
        self.spatial_conv = spatial_gate_conv(spatial_dims, spatial_kernel_size, where)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax channel weights of ``x`` (B, C, *spatial), shaped (B, C, 1, ..., 1), summing to 1 over C."""
        # both descriptors through the MLP in one call, stacked on a leading axis (no batch-sized split, which an
        # ONNX trace would fix to the example's batch size)
        descriptors = torch.stack([self.avg_pool(x).flatten(1), self.max_pool(x).flatten(1)], dim=0)
        weights = torch.softmax(self.channel_mlp(descriptors).sum(dim=0), dim=1)
        return weights.reshape(weights.shape + (1,) * (x.ndim - 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Refine ``x`` (B, C, *spatial): ``sigmoid(conv([max_c, mean_c](M_C(x) * x))) * x + x``, same shape."""
        refined = self.channel_gate(x) * x
        pooled = torch.cat([torch.amax(refined, dim=1, keepdim=True), torch.mean(refined, dim=1, keepdim=True)], 1)
        spatial_map = torch.sigmoid(self.spatial_conv(pooled))
        self._record(spatial_map)
        return spatial_map * x + x
