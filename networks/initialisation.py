"""Weight initialisation shared by the project's networks (NAS-Lung candidates, the DNAS supernet, MC3-18)."""

from __future__ import annotations

import torch.nn as nn
from monai.networks.layers.factories import Conv, Norm

from naslung.networks.blocks.cbam import ChannelAttention, SpatialAttention

__all__ = ["init_resnet_weights_"]


def init_resnet_weights_(network: nn.Module, spatial_dims: int = 3) -> nn.Module:
    """Initialise ``network`` in place as MONAI's ResNet does, and start every CBAM map at 0.5.

    Convolutions get He initialisation (``fan_out``, ReLU), batch norms weight 1 and bias 0; then the CBAM gates'
    last layers are zeroed again (:meth:`ChannelAttention.reset_parameters`), since He-initialised gates start
    saturated and shrink Model-1's features about ten-fold, which stalls A-Softmax at the paper's lr 2e-4.

    Args:
        network: the module to initialise.
        spatial_dims: 2 or 3, the dimensionality of its convolutions and norms.

    Returns:
        ``network``.
    """
    conv_type, norm_type = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
    for module in network.modules():
        if isinstance(module, conv_type):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, norm_type):
            nn.init.constant_(module.weight, 1.0)
            nn.init.constant_(module.bias, 0.0)
    for module in network.modules():
        if isinstance(module, (ChannelAttention, SpatialAttention)):
            module.reset_parameters()
    return network
