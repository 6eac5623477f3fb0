"""The DNAS supernet: sampled and arg-max sub-networks, gradients to the architecture logits, derived specs that
build real networks, and the expected latency from the per-operation table."""

from __future__ import annotations

import pytest
import torch

from naslung.networks import CBAMResNet3D
from naslung.networks.supernet import CBAMSupernet3D, measure_latency_table
from naslung.pipeline.errors import ConfigError

TINY = {"widths": (4, 8), "kernel_sizes": (3, 5), "max_blocks": (2, 1, 2), "min_blocks": (1, 1, 1)}


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    return CBAMSupernet3D(**TINY)


def test_decisions():
    net = CBAMSupernet3D(**TINY)
    names = [d.name for d in net.decisions]
    assert "stage3.block2.keep" in names and "stage5.block2.keep" in names
    assert "stage3.block1.keep" not in names and "stage4.block1.keep" not in names  # first blocks are never skipped
    assert len(net.arch_parameters()) == len(names) == 5 * 2 + 2
    assert not {id(p) for p in net.arch_parameters()} & {id(p) for p in net.weight_parameters()}


def test_sampled_forward_gives_gradients_to_the_logits(supernet):
    supernet.train()
    supernet.temperature = 2.0
    torch.manual_seed(1)
    out = supernet(torch.rand(2, 1, 16, 16, 16))
    assert out.shape == (2, 2)
    out.logsumexp(-1).sum().backward()
    grads = [p.grad for p in supernet.arch_parameters()]
    assert any(g is not None and torch.any(g != 0) for g in grads)
    stage3_width = supernet.arch_logits[supernet.decisions.index(
        next(d for d in supernet.decisions if d.name == "stage3.block1.width"))].grad  # fmt: skip
    assert stage3_width is not None and torch.any(stage3_width != 0)  # a width is always used
    supernet.zero_grad()


@pytest.mark.parametrize(
    "choices, spec",
    [
        [{}, "[4,4,[4,4],[4],[4,4]]"],
        [
            {"stage3.block2.keep": 0, "stage5.block1.width": 1, "stage5.block1.kernel": 1, "stage5.block2.width": 1},
            "[4,4,[4],[4],[[8,5],8]]",
        ],  # fmt: skip
    ],
)
def test_fixed_sub_network_matches_its_derived_network(choices, spec):
    torch.manual_seed(0)
    net = CBAMSupernet3D(**TINY)
    with torch.no_grad():
        for p in net.arch_parameters():  # arg-max = option 0 except keep (option 1)
            p.copy_(torch.tensor([1.0, 0.0] + [0.0] * (p.numel() - 2)) if p.numel() != 2 else torch.tensor([1.0, 0.0]))
        for d, p in zip(net.decisions, net.arch_parameters(), strict=True):
            if d.kind == "keep":
                p.copy_(torch.tensor([0.0, 1.0]))
    full = {**net.argmax_choices(), **choices}
    derived = net.spec_of(full)
    assert str(derived) == spec
    net.fix(choices)
    net.eval()
    features = net.features(torch.rand(1, 1, 16, 16, 16))
    assert torch.all(features[:, derived.out_channels :] == 0)  # channels beyond the derived width are masked
    real = CBAMResNet3D(arch=derived).eval()
    assert real(torch.rand(1, 1, 16, 16, 16)).shape == (1, 2)


def test_expected_latency_follows_the_table():
    net = CBAMSupernet3D(**TINY)
    table = measure_latency_table(net, input_size=16, warmup=0, repeats=1)
    assert len(table) == len(net.latency_ops(16)) and all(v > 0 for v in table.values())
    with torch.no_grad():  # make one sub-network certain: all widths 8, kernels 3, every optional block skipped
        for d, p in zip(net.decisions, net.arch_parameters(), strict=True):
            p.copy_(torch.tensor([-50.0, 50.0]) if d.kind == "width" else torch.tensor([50.0, -50.0]))
    expected = net.expected_latency(table).item()
    exact = table["stage3.first.4-8.k3"] + table["stage4.first.8-8.k3"] + table["stage5.first.8-8.k3"]
    assert expected == pytest.approx(exact, rel=1e-4)
    uniform = CBAMSupernet3D(**TINY)
    latency = uniform.expected_latency(table)
    latency.backward()
    assert all(p.grad is not None for p in uniform.arch_parameters())
    with pytest.raises(ConfigError, match="latency table"):
        uniform.expected_latency({})


@pytest.mark.parametrize(
    "kwargs", [{"widths": (8, 4)}, {"kernel_sizes": (4,)}, {"max_blocks": (1, 1)}, {"min_blocks": (3, 1, 1)}]
)
def test_invalid_options(kwargs):
    with pytest.raises(ConfigError):
        CBAMSupernet3D(**{**TINY, **kwargs})
