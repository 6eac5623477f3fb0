"""Straight-through Gumbel-Softmax: one-hot samples with the softmax's statistics, gradients to every logit, and the
temperature's limits and annealing schedule."""

from __future__ import annotations

import pytest
import torch

from naslung.networks.gumbel import TemperatureSchedule, gumbel_softmax_st
from naslung.pipeline.errors import ConfigError


def test_hard_samples_are_one_hot_with_softmax_frequencies():
    torch.manual_seed(0)
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5])
    samples = gumbel_softmax_st(logits.expand(20000, 4), temperature=1.0)
    assert torch.all((samples == 0) | (samples == 1)) and torch.all(samples.sum(-1) == 1)
    frequencies = samples.mean(0)
    assert torch.allclose(frequencies, torch.softmax(logits, -1), atol=0.015)  # Gumbel-max: P(i) = softmax_i


@pytest.mark.parametrize("temperature", [0.2, 1.0, 5.0])
def test_frequencies_do_not_depend_on_the_temperature(temperature):
    torch.manual_seed(1)
    logits = torch.tensor([2.0, 0.0])
    frequencies = gumbel_softmax_st(logits.expand(20000, 2), temperature=temperature).mean(0)
    assert abs(float(frequencies[0]) - float(torch.sigmoid(torch.tensor(2.0)))) < 0.015


def test_straight_through_gradient_reaches_every_logit():
    torch.manual_seed(0)
    logits = torch.zeros(3, requires_grad=True)
    sample = gumbel_softmax_st(logits, temperature=1.0)
    (sample * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.all(logits.grad != 0)
    assert torch.isclose(logits.grad.sum(), torch.tensor(0.0), atol=1e-6)  # softmax Jacobian rows sum to zero


def test_soft_sample_gradient_matches_the_relaxation():
    torch.manual_seed(3)
    logits = torch.randn(4, requires_grad=True)
    torch.manual_seed(7)
    hard = gumbel_softmax_st(logits, temperature=0.7)
    torch.manual_seed(7)
    soft = gumbel_softmax_st(logits, temperature=0.7, hard=False)
    assert int(hard.argmax()) == int(soft.argmax())
    weights = torch.arange(4.0)
    (grad_hard,) = torch.autograd.grad((hard * weights).sum(), logits)
    (grad_soft,) = torch.autograd.grad((soft * weights).sum(), logits)
    assert torch.allclose(grad_hard, grad_soft)


def test_temperature_limits():
    torch.manual_seed(0)
    logits = torch.randn(2000, 5)
    cold = gumbel_softmax_st(logits, temperature=0.01, hard=False)
    hot = gumbel_softmax_st(logits, temperature=1000.0, hard=False)
    assert float(cold.max(-1).values.mean()) > 0.99  # tau -> 0: one-hot
    assert float((hot - 0.2).abs().max()) < 0.02  # tau -> inf: uniform


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf"), float("nan")])
def test_invalid_temperature(temperature):
    with pytest.raises(ConfigError, match="temperature"):
        gumbel_softmax_st(torch.zeros(2), temperature)


def test_schedule_anneals_exponentially_and_holds_the_end():
    schedule = TemperatureSchedule(start=5.0, end=0.5, anneal_epochs=10)
    values = [schedule(e) for e in range(15)]
    assert values[0] == pytest.approx(5.0) and values[10] == pytest.approx(0.5) and values[14] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(values[:10], values[1:11], strict=True))
    ratios = [b / a for a, b in zip(values[:10], values[1:11], strict=True)]
    assert ratios == pytest.approx([0.1**0.1] * 10)


@pytest.mark.parametrize("kwargs", [{"start": 0.5, "end": 1.0}, {"end": 0.0}, {"anneal_epochs": 0}])
def test_invalid_schedule(kwargs):
    with pytest.raises(ConfigError, match="temperature schedule"):
        TemperatureSchedule(**kwargs)
