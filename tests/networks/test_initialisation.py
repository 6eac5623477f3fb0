"""The shared weight initialisation and classification heads of the project's networks."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from naslung.networks import (
    AngularLinear,
    CBAMResNet3D,
    CBAMSupernet3D,
    ChannelAttention,
    SpatialAttention,
    build_network,
    classification_head,
    init_resnet_weights_,
)
from naslung.pipeline.errors import ConfigError


def _gates(network: nn.Module) -> list[nn.Module]:
    return [m for m in network.modules() if isinstance(m, (ChannelAttention, SpatialAttention))]


@pytest.mark.parametrize(
    "build",
    [
        lambda: CBAMResNet3D(arch="[4,4,[4],[4,8],[8]]"),
        lambda: CBAMSupernet3D(widths=(4, 8), max_blocks=(2, 2, 2), min_blocks=(1, 1, 1)),
    ],
    ids=["cbam_resnet3d", "supernet"],
)
def test_every_cbam_gate_starts_at_one_half(build):
    torch.manual_seed(0)
    network = build().eval()
    gates = _gates(network)
    assert gates, "the network should hold CBAM gates"
    for gate in gates:
        channels = gate.mlp[0].in_channels if isinstance(gate, ChannelAttention) else 3
        maps = gate(torch.randn(2, channels, 6, 6, 6))
        assert torch.allclose(maps, torch.full_like(maps, 0.5))


def test_init_resnet_weights_reinitialises_convs_norms_and_gates():
    network = CBAMResNet3D(arch="[4,4,[4],[4],[4]]")
    for parameter in network.parameters():
        nn.init.constant_(parameter, 0.3)
    init_resnet_weights_(network, 3)
    norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm3d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    in_gates = {id(m) for gate in _gates(network) for m in gate.modules()}
    convs = [m for m in network.modules() if isinstance(m, nn.Conv3d) and id(m) not in in_gates]
    assert convs and all(m.weight.std() > 0 for m in convs)  # He-initialised, no longer the constant
    for gate in _gates(network):
        last = gate.mlp[-1] if isinstance(gate, ChannelAttention) else gate.conv
        assert torch.all(last.weight == 0)


def test_classification_head():
    assert isinstance(classification_head("linear", 8, 2), nn.Linear)
    angular = classification_head("angular", 8, 2, margin=2)
    assert isinstance(angular, AngularLinear) and angular.margin == 2
    with pytest.raises(ConfigError, match="head 'cosine' is not supported"):
        classification_head("cosine", 8, 2)


@pytest.mark.parametrize("name", ["resnet18", "mc3_18"])
def test_baselines_take_every_head(name):
    linear = build_network(name, head="linear")
    angular = build_network(name, head="angular")
    assert not any(isinstance(m, AngularLinear) for m in linear.modules())
    assert sum(isinstance(m, AngularLinear) for m in angular.modules()) == 1
    with pytest.raises(ConfigError, match="not supported"):
        build_network(name, head="cosine")
