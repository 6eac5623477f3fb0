"""A minimal re-statement of the NAS-Lung authors' ``ConvRes`` (fei-hdu/NAS-Lung), written for the tests from its
published description, in plain ``torch.nn``: the yardstick that naslung's reference layout and weight converter
are checked against. It shares no code with ``naslung.networks``.

What it encodes (the description in issue 15 and the authors' ``models/cnn_res.py``):

* ``conv1``, ``conv2``: ``Sequential(Conv3d 3^3 with bias, BatchNorm3d, ReLU)``, 1 -> 4 -> 4 channels (the
  authors fix both at 4), then ``first_cbam``;
* ``layers``: one flat ``Sequential``; per stage, a stride-2 3^3 ``Sequential(Conv3d without bias, BN, ReLU)``
  keeping the channels, the residual blocks, and the stage's CBAM layer;
* residual block: ``my_conv2(my_conv1(x)) + conv3(x)``, each a conv(+bias)/BN/ReLU unit, ``conv3`` 1x1, no ReLU
  after the sum;
* CBAM layer: ``ch_Linear1`` (C -> C // 4) and ``ch_Linear2`` (C // 4 -> C), no biases, no activation between, a
  softmax over channels of the summed average- and max-pooled paths; ``sp_Conv`` (2 -> 1, 3^3, no bias) on the
  channel-wise [max, mean] of the channel-weighted map, a sigmoid, then ``map * x + x`` with the layer's input x;
* ``AvgPool3d(4)`` then ``fc``: SphereFace's angular layer, weight (F, K), eval output ``||x|| cos(theta)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["AuthorsConvRes", "authors_random_state_dict", "stage_config"]


def stage_config(spec: list) -> list[list[int]]:
    """The authors' ``config``: the block channels of stages 3-5 of a spec ``[4, 4, [..], [..], [..]]``."""
    return [list(stage) for stage in spec[2:]]


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias), nn.BatchNorm3d(c_out), nn.ReLU()
    )


class _AuthorsCBAM(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ch_Linear1 = nn.Linear(channels, channels // 4, bias=False)
        self.ch_Linear2 = nn.Linear(channels // 4, channels, bias=False)
        self.sp_Conv = nn.Conv3d(2, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        flat = x.reshape(batch, channels, -1)
        mlp = lambda v: self.ch_Linear2(self.ch_Linear1(v))  # noqa: E731
        gate = torch.softmax(mlp(flat.mean(-1)) + mlp(flat.max(-1).values), dim=1)
        weighted = x * gate[:, :, None, None, None]
        descriptor = torch.stack([weighted.max(1).values, weighted.sum(1) / channels], dim=1)
        spatial = torch.sigmoid(self.sp_Conv(descriptor))
        return x + x * spatial


class _AuthorsBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.my_conv1 = _conv_bn_relu(c_in, c_out, 3)
        self.my_conv2 = _conv_bn_relu(c_out, c_out, 3)
        self.conv3 = _conv_bn_relu(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(x) + self.my_conv2(self.my_conv1(x))


class AuthorsConvRes(nn.Module):
    """The authors' network for ``config`` (block channels of stages 3-5); eval output: (B, 2) logits.

    ``forward`` returns the pair ``(||x|| cos(theta), ||x|| psi(theta))`` as the authors' angular layer does
    (margin 4); the first item is the logits.
    """

    def __init__(self, config: list[list[int]]) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(1, 4, 3)
        self.conv2 = _conv_bn_relu(4, 4, 3)
        self.first_cbam = _AuthorsCBAM(4)
        modules: list[nn.Module] = []
        channels = 4
        for stage in config:
            modules.append(_conv_bn_relu(channels, channels, 3, stride=2, bias=False))
            for width in stage:
                modules.append(_AuthorsBlock(channels, width))
                channels = width
            modules.append(_AuthorsCBAM(channels))
        self.layers = nn.Sequential(*modules)
        self.fc = nn.Module()
        self.fc.weight = nn.Parameter(torch.empty(channels, 2).uniform_(-1.0, 1.0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layers(self.first_cbam(self.conv2(self.conv1(x))))
        features = F.avg_pool3d(x, 4).flatten(1)
        norm = features.norm(dim=1, keepdim=True)
        weight = self.fc.weight
        cos_theta = (features @ weight / norm / weight.norm(dim=0, keepdim=True)).clamp(-1.0, 1.0)
        k = torch.floor(4 * torch.acos(cos_theta.detach()) / torch.pi)
        psi = (-1.0) ** k * (8 * cos_theta**4 - 8 * cos_theta**2 + 1) - 2 * k
        return cos_theta * norm, psi * norm


def authors_random_state_dict(config: list[list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of :class:`AuthorsConvRes` under the authors' key names, batch norms as after training."""
    torch.manual_seed(seed)
    network = AuthorsConvRes(config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm3d):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
                module.num_batches_tracked.fill_(7)
    return {key: value.clone() for key, value in network.state_dict().items()}
