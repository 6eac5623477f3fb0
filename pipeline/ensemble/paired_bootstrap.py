"""How sure a lead over a reference model is: a paired bootstrap of the difference in accuracy and AUC over the
held-out nodules, resampled within each fold and stratified by label."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from naslung.pipeline.errors import DataError

__all__ = ["BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "auc_of_rows", "paired_bootstrap"]

BOOTSTRAP_RESAMPLES = 2000
"""Resamples of the held-out nodules per interval."""

BOOTSTRAP_SEED = 0
"""Seed of the resampling, so a run's interval is the same every time it is computed."""


def auc_of_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``scores`` (R, n) against ``labels`` (R, n) of 0/1, ties counted as half (the
    Mann-Whitney statistic, as ``sklearn.metrics.roc_auc_score``). Every row needs both classes."""
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    if np.any(positives == 0) or np.any(negatives == 0):
        raise DataError("AUC needs both classes in every row")
    ranks = rankdata(scores, axis=1)
    rank_sum = (ranks * labels).sum(axis=1)
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def _check_fold(fold: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays = {
        key: np.asarray(fold[key], dtype=float)
        for key in ("labels", "model_score", "model_prediction", "reference_score", "reference_prediction")
    }
    sizes = {key: a.shape for key, a in arrays.items()}
    if len(set(sizes.values())) != 1 or arrays["labels"].ndim != 1:
        raise DataError(f"fold {fold.get('fold')}: the per-nodule arrays differ in shape: {sizes}")
    labels = arrays["labels"]
    if not np.all((labels == 0) | (labels == 1)) or labels.min() == labels.max():
        raise DataError(f"fold {fold.get('fold')}: labels must be 0/1 with both classes present")
    return arrays


def paired_bootstrap(
    folds: Sequence[Mapping[str, Any]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile interval of ``model - reference``, mean over folds, for accuracy and AUC.

    Each resample draws, in every fold, its malignant and its benign nodules with replacement (as many of each as
    the fold holds), scores both models on the same draw, and averages the per-fold differences over the folds,
    as the run's ``mean ± std`` rows do. The spread of these means shows how much of a lead the held-out nodules
    can tell from chance; it says nothing about other data.

    Args:
        folds: one mapping per held-out fold with ``fold`` and per-nodule arrays of equal length: ``labels``
            (0/1), ``model_score`` and ``reference_score`` (ranked for the AUC), ``model_prediction`` and
            ``reference_prediction`` (0/1, for the accuracy).
        resamples: bootstrap resamples.
        seed: seed of the draws.
        level: coverage of the interval.

    Returns:
        ``{"resamples", "seed", "level", "resampled": "nodules within each fold, stratified by label",
        "accuracy": stats, "auc": stats}``, each ``stats`` holding ``observed`` (the difference on the nodules as
        they are), ``low`` and ``high`` (the interval, fractions) and ``ahead_fraction`` (share of resamples where
        the model is ahead).

    Raises:
        DataError: no folds, arrays of different lengths, or a fold without both classes.
    """
    if not folds:
        raise DataError("a paired bootstrap needs at least one fold")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise DataError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    rng = np.random.default_rng(seed)
    observed = {"accuracy": [], "auc": []}
    draws = {"accuracy": np.zeros(resamples), "auc": np.zeros(resamples)}
    for fold in folds:
        arrays = _check_fold(fold)
        labels = arrays["labels"]
        correct = {side: (arrays[f"{side}_prediction"] == labels).astype(float) for side in ("model", "reference")}
        observed["accuracy"].append(correct["model"].mean() - correct["reference"].mean())
        as_row = labels[None]
        observed["auc"].append(
            float(
                auc_of_rows(as_row, arrays["model_score"][None])[0]
                - auc_of_rows(as_row, arrays["reference_score"][None])[0]
            )
        )
        rows = np.concatenate(
            [
                rng.choice(np.flatnonzero(labels == label), size=(resamples, int((labels == label).sum())))
                for label in (1, 0)
            ],
            axis=1,
        )
        drawn_labels = labels[rows]
        draws["accuracy"] += correct["model"][rows].mean(axis=1) - correct["reference"][rows].mean(axis=1)
        draws["auc"] += auc_of_rows(drawn_labels, arrays["model_score"][rows]) - auc_of_rows(
            drawn_labels, arrays["reference_score"][rows]
        )
    tail = (1.0 - level) / 2.0
    result: dict[str, Any] = {
        "resamples": int(resamples),
        "seed": int(seed),
        "level": float(level),
        "resampled": "nodules within each fold, stratified by label",
    }
    for metric in ("accuracy", "auc"):
        means = draws[metric] / len(folds)
        result[metric] = {
            "observed": float(np.mean(observed[metric])),
            "low": float(np.quantile(means, tail)),
            "high": float(np.quantile(means, 1.0 - tail)),
            "ahead_fraction": float(np.mean(means > 0)),
        }
    return result
