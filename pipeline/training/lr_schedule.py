"""The learning-rate schedule of naslung's training config (``lr_scheduler`` in ``configs/train.json``).

A module of its own so that a bundle's fine-tuning config can build the schedule without the training step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import look_up_option
from torch.optim import lr_scheduler

from naslung.pipeline.errors import ConfigError

__all__ = ["LR_SCHEDULES", "build_lr_scheduler"]


LR_SCHEDULES = ("cosine", "step", "constant")
"""``lr_schedule`` values of the training config, see :func:`build_lr_scheduler`."""


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str = "cosine",
    total_iterations: int = 1,
    warmup_iterations: int = 0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    min_lr_fraction: float = 0.01,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A learning-rate schedule stepped once per training iteration (``LrScheduleHandler(epoch_level=False)``).

    * ``"cosine"``: linear warm-up from ``lr / 10`` over ``warmup_iterations``, then cosine annealing to
      ``min_lr_fraction * lr`` at ``total_iterations`` (Loshchilov & Hutter 2017), so a run of any length ends
      at a small learning rate instead of wherever a constant rate leaves the weights.
    * ``"step"``: ``lr`` multiplied by ``gamma`` at each iteration of ``milestones``.
    * ``"constant"``: ``lr`` throughout (the paper's Adam at 2e-4).

    Args:
        optimizer: the optimiser whose ``lr`` is the peak learning rate.
        schedule: one of :data:`LR_SCHEDULES`.
        total_iterations: training iterations of the whole run (epochs x iterations per epoch).
        warmup_iterations: iterations of linear warm-up (cosine only).
        milestones: iterations at which ``step`` decays.
        gamma: decay factor of ``step``.
        min_lr_fraction: final learning rate of ``cosine`` as a fraction of the peak.

    Raises:
        ConfigError: for an unknown schedule or non-positive ``total_iterations``.
    """
    try:
        schedule = look_up_option(schedule, LR_SCHEDULES)
    except ValueError:
        raise ConfigError(f"unknown lr_schedule {schedule!r}; use one of {LR_SCHEDULES}") from None
    if total_iterations < 1:
        raise ConfigError(f"lr schedule: total_iterations must be positive, got {total_iterations}")
    if schedule == "step":
        return lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    if schedule == "constant":
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    warmup = max(0, min(int(warmup_iterations), total_iterations - 1))
    base_lr = optimizer.param_groups[0]["lr"]
    cosine = lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, total_iterations - warmup), eta_min=base_lr * min_lr_fraction
    )
    if warmup == 0:
        return cosine
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
