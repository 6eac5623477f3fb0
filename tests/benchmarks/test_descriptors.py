"""``benchmarks/experiments/descriptors.py``: fixed radiomic descriptors of a centred cube (session 20's question D)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def descriptors(load_benchmark):
    return load_benchmark("experiments/descriptors")


def test_shapes_and_symmetry(descriptors):
    describe = descriptors.CubeDescriptors()
    x = torch.rand(3, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    out = describe(x)
    assert out.shape == (3, describe.n_features) == (3, 57)
    # the cube's 48 symmetries about its centre leave every descriptor unchanged
    moved = x.flip(2).rot90(1, (3, 4)).transpose(2, 4)
    assert torch.allclose(describe(moved), out, atol=1e-5)
    # a shifted cube does not
    assert not torch.allclose(describe(x.roll(3, 2)), out, atol=1e-3)


def test_values_of_a_ball(descriptors):
    """A solid ball of radius 4.5 mm (0 HU) in lung (-850 HU): shell means, zero spread inside, the edge's gradient
    in the shell that holds the boundary, and the shares above each threshold in each ball."""
    describe = descriptors.CubeDescriptors()
    axis = torch.arange(32.0) - 15.5
    r = (axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2).sqrt()
    unit = lambda hu: (hu + 1200.0) / 1800.0  # noqa: E731
    cube = torch.where(r < 4.5, unit(0.0), unit(-850.0))[None, None]
    out = describe(cube)[0]
    mean, std, grad, fractions = out[:16], out[16:32], out[32:48], out[48:].reshape(3, 3)
    assert mean[:4] == pytest.approx([unit(0.0)] * 4, abs=1e-5)
    assert mean[5:] == pytest.approx([unit(-850.0)] * 11, abs=1e-5)
    # E[x²] - E[x]² in float32: a zero spread reads as up to ~1e-3
    assert std[:4].max() < 5e-3 and std[6:].max() < 5e-3 and std[4] > 0.05
    assert int(grad.argmax()) in (3, 4, 5) and grad[:2].max() < 1e-6 and grad[8:].max() < 1e-6
    # ball radius 3 lies inside the nodule: all above -650 and -300 HU, none above 250 HU
    assert fractions[0].tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert 0.0 < fractions[2, 0] < fractions[1, 0] < 1.0
