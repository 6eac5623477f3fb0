"""Speed/accuracy Pareto fronts of trained candidates: lower latency and higher score are better."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from naslung.pipeline.errors import SearchError

__all__ = ["objectives", "dominates", "is_dominated", "pareto_front", "non_dominated_fronts"]


def objectives(
    record: Mapping[str, Any], latency_key: str = "latency_ms", score_key: str = "f1"
) -> tuple[float, float]:
    """``(latency, score)`` of a record as finite floats.

    Raises:
        SearchError: when a key is missing or its value is not a finite number.
    """
    values = []
    for key in (latency_key, score_key):
        if key not in record:
            raise SearchError(f"record of {record.get('spec', '?')} has no {key!r}; the front needs it in every record")
        try:
            value = float(record[key])
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise SearchError(f"record of {record.get('spec', '?')}: {key}={record[key]!r} is not a finite number")
        values.append(value)
    return values[0], values[1]


def dominates(
    a: Mapping[str, Any], b: Mapping[str, Any], latency_key: str = "latency_ms", score_key: str = "f1"
) -> bool:
    """Whether ``a`` Pareto-dominates ``b``: no slower, no less accurate, and strictly better in one of the two."""
    lat_a, score_a = objectives(a, latency_key, score_key)
    lat_b, score_b = objectives(b, latency_key, score_key)
    return lat_a <= lat_b and score_a >= score_b and (lat_a < lat_b or score_a > score_b)


def is_dominated(
    record: Mapping[str, Any],
    others: Iterable[Mapping[str, Any]],
    latency_key: str = "latency_ms",
    score_key: str = "f1",
) -> bool:
    """Whether some record of ``others`` dominates ``record``."""
    return any(dominates(other, record, latency_key, score_key) for other in others)


def pareto_front(
    records: Iterable[Mapping[str, Any]], latency_key: str = "latency_ms", score_key: str = "f1"
) -> list[Mapping[str, Any]]:
    """The records no other record dominates, sorted by latency (then input order).

    Records with identical ``(latency, score)`` do not dominate each other, so all copies of a front point are
    kept. Runs in ``O(n log n)``.

    Args:
        records: mappings with ``latency_key`` (lower is better) and ``score_key`` (higher is better).
        latency_key: key of the latency, e.g. ``"latency_ms"``.
        score_key: key of the score, e.g. ``"f1"``.

    Raises:
        SearchError: when a record lacks a finite latency or score.
    """
    items = [(objectives(r, latency_key, score_key), i, r) for i, r in enumerate(records)]
    items.sort(key=lambda item: (item[0][0], -item[0][1], item[1]))
    front: list[Mapping[str, Any]] = []
    best_score = -math.inf
    best_point: tuple[float, float] | None = None
    for point, _, record in items:
        if point[1] > best_score:
            front.append(record)
            best_score, best_point = point[1], point
        elif point == best_point:
            front.append(record)
    return front


def non_dominated_fronts(
    records: Iterable[Mapping[str, Any]], latency_key: str = "latency_ms", score_key: str = "f1"
) -> list[list[Mapping[str, Any]]]:
    """Non-dominated sorting (Deb et al., NSGA-II): the Pareto front, then the front of what is left, and so on.

    Front 1 is :func:`pareto_front` of all records; front ``k + 1`` is the front of the records in no earlier
    front. Every record lies in exactly one front; each front is sorted by latency (then input order). Runs in
    ``O(k n log n)`` for ``k`` fronts.

    Args:
        records: mappings with ``latency_key`` (lower is better) and ``score_key`` (higher is better).
        latency_key: key of the latency.
        score_key: key of the score.

    Raises:
        SearchError: when a record lacks a finite latency or score.
    """
    left = list(records)
    fronts: list[list[Mapping[str, Any]]] = []
    while left:
        front = pareto_front(left, latency_key, score_key)
        taken = {id(r) for r in front}
        fronts.append(front)
        left = [r for r in left if id(r) not in taken]
    return fronts
