"""AutocastInferer: bfloat16 forward passes with float32 outputs, the ``auto`` switch, and config errors."""

from __future__ import annotations

import pytest
import torch

from naslung.networks import build_network
from naslung.pipeline.errors import ConfigError
from naslung.pipeline.training.inferers import AutocastInferer, cpu_bf16_supported


class _DtypeProbe(torch.nn.Module):
    """A linear layer that records the dtype its output is computed in."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.seen: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        self.seen = out.dtype
        return out


@pytest.mark.parametrize("enabled, inner_dtype", [[True, torch.bfloat16], [False, torch.float32]])
def test_runs_under_autocast_and_returns_float32(enabled, inner_dtype):
    probe = _DtypeProbe()
    out = AutocastInferer("cpu", "bfloat16", enabled=enabled)(torch.randn(3, 4), probe)
    assert probe.seen == inner_dtype
    assert out.dtype == torch.float32 and out.shape == (3, 2)


def test_auto_follows_the_cpu():
    assert AutocastInferer("cpu", "bfloat16", enabled="auto").enabled == cpu_bf16_supported()
    assert AutocastInferer("cpu", "float16", enabled="auto").enabled is False


def test_training_step_of_model_1_in_bfloat16_keeps_float32_weights_and_gradients():
    torch.manual_seed(0)
    net = build_network("[4,4,[4,4],[4,8],[8,8]]", head="linear").train()
    x, y = torch.randn(4, 1, 32, 32, 32), torch.tensor([0, 1, 0, 1])
    logits = AutocastInferer("cpu", enabled=True)(x, net)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    assert torch.isfinite(loss)
    for name, parameter in net.named_parameters():
        assert parameter.dtype == torch.float32 and parameter.grad is not None, name
        assert parameter.grad.dtype == torch.float32, name
    with torch.no_grad():  # the same network in float32 gives nearly the same logits
        reference = net(x)
    torch.testing.assert_close(logits.detach(), reference, atol=0.1, rtol=0.1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        [{"device_type": "tpu"}, "device_type"],
        [{"dtype": "int8"}, "dtype"],
        [{"enabled": "yes"}, "enabled"],
    ],
)
def test_bad_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AutocastInferer(**kwargs)
