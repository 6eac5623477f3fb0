"""CBAM block: shapes in 2D and 3D, both orders, the formulas of eq. (1)-(3), the recorded map, maps of 0.5 at init."""

from __future__ import annotations

import pytest
import torch

from naslung.networks import CBAMResNet3D
from naslung.networks.blocks import CBAMBlock, ChannelAttention, SpatialAttention
from naslung.pipeline.errors import ConfigError


def _randomised(block: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraw every parameter (the gates start at exactly 0.5, which would hide the formulas' terms)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return block


TEST_CASES = [
    [{"spatial_dims": 3, "in_channels": 8}, (2, 8, 6, 5, 4)],
    [{"spatial_dims": 3, "in_channels": 4, "order": "spatial_first"}, (1, 4, 8, 8, 8)],
    [{"spatial_dims": 2, "in_channels": 4, "reduction": 2, "spatial_kernel_size": 7}, (3, 4, 9, 9)],
    [{"spatial_dims": 2, "in_channels": 1, "order": "spatial_first"}, (2, 1, 5, 5)],
]


@pytest.mark.parametrize("kwargs, shape", TEST_CASES)
def test_shape_and_recorded_map(kwargs, shape):
    block = CBAMBlock(**kwargs).eval()
    x = torch.randn(shape)
    out = block(x)
    assert out.shape == x.shape
    assert block.spatial_map is not None
    assert block.spatial_map.shape == (shape[0], 1, *shape[2:])
    assert float(block.spatial_map.min()) > 0 and float(block.spatial_map.max()) < 1
    assert not block.spatial_map.requires_grad


def test_channel_first_matches_eq_1_to_3():
    block = _randomised(CBAMBlock(3, 6, reduction=2)).eval()
    x = torch.randn(2, 6, 4, 5, 3)
    mlp = block.channel_attention.mlp
    avg = x.mean(dim=(2, 3, 4), keepdim=True)
    mx = x.amax(dim=(2, 3, 4), keepdim=True)
    m_c = torch.sigmoid(mlp(avg) + mlp(mx))  # eq. (2)
    f1 = m_c * x
    pooled = torch.cat([f1.mean(1, keepdim=True), f1.amax(1, keepdim=True)], dim=1)
    m_s = torch.sigmoid(block.spatial_attention.conv(pooled))  # eq. (3)
    expected = m_s * f1  # eq. (1)
    torch.testing.assert_close(block(x), expected)
    torch.testing.assert_close(block.spatial_map, m_s)


def test_orders_differ_and_spatial_first_matches_its_definition():
    torch.manual_seed(1)
    channel_first = _randomised(CBAMBlock(3, 4, order="channel_first")).eval()
    spatial_first = CBAMBlock(3, 4, order="spatial_first").eval()
    spatial_first.load_state_dict(channel_first.state_dict())
    x = torch.randn(2, 4, 5, 5, 5)
    m_s = spatial_first.spatial_attention(x)
    f1 = m_s * x
    expected = spatial_first.channel_attention(f1) * f1
    torch.testing.assert_close(spatial_first(x), expected)
    assert not torch.allclose(channel_first(x), spatial_first(x))


def test_no_recording_when_disabled():
    block = CBAMBlock(2, 4, record_spatial_map=False)
    block(torch.randn(1, 4, 6, 6))
    assert block.spatial_map is None


def test_attention_parts_shapes():
    x = torch.randn(2, 8, 4, 4, 4)
    assert ChannelAttention(3, 8, reduction=16)(x).shape == (2, 8, 1, 1, 1)  # hidden width clamps to 1
    assert SpatialAttention(3, kernel_size=5)(x).shape == (2, 1, 4, 4, 4)


@pytest.mark.parametrize(
    "kwargs",
    [{"order": "sideways"}, {"spatial_kernel_size": 4}, {"reduction": 0}],
)
def test_invalid_options(kwargs):
    with pytest.raises(ConfigError):
        CBAMBlock(3, 4, **kwargs)


def test_scriptable_and_records_under_torchscript():
    block = _randomised(CBAMBlock(3, 4)).eval()
    scripted = torch.jit.script(block)
    x = torch.randn(1, 4, 4, 4, 4)
    torch.testing.assert_close(scripted(x), block(x))
    torch.testing.assert_close(scripted.spatial_map, block.spatial_map)


@pytest.mark.parametrize("order", ["channel_first", "spatial_first"])
def test_maps_start_at_one_half(order):
    block = CBAMBlock(3, 8, order=order)
    x = 3 * torch.randn(2, 8, 6, 6, 6)
    torch.testing.assert_close(block.channel_attention(x), torch.full((2, 8, 1, 1, 1), 0.5))
    torch.testing.assert_close(block.spatial_attention(x), torch.full((2, 1, 6, 6, 6), 0.5))
    torch.testing.assert_close(block(x), 0.25 * x)
    block(x).sum().backward()  # and both maps can learn from there
    assert block.spatial_attention.conv.weight.grad.abs().sum() > 0
    assert block.channel_attention.mlp[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["[4,4,[4,4],[4,8],[8,8]]", "[4,4,[16,32],[64,64],[128,128]]"])
def test_network_activations_keep_their_scale_at_init(arch):
    """In a network every CBAM scales by 0.25 at init (He-initialised gates scaled stage 5 of Model-1 by ~0.04)."""
    torch.manual_seed(0)
    net = CBAMResNet3D(arch=arch, head="angular").train()
    scales = {}

    def record(name):
        def hook(module, inputs, output):
            scales[name] = (float(inputs[0].pow(2).mean().sqrt()), float(output.pow(2).mean().sqrt()))

        return hook

    for name in ("stage2", "stage3", "stage4", "stage5"):
        getattr(net, name).cbam.register_forward_hook(record(name))
    x = torch.rand(4, 1, 32, 32, 32)
    features = net.features(x)
    assert len(scales) == 4
    for name, (before, after) in scales.items():
        assert before > 0.3, name  # batch norm + ReLU keep each stage's input near unit scale
        assert after == pytest.approx(0.25 * before, rel=1e-4), name
    assert float(features.norm(dim=1).min()) > 0.1
