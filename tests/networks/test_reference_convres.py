"""The reference layout (the authors' ConvRes): parameter count, weight conversion, equal logits, options, errors."""

from __future__ import annotations

import pytest
import torch
from authors_convres import AuthorsConvRes, authors_random_state_dict, stage_config

from naslung.networks import (
    LAYOUTS,
    ArchSpec,
    CBAMResNet3D,
    ReferenceConvRes3D,
    authors_key_map,
    build_network,
    convert_authors_state_dict,
    count_parameters,
)
from naslung.networks.errors import ConfigError

MODEL_1 = [4, 4, [4, 4], [4, 8], [8, 8]]

SPECS = [  # spec, its parameter count in the authors' layout (angular head)
    [MODEL_1, 16_128],
    [[4, 4, [8], [8, 16], [16]], None],
    [[4, 4, [4, 8, 8], [16], [16, 32]], None],
]


def _authors(spec: list, seed: int = 0) -> tuple[AuthorsConvRes, dict[str, torch.Tensor]]:
    weights = authors_random_state_dict(stage_config(spec), seed=seed)
    authors = AuthorsConvRes(stage_config(spec))
    authors.load_state_dict(weights, strict=True)
    return authors, weights


def _cubes(batch: int = 3, seed: int = 5) -> torch.Tensor:
    return torch.rand((batch, 1, 32, 32, 32), generator=torch.Generator().manual_seed(seed))


def test_model_1_has_the_authors_16128_parameters():
    assert count_parameters(ReferenceConvRes3D(arch=MODEL_1, head="angular")) == 16_128
    assert count_parameters(build_network("[4,4,[4,4],[4,8],[8,8]]", layout="reference", head="angular")) == 16_128
    assert count_parameters(AuthorsConvRes(stage_config(MODEL_1))) == 16_128  # the yardstick agrees
    assert count_parameters(CBAMResNet3D(arch=MODEL_1, head="angular")) == 13_314  # ours, for contrast


@pytest.mark.parametrize("spec, expected_parameters", SPECS)
def test_converted_weights_give_the_authors_logits(spec, expected_parameters):
    authors, weights = _authors(spec)
    converted, network = convert_authors_state_dict(weights, arch=spec)
    if expected_parameters is not None:
        assert count_parameters(network) == expected_parameters
    assert count_parameters(network) == count_parameters(authors)
    assert set(converted) == set(network.state_dict())
    x = _cubes()
    authors.eval()
    with torch.no_grad():
        expected, _ = authors(x)
        logits = network(x)
    assert logits.shape == (3, 2)
    assert expected.abs().max() > 1e-2  # the comparison is not between two near-zero outputs
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("spec, expected_parameters", SPECS[:2])
def test_training_mode_outputs_match_the_authors_cos_and_psi(spec, expected_parameters):
    authors, weights = _authors(spec, seed=3)
    _, network = convert_authors_state_dict(weights, arch=spec)
    x = _cubes(batch=4, seed=9)
    authors.train()
    network.train()
    with torch.no_grad():
        cos_theta, psi = authors(x)
        output = network(x)
    assert output.shape == (4, 2, 2)
    torch.testing.assert_close(output[:, 0], cos_theta, atol=1e-5, rtol=0)
    torch.testing.assert_close(output[:, 1], psi, atol=1e-4, rtol=0)


def test_key_map_covers_exactly_the_authors_state_dict():
    for spec, _ in SPECS:
        authors_keys = list(AuthorsConvRes(stage_config(spec)).state_dict())
        mapping = authors_key_map(spec)
        assert list(mapping) == authors_keys
        assert set(mapping.values()) == set(ReferenceConvRes3D(arch=spec).state_dict())


