"""Does the search's ranking survive retraining? Spearman's rank correlation of search-time and retrained scores."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.errors import DataError
from naslung.pipeline.search.candidate import best_validation_epoch
from naslung.pipeline.training.step import fold_dir_name, spec_slug

__all__ = [
    "RANK_CORRELATION_FILE",
    "MIN_NETWORKS",
    "spearman",
    "retrained_validation_score",
    "search_vs_retrained",
    "write_rank_correlation",
]

logger = logging.getLogger(__name__)

#: Where :func:`write_rank_correlation` writes, relative to the run directory.
RANK_CORRELATION_FILE = Path("search") / "rank_correlation.json"

#: Fewest networks for which a rank correlation is reported (with 2 it can only be -1 or +1).
MIN_NETWORKS = 3


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation of two equally long samples: Pearson's r of their ranks (ties: mean ranks).

    Returns:
        the coefficient in [-1, 1], or ``None`` when it is undefined (fewer than 2 values, or all values of one
        sample tie).

    Raises:
        DataError: when the samples differ in length.
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"spearman: {a.size} values against {b.size}")
    if a.size < 2:
        return None
    ra, rb = rankdata(a) - (a.size + 1) / 2, rankdata(b) - (b.size + 1) / 2
    norm = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    if norm == 0.0:
        return None
    return float(np.clip((ra * rb).sum() / norm, -1.0, 1.0))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {path} ({err}); re-run the step that writes it", path=str(path)) from err


def _fold_score(metrics: Mapping[str, Any], metric: str) -> float | None:
    best = best_validation_epoch(metrics.get("history") or [], metric)
    value = best[1].get(metric) if best is not None else (metrics.get("val") or {}).get(metric)
    try:
        number = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def retrained_validation_score(
    network_dir: str | os.PathLike, metric: str, folds: Sequence[int] | None = None
) -> tuple[float | None, dict[int, float]]:
    """The retrained score of one network: its validation ``metric`` averaged over its retrained folds.

    Each fold's score is the best validation epoch's ``metric`` (:func:`best_validation_epoch` on the fold's
    ``metrics.json`` history; without a history, the saved checkpoint's ``val``), the rule that scores a search
    candidate. The validation split is carved from the fold's training folds: the held-out test fold is never
    used.

    Args:
        network_dir: ``RUN/train/<slug>`` (``fold_<k>/metrics.json`` inside).
        metric: ``"auc"``, ``"f1"``, ...
        folds: the folds to read (``None``: ``cv_metrics.json``'s folds, else every ``fold_<k>`` folder).

    Returns:
        ``(mean over folds with a finite score or None, {fold: score})``.
    """
    root = Path(network_dir)
    if folds is None:
        cv_path = root / "cv_metrics.json"
        if cv_path.is_file():
            folds = [int(f) for f in _read_json(cv_path).get("folds", [])]
        else:
            folds = sorted(int(p.name[len("fold_") :]) for p in root.glob("fold_*") if p.name[len("fold_") :].isdigit())
    per_fold: dict[int, float] = {}
    for fold in folds:
        path = root / fold_dir_name(int(fold)) / "metrics.json"
        if not path.is_file():
            continue
        score = _fold_score(_read_json(path), metric)
        if score is not None:
            per_fold[int(fold)] = score
    mean = float(np.mean(list(per_fold.values()))) if per_fold else None
    return mean, per_fold


def search_vs_retrained(run_dir: str | os.PathLike, metric: str | None = None) -> dict[str, Any]:
    """Spearman's rank correlation between the selected candidates' search-time and retrained validation scores.

    The search-time score is the one the search ranked by (``RUN/search/selected.json``: ``score_key`` and each
    candidate's value, its best validation epoch after ``epochs_per_candidate`` epochs on the search folds); the
    retrained score is :func:`retrained_validation_score` of ``RUN/train/<slug>`` in the same metric. A high
    correlation means the short search training ranks networks as full training does.

    Args:
        run_dir: the run directory.
        metric: the metric to compare (``None``: the search's ``score_key``).

    Returns:
        ``{"metric", "method": "spearman", "rho", "n", "reason", "networks": [...]}``: ``rho`` is ``None`` with a
        ``reason`` when undefined (fewer than :data:`MIN_NETWORKS` networks with both scores, or all scores of one
        side tie); each network lists ``spec``, ``search_score``, ``retrained_score`` and ``retrained_folds``.

    Raises:
        DataError: when ``selected.json`` is missing or unreadable.
    """
    run = Path(run_dir)
    selected_path = run / "search" / "selected.json"
    if not selected_path.is_file():
        raise DataError(f"no search selection at {selected_path}; run the search step first", path=str(selected_path))
    selected = _read_json(selected_path)
    search_metric = str(selected.get("score_key") or "f1")
    metric = metric or search_metric
    rows = {str(c.get("spec")): c for c in selected.get("candidates") or []}
    networks = []
    for spec in [str(s) for s in selected.get("specs", [])]:
        value = rows.get(spec, {}).get(metric)
        search_score = float(value) if value is not None and math.isfinite(float(value)) else None
        retrained, per_fold = retrained_validation_score(run / "train" / spec_slug(spec), metric)
        networks.append(
            {
                "spec": spec,
                "search_score": search_score,
                "retrained_score": retrained,
                "retrained_folds": {str(k): v for k, v in per_fold.items()},
            }
        )
    paired = [n for n in networks if n["search_score"] is not None and n["retrained_score"] is not None]
    rho: float | None = None
    reason: str | None = None
    if len(paired) < MIN_NETWORKS:
        reason = (
            f"{len(paired)} network(s) with both a search-time and a retrained {metric}; a rank correlation needs at "
            f"least {MIN_NETWORKS}"
        )
    else:
        rho = spearman([n["search_score"] for n in paired], [n["retrained_score"] for n in paired])
        if rho is None:
            reason = f"undefined: all search-time or all retrained {metric} values tie"
    if metric != search_metric:
        logger.info("comparing %s although the search ranked by %s", metric, search_metric)
    return {
        "metric": metric,
        "search_metric": search_metric,
        "method": "spearman",
        "rho": rho,
        "n": len(paired),
        "reason": reason,
        "search_score": f"validation {metric} at the best epoch of the search-time training (search/selected.json)",
        "retrained_score": (
            f"validation {metric} at each retrained fold's best epoch, mean over folds "
            "(train/<slug>/fold_<k>/metrics.json); never the test fold"
        ),
        "networks": networks,
    }


def write_rank_correlation(run_dir: str | os.PathLike, metric: str | None = None) -> dict[str, Any]:
    """:func:`search_vs_retrained`, written atomically to ``RUN/search/rank_correlation.json``; returns it."""
    result = search_vs_retrained(run_dir, metric)
    write_json(Path(run_dir) / RANK_CORRELATION_FILE, result)
    return result
