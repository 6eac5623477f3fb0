"""Residual block: output shapes, identity versus projection shortcut, the residual sum."""

from __future__ import annotations

import pytest
import torch

from naslung.networks.blocks import ResidualBlock
from naslung.pipeline.errors import ConfigError

TEST_CASES = [
    [{"spatial_dims": 3, "in_channels": 4, "out_channels": 4}, (2, 4, 8, 8, 8), (2, 4, 8, 8, 8), False],
    [{"spatial_dims": 3, "in_channels": 4, "out_channels": 8}, (1, 4, 6, 6, 6), (1, 8, 6, 6, 6), True],
    [{"spatial_dims": 3, "in_channels": 4, "out_channels": 4, "stride": 2}, (1, 4, 8, 8, 8), (1, 4, 4, 4, 4), True],
    [{"spatial_dims": 3, "in_channels": 8, "out_channels": 16, "stride": 2}, (1, 8, 5, 5, 5), (1, 16, 3, 3, 3), True],
    [{"spatial_dims": 2, "in_channels": 3, "out_channels": 5, "stride": 2}, (2, 3, 9, 8), (2, 5, 5, 4), True],
]


@pytest.mark.parametrize("kwargs, in_shape, out_shape, projection", TEST_CASES)
def test_shapes_and_shortcut(kwargs, in_shape, out_shape, projection):
    block = ResidualBlock(**kwargs).eval()
    with torch.no_grad():
        out = block(torch.randn(in_shape))
    assert out.shape == out_shape
    assert float(out.min()) >= 0  # ReLU after the sum
    assert isinstance(block.shortcut, torch.nn.Identity) != projection


def test_identity_block_adds_its_input():
    block = ResidualBlock(3, 4, 4).eval()
    with torch.no_grad():
        for p in block.conv2.parameters():
            p.zero_()  # the main path's last BN now outputs 0: out = relu(0 + x)
    x = torch.randn(1, 4, 4, 4, 4)
    torch.testing.assert_close(block(x), torch.relu(x))


INVALID_CASES = [{"in_channels": 0, "out_channels": 4}, {"in_channels": 4, "out_channels": 4, "stride": 0}]


@pytest.mark.parametrize("kwargs", INVALID_CASES)
def test_invalid_sizes(kwargs):
    with pytest.raises(ConfigError):
        ResidualBlock(3, **kwargs)
