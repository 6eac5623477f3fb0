"""Majority-vote ensembles of nodule classifiers (paper section 3.5), the ensemble-size study (section 4.6,
Fig. 7) and the per-nodule ensemble table."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung.bundles.runtime.decisions import majority_vote, probability_matrix
from naslung.pipeline.atomic_io import write_csv
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.metrics import BINARY_METRICS, DEFAULT_THRESHOLD, binary_metrics, summarise_folds
from naslung.pipeline.progress import Progress, no_progress

__all__ = ["majority_vote", "ensemble_metrics", "ensemble_size_study", "ensemble_table_rows", "write_ensemble_table"]

logger = logging.getLogger(__name__)


def ensemble_metrics(
    probabilities: Any, labels: Any, threshold: float = DEFAULT_THRESHOLD, folds: Any | None = None
) -> dict[str, float]:
    """Metrics of the majority-vote ensemble; AUC is taken on the members' mean probability.

    Args:
        probabilities: ``(n_models, n_nodules)`` probabilities of malignancy.
        labels: ``(n_nodules,)`` labels, 1 = malignant.
        threshold: each member's decision threshold.
        folds: optional ``(n_nodules,)`` fold id of each nodule; the metrics are then computed per fold and
            averaged, as the paper reports folds 1-5.

    Returns:
        ``{metric: value}`` for :data:`naslung.pipeline.metrics.BINARY_METRICS`.
    """
    vote = majority_vote(probabilities, threshold)
    truth = np.asarray(labels)
    if truth.shape != vote["prediction"].shape:
        raise DataError(f"{truth.size} labels but {vote['prediction'].size} nodules in the probabilities")
    if folds is None:
        result = binary_metrics(truth, vote["mean_probability"], threshold, y_pred=vote["prediction"])
        return {name: float(result[name]) for name in BINARY_METRICS}
    fold_ids = np.asarray(folds)
    if fold_ids.shape != truth.shape:
        raise DataError(f"{fold_ids.size} fold ids but {truth.size} labels")
    per_fold = []
    for fold in np.unique(fold_ids):
        mask = fold_ids == fold
        per_fold.append(binary_metrics(truth[mask], vote["mean_probability"][mask], y_pred=vote["prediction"][mask]))
    summary = summarise_folds(per_fold, keys=BINARY_METRICS)
    return {name: summary[f"{name}_mean"] for name in BINARY_METRICS}


def ensemble_size_study(
    probabilities: Any,
    labels: Any,
    sizes: Sequence[int] = (1, 3, 5, 7, 9),
    draws: int = 10,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    folds: Any | None = None,
    ddof: int = 1,
    progress: Progress = no_progress,
) -> list[dict[str, float | int]]:
    """Performance against the number of ensemble members (paper section 4.6, Fig. 7).

    For each size ``n``, ``draws`` times: pick ``n`` distinct members at random (without replacement within
    a draw; draws are independent, so the same subset can recur), fuse them with :func:`majority_vote` and
    score them with :func:`ensemble_metrics`. Each row holds the mean and std over the draws; when
    ``n`` equals the number of members every draw is the full ensemble and the std is 0.

    Args:
        probabilities: ``(n_models, n_nodules)`` probabilities of malignancy.
        labels: ``(n_nodules,)`` labels, 1 = malignant.
        sizes: ensemble sizes to study.
        draws: random subsets per size (the paper uses 10).
        seed: seed of the ``numpy.random.default_rng`` drawing the subsets.
        threshold: each member's decision threshold.
        folds: optional ``(n_nodules,)`` fold ids; see :func:`ensemble_metrics`.
        ddof: delta degrees of freedom of the std over draws.
        progress: wraps the loop over sizes.

    Returns:
        one dict per size: ``size``, ``draws``, and ``<metric>_mean`` / ``<metric>_std`` for each metric
        (fractions in [0, 1]).

    Raises:
        ConfigError: when a size is below 1 or above the number of members, or ``draws`` < 1.
    """
    matrix = probability_matrix(probabilities)
    n_models = matrix.shape[0]
    if draws < 1:
        raise ConfigError(f"draws={draws}: the ensemble-size study needs at least one draw per size")
    bad = [size for size in sizes if not 1 <= int(size) <= n_models]
    if bad:
        raise ConfigError(f"ensemble sizes {bad} are outside 1..{n_models} (the number of members); drop them")
    rng = np.random.default_rng(seed)
    rows: list[dict[str, float | int]] = []
    for size in progress(list(sizes), total=len(sizes), desc="ensemble sizes"):
        per_draw = []
        for _ in range(draws):
            members = rng.choice(n_models, size=int(size), replace=False)
            per_draw.append(ensemble_metrics(matrix[np.sort(members)], labels, threshold, folds))
        summary = summarise_folds(per_draw, keys=BINARY_METRICS, ddof=ddof)
        row: dict[str, float | int] = {"size": int(size), "draws": draws}
        row.update({k: v for k, v in summary.items() if k != "n_folds"})
        rows.append(row)
        logger.info("ensemble size %d: F1 %.4f +- %.4f", size, row["f1_mean"], row["f1_std"])
    return rows


def ensemble_table_rows(
    nodule_ids: Sequence[Any],
    labels: Any,
    probabilities: Any,
    member_names: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-nodule rows of the ensemble table and their field names.

    Fields: ``nodule_id``, ``label``, ``prob_<member>`` for each member, ``votes``, ``vote_fraction``,
    ``mean_probability``, ``prediction``, ``correct`` and ``disagreement`` (members not unanimous).

    Args:
        nodule_ids: ``n_nodules`` identifiers.
        labels: ``(n_nodules,)`` labels, 1 = malignant.
        probabilities: ``(n_models, n_nodules)`` probabilities of malignancy.
        member_names: ``n_models`` names (default ``model_1`` ...).
        threshold: each member's decision threshold.
    """
    matrix = probability_matrix(probabilities)
    n_models, n_nodules = matrix.shape
    truth = np.asarray(labels).astype(np.int64)
    if len(nodule_ids) != n_nodules or truth.shape != (n_nodules,):
        raise DataError(
            f"{len(nodule_ids)} nodule ids and {truth.size} labels for {n_nodules} nodules in the probabilities"
        )
    names = list(member_names) if member_names is not None else [f"model_{i + 1}" for i in range(n_models)]
    if len(names) != n_models or len(set(names)) != n_models:
        raise DataError(f"need {n_models} distinct member names, got {names}")
    vote = majority_vote(matrix, threshold)
    member_fields = [f"prob_{name}" for name in names]
    fieldnames = ["nodule_id", "label", *member_fields, "votes", "vote_fraction", "mean_probability"]
    fieldnames += ["prediction", "correct", "disagreement"]
    rows = []
    for j, nodule_id in enumerate(nodule_ids):
        row: dict[str, Any] = {"nodule_id": nodule_id, "label": int(truth[j])}
        row.update({field: round(float(matrix[i, j]), 6) for i, field in enumerate(member_fields)})
        row.update(
            votes=int(vote["votes"][j]),
            vote_fraction=round(float(vote["vote_fraction"][j]), 6),
            mean_probability=round(float(vote["mean_probability"][j]), 6),
            prediction=int(vote["prediction"][j]),
            correct=int(vote["prediction"][j] == truth[j]),
            disagreement=int(bool(vote["disagreement"][j])),
        )
        rows.append(row)
    return rows, fieldnames


def write_ensemble_table(
    path: str | os.PathLike,
    nodule_ids: Sequence[Any],
    labels: Any,
    probabilities: Any,
    member_names: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> Path:
    """Write the per-nodule ensemble table (see :func:`ensemble_table_rows`) as CSV atomically; returns the path."""
    rows, fieldnames = ensemble_table_rows(nodule_ids, labels, probabilities, member_names, threshold)
    return write_csv(path, rows, fieldnames)
