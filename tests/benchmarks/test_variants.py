"""``benchmarks/experiments/variants.py``: the variants ``recipe.py`` tries wrap a network and keep its stages."""

from __future__ import annotations

import pytest
import torch

from naslung.networks import build_network

MODEL_1 = "[4,4,[4,4],[4,8],[8,8]]"


@pytest.fixture
def variants(load_benchmark, benchmarks_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(benchmarks_dir / "experiments"))  # variants imports descriptors by name
    return load_benchmark("experiments/variants")


@pytest.mark.parametrize("name", ["WithShells", "WithDescriptors", "WithMaxPool", "WithRadius"])
def test_each_variant_keeps_the_network_and_its_output_shape(variants, name):
    torch.manual_seed(0)
    in_channels = 2 if name == "WithRadius" else 1
    inner = build_network(MODEL_1, head="angular", in_channels=in_channels).eval()
    plain_out = inner(torch.rand(2, in_channels, 32, 32, 32))
    wrapped = (variants.WithShells(inner, 8) if name == "WithShells" else getattr(variants, name)(inner)).eval()
    out = wrapped(torch.rand(2, 1, 32, 32, 32))
    assert out.shape == plain_out.shape
    assert wrapped.inner is inner
    widths = {
        "WithShells": inner.feature_channels + inner.arch.stage2 * 8,
        "WithDescriptors": inner.feature_channels + 57,
        "WithMaxPool": 2 * inner.feature_channels,
        "WithRadius": inner.feature_channels,
    }
    assert wrapped.head.in_features == widths[name]


def test_centre_distance(variants):
    r = variants.centre_distance()
    assert r.shape == (32, 32, 32)
    assert r.min() == pytest.approx(3**0.5 / 2) and r[0, 0, 0] == pytest.approx((3 * 15.5**2) ** 0.5)
