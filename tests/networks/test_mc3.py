"""MC3-18 (Tran et al. 2018): torchvision's parameter count, mixed 3D/2D kernels, shapes, heads, scripting, Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from naslung.networks import MC3, AngularLinear, build_network, count_parameters, mc3_18, to_torchscript
from naslung.pipeline.errors import ConfigError

SMALL = {"layers": (1, 1, 1, 1), "block_inplanes": (4, 8, 8, 16)}
"""A narrow, shallow MC3 (the same layout rules) so that the tests run in well under a second each."""


def test_parameter_count_matches_torchvision():
    # torchvision.models.video.mc3_18(): 3-channel clips, 400 Kinetics classes
    assert count_parameters(MC3(in_channels=3, num_classes=400)) == 11_695_440
    assert count_parameters(mc3_18()) == 11_472_450  # 1 channel, 2 classes (see the MC3 docstring)
    assert count_parameters(mc3_18(head="angular")) == 11_472_448


SHAPE_CASES = [
    [{}, (2, 1, 32, 32, 32), (2, 16, 2, 2, 32)],
    [{"slice_axis": 0}, (2, 1, 32, 32, 32), (2, 16, 32, 2, 2)],
    [{"slice_axis": 1}, (1, 1, 16, 24, 32), (1, 16, 1, 24, 2)],
]


@pytest.mark.parametrize("kwargs, input_shape, stages_shape", SHAPE_CASES)
def test_shapes_keep_the_slice_axis(kwargs, input_shape, stages_shape):
    net = mc3_18(layers=(1, 1, 1, 1), block_inplanes=(8, 16, 32, 64), widen_factor=0.25, **kwargs).eval()
    x = torch.rand(input_shape)
    with torch.no_grad():
        assert net.stages(net.stem(x)).shape == stages_shape
        assert net(x).shape == (input_shape[0], 2)
        assert net.features(x).shape == (input_shape[0], 16)


@pytest.mark.parametrize("layers_3d", [0, 1, 4])
def test_first_layers_are_3d_the_rest_2d(layers_3d):
    net = MC3(layers=(1, 1, 1, 1), block_inplanes=(4, 4, 8, 8), layers_3d=layers_3d, slice_axis=2)
    assert net.stem.conv.kernel_size == (7, 7, 3) and net.stem.conv.stride == (2, 2, 1)
    for index, layer in enumerate(net.stages):
        block = layer[0]
        expected = (3, 3, 3) if index < layers_3d else (3, 3, 1)
        assert block.conv1.conv.kernel_size == block.conv2.conv.kernel_size == expected
        if index > 0:  # downsampling layers: 2D ones keep the slice axis
            assert block.conv1.conv.stride == ((2, 2, 2) if index < layers_3d else (2, 2, 1))
            assert block.shortcut.conv.stride == block.conv1.conv.stride


def test_angular_head_trains_with_two_outputs_and_evaluates_logits():
    net = mc3_18(**SMALL, head="angular", margin=2)
    assert isinstance(net.head, AngularLinear) and net.head.margin == 2
    x = torch.rand(2, 1, 16, 16, 16)
    assert net.train()(x).shape == (2, 2, 2)
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        [{"spatial_dims": 2}, "spatial_dims must be 3"],
        [{"slice_axis": 3}, "slice_axis must be 0, 1 or 2"],
        [{"layers_3d": 5}, "layers_3d must be in 0..4"],
        [{"head": "cosine"}, "head 'cosine' is not supported"],
        [{"layers": (2, 2)}, "need the same positive length"],
        [{"widen_factor": 0.001}, "must be positive"],
    ],
)
def test_invalid_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        mc3_18(**kwargs)


def test_factory_builds_it_and_torchscript_matches_eager():
    torch.manual_seed(0)
    net = build_network("MC3-18", head="angular", attention="none", **SMALL).eval()
    assert isinstance(net, MC3)
    x = torch.rand(2, 1, 16, 16, 16)
    scripted = to_torchscript(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(scripted.features(x), net.features(x), rtol=1e-4, atol=1e-4)


def test_gradcam_looks_at_the_last_layer():
    from naslung.pipeline.analysis.features import default_gradcam_layer, gradcam_maps

    torch.manual_seed(0)
    net = mc3_18(**SMALL).eval()
    assert default_gradcam_layer(net, (1, 16, 16, 16)) == "stages"
    maps = gradcam_maps(net, torch.rand(2, 1, 16, 16, 16))
    assert maps.shape == (2, 16, 16, 16) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and (maps >= 0).all() and maps.max() > 0
