"""build_network: every registered name builds and classifies a 32^3 cube; specs build CBAMResNet3D."""

from __future__ import annotations

import pytest
import torch

from naslung.networks import NETWORKS, ArchSpec, CBAMResNet3D, build_network
from naslung.pipeline.errors import ConfigError

BASELINES = ["densenet121", "resnet18", "resnet50", "seresnet50"]


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_registered_name_builds(name):
    net = build_network(name, spatial_dims=3, in_channels=1, num_classes=2).eval()
    with torch.no_grad():
        logits = net(torch.zeros(1, 1, 32, 32, 32))
    assert logits.shape == (1, 2)


def test_registry_has_the_monai_baselines():
    assert set(BASELINES) | {"cbam_resnet3d"} <= set(NETWORKS)


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


def test_candidate_options_are_refused_for_baselines():
    with pytest.raises(ConfigError, match="does not take \\['attention', 'head'\\]"):
        build_network("densenet121", attention="channel_first", head="angular")
