"""The skeleton both layouts share (StagedCBAMNetwork): argument checks, stage names, attention maps per stage."""

from __future__ import annotations

import pytest
import torch

from naslung.networks import STAGE_NAMES, CBAMResNet3D, ReferenceConvRes3D
from naslung.networks.errors import ConfigError
from naslung.networks.reference_convres import STAGES

MODEL_1 = "[4,4,[4,4],[4,8],[8,8]]"

LAYOUT_ATTENTION = [  # layout class, attention order
    [CBAMResNet3D, "channel_first"],
    [CBAMResNet3D, "spatial_first"],
    [ReferenceConvRes3D, "channel_first"],
]


@pytest.mark.parametrize("network_type, attention", LAYOUT_ATTENTION)
def test_attention_maps_of_each_stage(network_type, attention):
    net = network_type(arch=MODEL_1, attention=attention).eval()
    assert net.attention_maps() == {}
    with torch.no_grad():
        net(torch.rand((2, 1, 32, 32, 32), generator=torch.Generator().manual_seed(5)))
    maps = net.attention_maps()
    assert {name: tuple(m.shape) for name, m in maps.items()} == {
        "stage2": (2, 1, 32, 32, 32),
        "stage3": (2, 1, 16, 16, 16),
        "stage4": (2, 1, 8, 8, 8),
        "stage5": (2, 1, 4, 4, 4),
    }
    assert all(0 < float(m.min()) and float(m.max()) < 1 for m in maps.values())
    assert network_type(arch=MODEL_1, attention="none").attention_maps() == {}


@pytest.mark.parametrize("network_type", [CBAMResNet3D, ReferenceConvRes3D])
@pytest.mark.parametrize(
    "kwargs, message",
    [
        [{"spatial_dims": 4}, "spatial_dims must be 1, 2 or 3, got 4"],
        [{"in_channels": 0}, "in_channels and num_classes must be positive, got 0, 2"],
        [{"num_classes": 0}, "in_channels and num_classes must be positive, got 1, 0"],
        [{"attention": "both"}, "attention 'both' is not supported in the (naslung|reference) layout"],
        [{"head": "cosine"}, "head 'cosine' is not supported in the (naslung|reference) layout"],
    ],
)
def test_invalid_sizes_and_options_name_the_layout(network_type, kwargs, message):
    with pytest.raises(ConfigError, match=f"^{network_type.__name__}: {message}"):
        network_type(**kwargs)


def test_both_layouts_name_their_stages_alike():
    assert STAGES == STAGE_NAMES[2:] == ("stage3", "stage4", "stage5")
    for network_type in (CBAMResNet3D, ReferenceConvRes3D):
        children = [name for name, _ in network_type(arch=MODEL_1).named_children()]
        assert children == [*STAGE_NAMES, "pool", "head"]
