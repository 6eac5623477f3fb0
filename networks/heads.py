"""Classification heads of naslung's networks: a plain linear layer or SphereFace's angular layer (A-Softmax)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.utils import look_up_option

from naslung.networks.errors import ConfigError

__all__ = ["MARGINS", "angular_margin_psi", "logits_from_output", "AngularLinear", "HEADS", "classification_head"]

MARGINS = (1, 2, 3, 4)
"""Angular margins m supported by :class:`AngularLinear` (SphereFace's integer margins)."""


def angular_margin_psi(cos_theta: torch.Tensor, margin: int) -> torch.Tensor:
    """SphereFace's monotonic margin function ``psi(theta) = (-1)^k cos(m theta) - 2k`` (Liu et al. 2017, eq. 7).

    ``k = floor(m theta / pi)`` in ``{0, ..., m-1}`` makes ``psi`` decrease monotonically on ``[0, pi]`` (from 1 to
    ``1 - 2m``); ``cos(m theta)`` is evaluated as the Chebyshev polynomial ``T_m(cos theta)`` so the gradient never
    passes through ``acos``. ``k`` is piecewise constant and carries no gradient.

    Args:
        cos_theta: cosines of the angles, any shape, values in [-1, 1].
        margin: m, one of 1, 2, 3, 4.

    Returns:
        ``psi(theta)``, same shape as ``cos_theta``.
    """
    c = cos_theta
    if margin == 1:
        cos_m_theta = c
    elif margin == 2:
        cos_m_theta = 2 * c**2 - 1
    elif margin == 3:
        cos_m_theta = (4 * c**2 - 3) * c
    elif margin == 4:
        c2 = c**2
        cos_m_theta = 8 * c2 * c2 - 8 * c2 + 1
    else:
        raise ValueError("angular margin m must be one of 1, 2, 3, 4")
    theta = torch.acos(c.detach().clamp(-1.0, 1.0))
    k = torch.floor(margin * theta / math.pi).clamp(max=margin - 1)
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
    return sign * cos_m_theta - 2.0 * k


def logits_from_output(y_pred: torch.Tensor) -> torch.Tensor:
    """Ordinary (B, K) logits from a network output, whichever head and mode produced it.

    Args:
        y_pred: (B, K) logits, or the (B, 2, K) training-mode output of :class:`AngularLinear`, of which
            ``y_pred[:, 0]`` are the logits ``||x|| cos(theta_j)``.
    """
    return y_pred[:, 0] if y_pred.ndim == 3 else y_pred


class AngularLinear(nn.Module):
    """The final angular layer of A-Softmax (SphereFace, Liu et al. 2017; Jiang et al. 2021, Sec. 3.3, eq. 4).

    Class weights ``W_j`` are normalised to unit length and there is no bias, so ``W_j . x = ||x|| cos(theta_j)``.

    * eval mode: returns the logits ``||x|| cos(theta_j)``, shape (B, K). Softmax/argmax apply as usual, and this
      is the only path TorchScript freezing and ONNX export see.
    * training mode: returns (B, 2, K) stacking ``||x|| cos(theta_j)`` (index 0) and ``||x|| psi(theta_j)``
      (index 1), which :class:`AngularSoftmaxLoss` combines with the label. The margin lives in this layer so the
      loss stays an ordinary ``loss(y_pred, y)`` for MONAI's ``SupervisedTrainer``; metrics computed on training
      outputs should go through :func:`logits_from_output`.

    Args:
        in_features: length F of the feature vector x.
        out_features: number of classes K.
        margin: angular margin m in {1, 2, 3, 4}; the paper uses 4.

    Shapes:
        input ``x``: (B, F); output: (B, K) in eval mode, (B, 2, K) in training mode.

    Raises:
        ConfigError: for an unsupported margin or non-positive sizes.
    """

    def __init__(self, in_features: int, out_features: int, margin: int = 4) -> None:
        super().__init__()
        if margin not in MARGINS:
            raise ConfigError(f"AngularLinear: margin m must be one of {MARGINS} (the paper uses 4), got {margin!r}.")
        if in_features < 1 or out_features < 1:
            raise ConfigError(f"AngularLinear: sizes must be positive, got {in_features} -> {out_features}.")
        self.in_features = in_features
        self.out_features = out_features
        self.margin = margin
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map features (B, F) to logits (B, K) in eval mode or to (B, 2, K) in training mode."""
        logits = F.linear(x, F.normalize(self.weight, dim=1))
        if not self.training:
            return logits
        x_norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        cos_theta = (logits / x_norm.clamp_min(1e-12)).clamp(-1.0, 1.0)
        psi = angular_margin_psi(cos_theta, self.margin)
        return torch.stack([logits, psi * x_norm], dim=1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, margin={self.margin}"


HEADS = ("linear", "angular")
"""Classification heads every network of the factory takes: a plain ``nn.Linear`` (softmax) or
:class:`AngularLinear` (A-Softmax)."""


def classification_head(head: str, in_features: int, num_classes: int, margin: int = 4) -> nn.Module:
    """The final layer ``head`` (one of :data:`HEADS`) mapping (B, in_features) features to (B, num_classes).

    Raises:
        ConfigError: for an unknown head (or, through :class:`AngularLinear`, a bad margin or size).
    """
    try:
        head = look_up_option(head, HEADS)
    except ValueError:
        raise ConfigError(f"head {head!r} is not supported; use one of {HEADS}.") from None
    if head == "angular":
        return AngularLinear(in_features, num_classes, margin=margin)
    return nn.Linear(in_features, num_classes)