def test_conversion_transposes_the_angular_weight_and_accepts_dataparallel_and_old_checkpoints():
    _, weights = _authors(MODEL_1)
    prefixed = {f"module.{key}": value for key, value in weights.items() if not key.endswith("num_batches_tracked")}
    converted, network = convert_authors_state_dict(prefixed, arch=MODEL_1)
    torch.testing.assert_close(converted["head.weight"], weights["fc.weight"].t())
    assert converted["stage5.block2.shortcut.conv.weight"].shape == (8, 8, 1, 1, 1)
    assert int(converted["stage1.adn.N.num_batches_tracked"]) == 0
    assert not network.training


@pytest.mark.parametrize(
    "change, message",
    [
        [lambda w: w.update({"layers.99.my_conv1.0.weight": torch.zeros(1)}), "layers.99.my_conv1.0.weight"],
        [lambda w: w.pop("layers.3.ch_Linear1.weight"), "layers.3.ch_Linear1.weight"],
        [lambda w: w.update({"conv2.0.bias": torch.zeros(5)}), "conv2.0.bias"],
        [lambda w: w.update({"fc.weight": torch.zeros(2, 8)}), "fc.weight"],
        [lambda w: w.update({"conv1.1.running_var": "not a tensor"}), "conv1.1.running_var"],
    ],
)
def test_unknown_missing_or_misshaped_keys_are_named(change, message):
    _, weights = _authors(MODEL_1)
    change(weights)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        convert_authors_state_dict(weights, arch=MODEL_1)


def test_weights_of_another_spec_are_refused():
    _, weights = _authors(MODEL_1)
    with pytest.raises(ConfigError, match="needs|missing|unknown"):
        convert_authors_state_dict(weights, arch=[4, 4, [4, 4], [4, 8], [8, 16]])
    with pytest.raises(ConfigError, match="unknown key"):
        convert_authors_state_dict(weights, arch=[4, 4, [4], [4, 8], [8, 8]])


LAYOUT_CASES = [  # kwargs, input shape, eval output shape
    [{"arch": MODEL_1}, (2, 1, 32, 32, 32), (2, 2)],
    [{"arch": MODEL_1, "attention": "none", "head": "linear"}, (1, 1, 32, 32, 32), (1, 2)],
    [{"arch": "[4,4,[8],[8,[16,5]],[16]]", "num_classes": 3}, (1, 1, 16, 16, 16), (1, 3)],
    [{"spatial_dims": 2, "in_channels": 3, "arch": "[4,8,[8],[8],[16]]"}, (2, 3, 32, 32), (2, 2)],
]


@pytest.mark.parametrize("kwargs, input_shape, expected_shape", LAYOUT_CASES)
def test_reference_layout_shapes_and_torchscript(kwargs, input_shape, expected_shape):
    network = ReferenceConvRes3D(**kwargs).eval()
    x = torch.randn(input_shape)
    with torch.no_grad():
        logits = network(x)
        scripted = torch.jit.script(network)(x)
    assert logits.shape == expected_shape
    assert network.features(x).shape == (input_shape[0], ArchSpec.coerce(kwargs["arch"]).out_channels)
    torch.testing.assert_close(scripted, logits)


def test_factory_layout_option():
    assert set(LAYOUTS) == {"naslung", "reference"}
    assert isinstance(build_network(MODEL_1, layout="reference"), ReferenceConvRes3D)
    assert isinstance(build_network("[4,4,[4],[8],[8]]", layout="naslung"), CBAMResNet3D)
    assert isinstance(build_network("cbam_resnet3d", arch=MODEL_1, layout="reference"), ReferenceConvRes3D)
    assert not isinstance(build_network("resnet18", attention="none", layout="naslung"), ReferenceConvRes3D)
    with pytest.raises(ConfigError, match="layout 'bit-for-bit'"):
        build_network(MODEL_1, layout="bit-for-bit")
    with pytest.raises(ConfigError, match="no reference layout"):
        build_network("resnet18", attention="none", layout="reference")
    with pytest.raises(ConfigError, match="spatial_first"):
        build_network(MODEL_1, layout="reference", attention="spatial_first")
