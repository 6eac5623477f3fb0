"""Decisions on probabilities of malignancy: the threshold, the confusion counts and the ensemble's majority vote.

The floor under :mod:`naslung.pipeline.metrics` and :mod:`naslung.pipeline.ensemble.voting`, which import these, so a
bundle and naslung decide a nodule the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from naslung.networks.errors import DataError

__all__ = [
    "BINARY_METRICS",
    "DEFAULT_THRESHOLD",
    "label_array",
    "confusion_counts",
    "probability_matrix",
    "majority_vote",
]

#: The metrics every report carries, in the paper's column order, then ROC AUC.
BINARY_METRICS: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "f1", "auc")

#: Probability of malignancy above which a network calls a nodule malignant (paper section 3.5).
DEFAULT_THRESHOLD = 0.5


def label_array(y_true: Any) -> np.ndarray:
    """``(N,)`` labels as an int64 array of 0 (benign) / 1 (malignant).

    Raises:
        DataError: when the array is not 1-D or holds a value other than 0 and 1.
    """
    labels = np.asarray(y_true)
    if labels.ndim != 1:
        raise DataError(f"labels must be a 1-D array of 0/1, got shape {labels.shape}")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise DataError(f"labels must be 0 (benign) or 1 (malignant), got values {sorted(set(labels.tolist()))}")
    return labels.astype(np.int64)


def confusion_counts(y_true: Any, y_pred: Any) -> dict[str, int]:
    """Counts of true/false positives/negatives, malignant (1) being positive.

    Args:
        y_true: ``(N,)`` labels 0/1.
        y_pred: ``(N,)`` predicted labels 0/1.

    Returns:
        ``{"tp", "fp", "tn", "fn"}`` as ints.

    Raises:
        DataError: for labels other than 0/1 or arrays of different lengths.
    """
    truth, predicted = label_array(y_true), label_array(y_pred)
    if truth.shape != predicted.shape:
        raise DataError(f"{truth.size} labels but {predicted.size} predictions")
    return {
        "tp": int(((predicted == 1) & (truth == 1)).sum()),
        "fp": int(((predicted == 1) & (truth == 0)).sum()),
        "tn": int(((predicted == 0) & (truth == 0)).sum()),
        "fn": int(((predicted == 0) & (truth == 1)).sum()),
    }


def probability_matrix(probabilities: Any) -> np.ndarray:
    """The members' probabilities as a float64 ``(n_models, n_nodules)`` array (a 1-D array is one model).

    Raises:
        DataError: when the array is not 2-D, is empty or holds values outside [0, 1].
    """
    matrix = np.asarray(probabilities, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.size == 0:
        raise DataError(f"probabilities must be an (n_models, n_nodules) array, got shape {matrix.shape}")
    if not np.isfinite(matrix).all() or (matrix < 0).any() or (matrix > 1).any():
        raise DataError("probabilities of malignancy must be finite and within [0, 1]; check the members' outputs")
    return matrix


def majority_vote(probabilities: Any, threshold: float = DEFAULT_THRESHOLD) -> dict[str, np.ndarray]:
    """Fuse the members' probabilities of malignancy by majority vote (paper section 3.5).

    Each member votes malignant when its probability is strictly greater than ``threshold`` (the arg-max of
    two softmax outputs, ties to benign, as in :func:`naslung.pipeline.metrics.binary_metrics`); the nodule
    is malignant when more than ``floor(n / 2)`` of the ``n`` members vote so. With an even ``n`` a tie
    (``n / 2`` votes) is therefore benign.

    Args:
        probabilities: ``(n_models, n_nodules)`` probabilities of malignancy (a 1-D array is one model).
        threshold: each member's decision threshold.

    Returns:
        dict of ``(n_nodules,)`` arrays: ``prediction`` (0/1 int), ``votes`` (malignant votes, int),
        ``vote_fraction`` (votes / n), ``mean_probability`` (mean over members) and ``disagreement``
        (bool, True when the members did not all vote alike).

    Raises:
        DataError: when the array is not 2-D, is empty or holds values outside [0, 1].
    """
    matrix = probability_matrix(probabilities)
    n_models = matrix.shape[0]
    votes = (matrix > threshold).sum(axis=0).astype(np.int64)
    return {
        "prediction": (votes > n_models // 2).astype(np.int64),
        "votes": votes,
        "vote_fraction": votes / n_models,
        "mean_probability": matrix.mean(axis=0),
        "disagreement": (votes > 0) & (votes < n_models),
    }
