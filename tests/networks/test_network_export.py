"""Exports: TorchScript and ONNX Runtime give eager PyTorch's logits within 1e-4, with a dynamic batch axis."""

from __future__ import annotations

import pytest
import torch

from naslung.networks import (
    CBAMResNet3D,
    OnnxRuntimeModel,
    inference_runner,
    load_torchscript,
    to_onnx,
    to_torchscript,
)
from naslung.networks.export import INFERENCE_BACKENDS
from naslung.pipeline.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore")

CANDIDATES = [  # every attention option, both heads, Model-1 and another depth/width
    {"arch": "[4,4,[4,4],[4,8],[8,8]]", "attention": "channel_first", "head": "angular"},
    {"arch": "[4,4,[4,4],[4,8],[8,8]]", "attention": "spatial_first", "head": "linear"},
    {"arch": "[4,8,[8],[16,16,16],[16]]", "attention": "none", "head": "angular"},
]


@pytest.fixture
def cubes():
    return torch.rand((3, 1, 32, 32, 32), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kwargs", CANDIDATES)
def test_torchscript_round_trip(tmp_path, randomise_norms, cubes, kwargs):
    net = randomise_norms(CBAMResNet3D(**kwargs)).eval()
    path = tmp_path / "model.pt"
    to_torchscript(net, path)
    loaded = load_torchscript(path)
    with torch.no_grad():
        expected = net(cubes)
        torch.testing.assert_close(loaded(cubes), expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(loaded.features(cubes), net.features(cubes), atol=1e-4, rtol=0)
    assert expected.abs().max() > 1e-2  # the comparison is not between near-zero numbers


@pytest.mark.parametrize("kwargs", CANDIDATES)
def test_onnx_runtime_equals_eager(tmp_path, randomise_norms, cubes, kwargs):
    net = randomise_norms(CBAMResNet3D(**kwargs)).train()
    path = tmp_path / "model.onnx"
    to_onnx(net, path, (1, 32, 32, 32))
    assert net.training  # the caller's module is untouched
    runner = OnnxRuntimeModel(path, num_threads=1)
    with torch.no_grad():
        expected = net.eval()(cubes)
    logits = runner(cubes)  # exported with batch 1, run with batch 3
    assert logits.shape == (3, 2)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend", INFERENCE_BACKENDS)
def test_inference_runner_backends(randomise_norms, cubes, backend):
    net = randomise_norms(CBAMResNet3D(arch="[4,4,[4],[8],[8]]", head="angular")).eval()
    runner = inference_runner(net, (1, 32, 32, 32), backend=backend, num_threads=1)
    with torch.no_grad():
        torch.testing.assert_close(runner(cubes), net(cubes), atol=1e-4, rtol=0)


def test_missing_files_and_bad_backend(tmp_path):
    with pytest.raises(ConfigError, match="no ONNX file"):
        OnnxRuntimeModel(tmp_path / "absent.onnx")
    with pytest.raises(ConfigError, match="no TorchScript archive"):
        load_torchscript(tmp_path / "absent.pt")
    with pytest.raises(ConfigError, match="backend"):
        inference_runner(CBAMResNet3D(), backend="tensorrt")
