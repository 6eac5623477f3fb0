"""A-Softmax (SphereFace) loss with its lambda annealing, and the plain softmax cross-entropy option.

The heads (:class:`AngularLinear`, :func:`classification_head`) live in :mod:`naslung.networks.heads` and are
re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.utils import look_up_option

from naslung.networks.errors import ConfigError
from naslung.networks.heads import (
    HEADS,
    MARGINS,
    AngularLinear,
    angular_margin_psi,
    classification_head,
    logits_from_output,
)

__all__ = [
    "MARGINS",
    "LOSSES",
    "angular_margin_psi",
    "logits_from_output",
    "AngularLinear",
    "HEADS",
    "classification_head",
    "LambdaSchedule",
    "AngularSoftmaxLoss",
    "SoftmaxCrossEntropyLoss",
    "build_loss",
]


@dataclass(frozen=True)
class LambdaSchedule:
    """Annealing of A-Softmax's target logit: ``lambda(it) = max(lambda_min, lambda_max * (1 + gamma it)^-power)``.

    SphereFace trains with the target logit ``(lambda ||x|| cos(theta) + ||x|| psi(theta)) / (1 + lambda)``: large
    lambda at the start (almost plain softmax, easy to optimise), decreasing over iterations towards the margin of
    eq. (4) (lambda = 0). The defaults (1500, 5, 0.1, 1) are those of the SphereFace PyTorch port that the
    NAS-Lung code uses; lambda reaches ``lambda_min`` after ``(lambda_max / lambda_min - 1) / gamma`` = 2990
    iterations. (SphereFace's Caffe release uses base 1000, gamma 0.12, power 1, lambda_min 5.)
    ``LambdaSchedule(0, 0)`` gives eq. (4) exactly.

    Args:
        lambda_max: lambda at iteration 0.
        lambda_min: floor of lambda.
        gamma: decay rate per iteration.
        power: decay exponent.

    Raises:
        ConfigError: when a value is negative or ``lambda_max < lambda_min``.
    """

    lambda_max: float = 1500.0
    lambda_min: float = 5.0
    gamma: float = 0.1
    power: float = 1.0

    def __post_init__(self) -> None:
        if min(self.lambda_max, self.lambda_min, self.gamma, self.power) < 0 or self.lambda_max < self.lambda_min:
            raise ConfigError(
                f"A-Softmax lambda schedule {self}: need 0 <= lambda_min <= lambda_max and gamma, power >= 0."
            )

    @classmethod
    def reaching_floor_at(
        cls, iteration: int, lambda_max: float = 1500.0, lambda_min: float = 5.0, power: float = 1.0
    ) -> LambdaSchedule:
        """The schedule whose lambda decays from ``lambda_max`` to ``lambda_min`` exactly at ``iteration``.

        ``gamma = ((lambda_max / lambda_min)^(1 / power) - 1) / iteration``. SphereFace's fixed gamma 0.1 reaches the
        floor after 2990 iterations whatever the run's length: a run of 4 epochs over 300 cubes (~80 iterations)
        ends at lambda ~ 170, where the margin barely acts. Scaling gamma to the run lets the margin bite in every
        run; a config gives ``iteration`` as a fraction of the run's iterations (``train.json``'s
        ``lambda_floor_fraction``).

        Raises:
            ConfigError: when ``iteration < 1`` or the values are invalid for :class:`LambdaSchedule`.
        """
        if iteration < 1 or lambda_min <= 0 or power <= 0:
            raise ConfigError(
                f"A-Softmax lambda schedule: need iteration >= 1, lambda_min > 0 and power > 0, got iteration "
                f"{iteration}, lambda_min {lambda_min}, power {power}."
            )
        gamma = ((lambda_max / lambda_min) ** (1.0 / power) - 1.0) / iteration
        return cls(lambda_max, lambda_min, gamma, power)

    def __call__(self, iteration: int) -> float:
        """Lambda at training iteration ``iteration`` (0-based)."""
        return max(self.lambda_min, self.lambda_max * (1.0 + self.gamma * iteration) ** (-self.power))


def _reduction(reduction: str) -> str:
    """Validate a loss reduction name."""
    try:
        return look_up_option(reduction, ("mean", "sum", "none"))
    except ValueError:
        raise ConfigError(f"loss reduction {reduction!r} is not supported; use 'mean', 'sum' or 'none'.") from None


def _class_index(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels (B,), (B, 1) or one-hot (B, K) as long class indices (B,)."""
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:
        y = y.argmax(dim=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ConfigError(f"loss: labels must be (B,), (B, 1) or one-hot (B, {num_classes}), got {tuple(y.shape)}.")
    return y.long()


class AngularSoftmaxLoss(nn.Module):
    """A-Softmax loss (SphereFace, Liu et al. 2017; Jiang et al. 2021, Sec. 3.3, eq. 4) with lambda annealing.

    ``L = -1/B sum_i log softmax(f_i)[y_i]`` with ``f_ij = ||x_i|| cos(theta_ij)`` for ``j != y_i`` and
    ``f_iy = (lambda ||x_i|| cos(theta_iy) + ||x_i|| psi(theta_iy)) / (1 + lambda)``; ``lambda`` follows
    :class:`LambdaSchedule` over training iterations and eq. (4) is the ``lambda = 0`` end.

    Use it as ``loss_function(y_pred, y)`` (e.g. in MONAI's ``SupervisedTrainer``) with a network whose head is
    :class:`AngularLinear` (``CBAMResNet3D(head="angular")``):

    * ``y_pred`` (B, 2, K), the training-mode output: the annealed A-Softmax above. The iteration counter (a
      buffer, so it is checkpointed with the loss's ``state_dict``) advances by one on every call whose
      ``y_pred`` requires grad, i.e. every training step.
    * ``y_pred`` (B, K), the eval-mode logits without grad (a validation loss): plain cross-entropy on
      ``||x|| cos(theta)``, the ``lambda -> infinity`` end.

    Args:
        lambda_max, lambda_min, gamma, power: the :class:`LambdaSchedule` (defaults 1500, 5, 0.1, 1).
        floor_iteration: when given, ``gamma`` is replaced so that lambda reaches ``lambda_min`` at this training
            iteration (:meth:`LambdaSchedule.reaching_floor_at`), e.g. half of the run's iterations.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ConfigError: for an invalid schedule; in ``forward``, when given trainable (B, K) logits (the network's head
            is not angular) or labels of the wrong shape.
    """

    def __init__(
        self,
        lambda_max: float = 1500.0,
        lambda_min: float = 5.0,
        gamma: float = 0.1,
        power: float = 1.0,
        floor_iteration: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if floor_iteration is None:
            self.schedule = LambdaSchedule(lambda_max, lambda_min, gamma, power)
        else:
            self.schedule = LambdaSchedule.reaching_floor_at(int(floor_iteration), lambda_max, lambda_min, power)
        self.reduction = _reduction(reduction)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    @property
    def current_lambda(self) -> float:
        """Lambda used by the next training step."""
        return self.schedule(int(self.iteration.item()))

    def forward(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of ``y_pred`` (B, 2, K) or (B, K) against labels ``y`` (B,), (B, 1) or one-hot (B, K)."""
        if y_pred.ndim == 2:
            if y_pred.requires_grad:
                raise ConfigError(
                    "AngularSoftmaxLoss got (B, K) logits in training; it needs the (B, 2, K) output of an "
                    "AngularLinear head: build the network with head='angular' (or use the 'softmax' loss)."
                )
            return F.cross_entropy(y_pred, _class_index(y, y_pred.shape[1]), reduction=self.reduction)
        if y_pred.ndim != 3 or y_pred.shape[1] != 2:
            raise ConfigError(
                f"AngularSoftmaxLoss expects (B, 2, K) from an AngularLinear head or (B, K) logits, "
                f"got {tuple(y_pred.shape)}."
            )
        cos_logits, psi_logits = y_pred[:, 0], y_pred[:, 1]
        target = _class_index(y, cos_logits.shape[1])
        lam = self.current_lambda
        one_hot = F.one_hot(target, cos_logits.shape[1]).to(cos_logits.dtype)
        logits = cos_logits + one_hot * (psi_logits - cos_logits) / (1.0 + lam)
        if y_pred.requires_grad:
            self.iteration += 1
        return F.cross_entropy(logits, target, reduction=self.reduction)


class SoftmaxCrossEntropyLoss(nn.Module):
    """Plain softmax cross-entropy (the paper's "Softmax loss" of Tables 2 and 4), for either head.

    With a linear head it is ``torch.nn.CrossEntropyLoss``; given the (B, 2, K) training output of an
    :class:`AngularLinear` head it uses the logits ``||x|| cos(theta)`` and ignores the margin.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _reduction(reduction)

    def forward(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``y_pred`` (B, K) or (B, 2, K) against labels (B,), (B, 1) or one-hot (B, K)."""
        logits = logits_from_output(y_pred)
        return F.cross_entropy(logits, _class_index(y, logits.shape[1]), reduction=self.reduction)


LOSSES: dict[str, type[nn.Module]] = {"asoftmax": AngularSoftmaxLoss, "softmax": SoftmaxCrossEntropyLoss}
"""Loss names a config can choose: ``"asoftmax"`` (eq. 4, needs ``head="angular"``) and ``"softmax"``."""


def build_loss(name: str = "asoftmax", **kwargs: Any) -> nn.Module:
    """Build a loss by name (see :data:`LOSSES`) with its keyword arguments.

    Raises:
        ConfigError: for an unknown name.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; use one of {sorted(LOSSES)}.")
    return LOSSES[key](**kwargs)
