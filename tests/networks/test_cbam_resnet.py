"""CBAMResNet3D: shapes in 2D and 3D, attention options, heads, features, attention maps, TorchScript."""

from __future__ import annotations

import pytest
import torch

from naslung.networks import PAPER_MODEL_1, ArchSpec, CBAMResNet3D, count_parameters
from naslung.networks.blocks import CBAMBlock
from naslung.pipeline.errors import ConfigError

MODEL_1 = "[4,4,[4,4],[4,8],[8,8]]"
SMALL = "[4,4,[4],[8],[8]]"

TEST_CASES = [  # kwargs, input shape, eval output shape, feature length
    [{"arch": MODEL_1}, (2, 1, 32, 32, 32), (2, 2), 8],
    [{"arch": MODEL_1, "attention": "spatial_first"}, (1, 1, 32, 32, 32), (1, 2), 8],
    [{"arch": MODEL_1, "attention": "none", "head": "angular"}, (2, 1, 32, 32, 32), (2, 2), 8],
    [{"arch": "[4,4,[8],[8,16],[16]]", "num_classes": 3, "head": "angular"}, (1, 1, 16, 16, 16), (1, 3), 16],
    [{"spatial_dims": 2, "arch": SMALL}, (2, 1, 32, 32), (2, 2), 8],
    [{"spatial_dims": 2, "in_channels": 3, "arch": SMALL, "attention": "spatial_first"}, (1, 3, 16, 16), (1, 2), 8],
]


@pytest.mark.parametrize("kwargs, input_shape, expected_shape, feature_length", TEST_CASES)
def test_output_shapes(kwargs, input_shape, expected_shape, feature_length):
    net = CBAMResNet3D(**kwargs).eval()
    x = torch.randn(input_shape)
    with torch.no_grad():
        logits = net(x)
        features = net.features(x)
    assert logits.shape == expected_shape
    assert features.shape == (input_shape[0], feature_length)
    probabilities = torch.softmax(logits, dim=1)  # MONAI post-transforms apply to eval outputs
    torch.testing.assert_close(probabilities.sum(1), torch.ones(input_shape[0]))


@pytest.mark.parametrize("head, train_shape", [["linear", (2, 2)], ["angular", (2, 2, 2)]])
def test_training_output_of_each_head(head, train_shape):
    net = CBAMResNet3D(arch=SMALL, head=head).train()
    assert net(torch.randn(2, 1, 16, 16, 16)).shape == train_shape


def test_recording_does_not_change_the_output(randomise_norms):
    recording = randomise_norms(CBAMResNet3D(arch=MODEL_1)).eval()
    silent = CBAMResNet3D(arch=MODEL_1, record_attention=False).eval()
    silent.load_state_dict(recording.state_dict())
    x = torch.randn(2, 1, 32, 32, 32)
    torch.testing.assert_close(recording(x), silent(x))
    assert silent.attention_maps() == {} and len(recording.attention_maps()) == 4


def test_no_attention_has_no_cbam():
    net = CBAMResNet3D(arch=MODEL_1, attention=None)
    assert not any(isinstance(m, CBAMBlock) for m in net.modules())
    net.eval()(torch.randn(1, 1, 32, 32, 32))
    assert net.attention_maps() == {}


def test_spec_forms_build_the_same_network():
    counts = {
        count_parameters(CBAMResNet3D(arch=arch))
        for arch in (MODEL_1, ArchSpec.parse(MODEL_1), PAPER_MODEL_1.to_list(), (4, 4, (4, 4), (4, 8), (8, 8)))
    }
    assert len(counts) == 1


def test_model_1_parameter_count():
    """Table 5 prints 0.14 M for Model-1; the layout of Fig. 1-2 gives 0.013 M (see CBAMResNet3D's docstring)."""
    linear = count_parameters(CBAMResNet3D(arch=MODEL_1))
    angular = count_parameters(CBAMResNet3D(arch=MODEL_1, head="angular"))
    print(f"Model-1 {MODEL_1}: {linear:,} parameters (angular head {angular:,}); paper Table 5: 0.14 M")
    assert (linear, angular) == (13_316, 13_314)


def test_downsampling_happens_in_the_first_block_of_stages_3_to_5():
    net = CBAMResNet3D(arch="[4,4,[4,4],[4,4],[4,4]]")
    for name in ("stage3", "stage4", "stage5"):
        stage = getattr(net, name)
        assert stage.block1.conv1.conv.stride == (2, 2, 2)
        assert stage.block2.conv1.conv.stride == (1, 1, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        [{"attention": "both"}, "attention"],
        [{"head": "cosine"}, "head"],
        [{"arch": "[4,4,[4],[4]]"}, "expected 5 entries"],
        [{"margin": 5, "head": "angular"}, "margin"],
        [{"spatial_dims": 4}, "spatial_dims"],
    ],
)
def test_invalid_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CBAMResNet3D(**kwargs)


@pytest.mark.parametrize("kwargs", [{"arch": MODEL_1}, {"arch": SMALL, "attention": "none", "head": "angular"}])
def test_torchscript_save_load(tmp_path, randomise_norms, kwargs):
    net = randomise_norms(CBAMResNet3D(**kwargs)).eval()
    scripted = torch.jit.script(net)
    path = tmp_path / "net.pt"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(loaded.features(x), net.features(x), atol=1e-4, rtol=1e-4)


def test_block_kernels_of_the_spec_are_built():
    net = CBAMResNet3D(arch="[4,4,[4,[8,5]],[8],[[8,5]]]")
    assert net.stage3.block1.conv1.conv.kernel_size == (3, 3, 3)
    assert net.stage3.block2.conv1.conv.kernel_size == (5, 5, 5)
    assert net.stage3.block2.conv2.conv.kernel_size == (5, 5, 5)
    assert net.stage5.block1.conv2.conv.kernel_size == (5, 5, 5)
    assert net.eval()(torch.rand(1, 1, 32, 32, 32)).shape == (1, 2)
