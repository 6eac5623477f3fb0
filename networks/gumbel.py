"""Straight-through Gumbel-Softmax sampling of architecture choices and its annealed temperature schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from naslung.networks.errors import ConfigError

__all__ = ["gumbel_softmax_st", "TemperatureSchedule"]


def gumbel_softmax_st(logits: torch.Tensor, temperature: float, hard: bool = True) -> torch.Tensor:
    """Sample one-hot choices from ``logits`` with the Gumbel-Softmax trick (Jang et al. 2017), straight-through.

    The forward value is the one-hot vector of ``argmax(logits + g)`` (``g`` i.i.d. Gumbel(0, 1)) when ``hard``;
    the gradient is that of the relaxed sample ``softmax((logits + g) / temperature)``, so every logit gets a
    gradient although only one option is used (FBNet, CovidNet3D's ``OnehotMutator``). As ``temperature -> 0`` the
    relaxed sample approaches the one-hot sample; as it grows the relaxed sample approaches the uniform vector.
    A thin wrapper of :func:`torch.nn.functional.gumbel_softmax` (random numbers from torch's global generator,
    so ``torch.manual_seed`` makes it deterministic).

    Args:
        logits: (..., K) unnormalised log-probabilities of K options.
        temperature: tau > 0.
        hard: one-hot forward values (straight-through); ``False``: the relaxed sample itself.

    Returns:
        (..., K) samples; rows sum to 1.

    Raises:
        ConfigError: for a non-positive or non-finite temperature.
    """
    if not math.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"Gumbel-Softmax temperature must be a positive finite number, got {temperature!r}.")
    return F.gumbel_softmax(logits, tau=float(temperature), hard=hard, dim=-1)


@dataclass(frozen=True)
class TemperatureSchedule:
    """Exponential annealing of the Gumbel-Softmax temperature, per epoch (FBNet, Wu et al. 2019, Sec. 4.1).

    ``tau(e) = start * (end / start) ** (e / anneal_epochs)`` for epoch ``e`` (0-based) up to ``anneal_epochs``,
    then ``end``. FBNet starts at 5.0 and multiplies by 0.956 per epoch over 90 epochs (5.0 -> 0.09); here the
    end value and the number of epochs to reach it are given instead, so a search can run longer (or be resumed
    with more epochs) without changing the temperature of the epochs already run.

    Args:
        start: temperature of epoch 0 (> 0).
        end: temperature from epoch ``anneal_epochs`` on (> 0, at most ``start``).
        anneal_epochs: epochs to go from ``start`` to ``end`` (>= 1).

    Raises:
        ConfigError: for invalid values.
    """

    start: float = 5.0
    end: float = 0.5
    anneal_epochs: int = 20

    def __post_init__(self) -> None:
        if not (0 < self.end <= self.start < math.inf) or self.anneal_epochs < 1:
            raise ConfigError(
                f"temperature schedule needs 0 < end <= start and anneal_epochs >= 1, got start={self.start}, "
                f"end={self.end}, anneal_epochs={self.anneal_epochs}."
            )

    def __call__(self, epoch: int) -> float:
        """Temperature of 0-based ``epoch``."""
        progress = min(max(int(epoch), 0), self.anneal_epochs) / self.anneal_epochs
        return float(self.start * (self.end / self.start) ** progress)
