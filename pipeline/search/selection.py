"""Which trained candidates a search hands to retraining: the latency/score Pareto fronts (default) or the top n."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from naslung.pipeline.errors import ConfigError
from naslung.pipeline.search.pareto import non_dominated_fronts

__all__ = ["SELECTION_RULES", "SCORE_METRICS", "select_candidates"]

#: Selection rules: ``"pareto"`` (fronts of latency and score, the default) and ``"top_n"`` (score only).
SELECTION_RULES = ("pareto", "top_n")

#: Validation metrics a search may rank candidates by (``score_metric`` of the search config).
SCORE_METRICS = ("auc", "f1", "accuracy", "sensitivity", "specificity")


def _finite(value: Any) -> float:
    try:
        number = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        number = math.nan
    return number if math.isfinite(number) else -math.inf


def select_candidates(
    records: Iterable[Mapping[str, Any]],
    top_n: int,
    latency_budget_ms: float | None = None,
    score_key: str = "auc",
    latency_key: str = "latency_ms",
    rule: str = "pareto",
) -> list[dict[str, Any]]:
    """``top_n`` trained candidates within the latency budget, by the Pareto fronts or by score alone.

    NAS-Lung picks its ensemble members among "networks with a good trade-off of accuracy and speed" (sec. 3.4):

    - ``"pareto"`` (default): the candidates are sorted into non-dominated fronts of (lower latency, higher
      score) (:func:`~naslung.pipeline.search.pareto.non_dominated_fronts`). Whole fronts are taken in order (the
      Pareto front first, then the front of the rest, ...) while they fit in ``top_n``; of the first front that
      does not fit, its best-scoring members fill the remaining places. Within a front, candidates are listed by
      score. Each returned record carries ``front_rank`` (1 = the Pareto front).
    - ``"top_n"``: the ``top_n`` best scores, whatever their latency.

    Ties in score are broken by higher accuracy, then lower latency, then the spec text, so the selection depends
    only on the records. Candidates whose score is missing or not finite rank after all others (in the last front).

    Args:
        records: trained-candidate records (the journal): ``spec``, ``latency_key``, ``score_key``, ``accuracy``.
        top_n: how many to keep (>= 0).
        latency_budget_ms: keep only candidates with latency <= this (ms per nodule); ``None``: any latency.
        score_key: the validation metric to rank by (higher is better), e.g. ``"auc"``.
        latency_key: the latency field (lower is better).
        rule: ``"pareto"`` or ``"top_n"``.

    Raises:
        ConfigError: for a negative ``top_n`` or an unknown ``rule``.
    """
    if top_n < 0:
        raise ConfigError(f"select_top_n must be >= 0, got {top_n}")
    if rule not in SELECTION_RULES:
        raise ConfigError(f"select {rule!r} is not one of {SELECTION_RULES}; set the search config's 'select'")

    def by_score(record: Mapping[str, Any]) -> tuple[float, float, float, str]:
        return (
            -_finite(record.get(score_key)),
            -_finite(record.get("accuracy")),
            float(record[latency_key]),
            str(record["spec"]),
        )

    eligible = [
        dict(r) for r in records if latency_budget_ms is None or float(r[latency_key]) <= float(latency_budget_ms)
    ]
    if rule == "top_n":
        return sorted(eligible, key=by_score)[:top_n]
    ranked = [r for r in eligible if _finite(r.get(score_key)) > -math.inf]
    unranked = [r for r in eligible if _finite(r.get(score_key)) == -math.inf]
    fronts = [list(front) for front in non_dominated_fronts(ranked, latency_key, score_key)]
    if unranked:
        fronts.append(unranked)
    selected: list[dict[str, Any]] = []
    for rank, front in enumerate(fronts, start=1):
        if len(selected) >= top_n:
            break
        for record in sorted(front, key=by_score)[: top_n - len(selected)]:
            selected.append({**record, "front_rank": rank})
    return selected
