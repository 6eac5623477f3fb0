"""build_network: every registered name builds, classifies a 32^3 cube and takes an A-Softmax training step; specs
build CBAMResNet3D; baselines refuse CBAM options."""

from __future__ import annotations

import pytest
import torch

from naslung.networks import (
    BASELINES,
    NETWORKS,
    AngularLinear,
    AngularSoftmaxLoss,
    ArchSpec,
    CBAMResNet3D,
    build_network,
    registered_name,
)
from naslung.pipeline.errors import ConfigError

EXPECTED_BASELINES = ["densenet121", "mc3_18", "resnet18", "resnet50", "resnet101", "seresnet50"]


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_registered_name_builds(name):
    net = build_network(name, spatial_dims=3, in_channels=1, num_classes=2).eval()
    with torch.no_grad():
        logits = net(torch.zeros(1, 1, 32, 32, 32))
    assert logits.shape == (1, 2)


def test_registry_has_the_baselines():
    assert set(EXPECTED_BASELINES) | {"cbam_resnet3d"} == set(NETWORKS)
    assert sorted(BASELINES) == sorted(EXPECTED_BASELINES)


NARROW = {
    "cbam_resnet3d": {"arch": "[4,4,[4],[4],[4]]"},
    "densenet121": {"init_features": 8, "growth_rate": 4, "bn_size": 2, "attention": "none"},
    "mc3_18": {"block_inplanes": (4, 8, 8, 16), "attention": "none"},
    "resnet18": {"widen_factor": 0.125, "attention": "none"},
    "resnet50": {"widen_factor": 0.0625, "attention": "none"},
    "resnet101": {"widen_factor": 0.0625, "attention": "none"},
    "seresnet50": {"layers": (1, 1, 1, 1), "attention": "none"},
}
"""Narrow variants (each builder's own width options) so that a training step takes well under a second; the
full-size networks are checked by the forward pass above."""


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_network_takes_an_angular_softmax_step(name):
    """One optimiser step on two 32^3 cubes with the angular head: finite loss, the head's weights move."""
    torch.manual_seed(0)
    net = build_network(name, head="angular", margin=4, **NARROW[name]).train()
    heads = [m for m in net.modules() if isinstance(m, AngularLinear)]
    assert len(heads) == 1 and heads[0].out_features == 2
    before = heads[0].weight.detach().clone()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    output = net(torch.rand(2, 1, 32, 32, 32))
    assert output.shape == (2, 2, 2)  # training-mode A-Softmax output (cos, psi)
    loss = AngularSoftmaxLoss()(output, torch.tensor([0, 1]))
    loss.backward()
    optimiser.step()
    assert torch.isfinite(loss) and not torch.equal(before, heads[0].weight)


SPEC_CASES = [
    ["[4,4,[4,4],[4,8],[8,8]]", {}],
    [ArchSpec.parse("[4,4,[8],[8],[16]]"), {"attention": "none"}],
    [[4, 4, [4], [8], [8]], {"head": "angular", "spatial_dims": 2}],
    ["cbam_resnet3d", {"arch": "[4,4,[4],[4],[4]]", "attention": "spatial_first"}],
]


@pytest.mark.parametrize("name_or_spec, kwargs", SPEC_CASES)
def test_specs_build_cbam_resnet(name_or_spec, kwargs):
    net = build_network(name_or_spec, **kwargs)
    assert isinstance(net, CBAMResNet3D)
    expected = kwargs.get("arch", name_or_spec if not isinstance(name_or_spec, str) or "[" in name_or_spec else None)
    assert net.arch == ArchSpec.coerce(expected)
    for key in ("attention", "spatial_dims"):
        if key in kwargs:
            assert getattr(net, key) == kwargs[key]


@pytest.mark.parametrize("name", ["DenseNet121", "ResNet-18", "SE_ResNet50"])
def test_names_ignore_case_and_separators(name):
    assert build_network(name) is not None


@pytest.mark.parametrize("bad, message", [["vgg16", "unknown network"], ["[4,4,[4]]", "expected 5 entries"]])
def test_unknown_names_and_bad_specs(bad, message):
    with pytest.raises(ConfigError, match=message):
        build_network(bad)


@pytest.mark.parametrize("name", ["ResNet-18", "MC3_18", "densenet121"])
def test_registered_name(name):
    assert registered_name(name) in NETWORKS
    with pytest.raises(ConfigError, match="unknown network 'vgg'"):
        registered_name("vgg")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        [{"arch": "[4,4,[4],[4],[4]]"}, "does not take \\['arch'\\]"],
        [{"cbam_reduction": 2, "attention": "none"}, "does not take \\['cbam_reduction'\\]"],
        [{"attention": "channel_first"}, "has no CBAM attention, so attention must be 'none'"],
        [{"head": "cosine"}, "head 'cosine' is not supported"],
    ],
)
def test_candidate_options_are_refused_for_baselines(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_network("densenet121", **kwargs)


@pytest.mark.parametrize("head, head_type", [["linear", torch.nn.Linear], ["angular", AngularLinear]])
def test_baselines_take_the_config_options(head, head_type):
    """What train.json's network_def passes for a baseline: attention 'none', a head and a margin."""
    net = build_network("resnet18", attention="none", head=head, margin=3, widen_factor=0.125)
    assert type(net.fc) is head_type
    assert getattr(net.fc, "margin", 3) == 3
