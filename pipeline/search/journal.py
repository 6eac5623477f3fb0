"""The search journal: one JSON line per trained candidate (appended atomically), read back to resume a search."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from naslung.pipeline.atomic_io import append_jsonl, read_jsonl, write_csv
from naslung.pipeline.errors import DataError, SearchError
from naslung.pipeline.search.pareto import pareto_front
from naslung.pipeline.search.space import arch_to_text

__all__ = ["JOURNAL_FIELDS", "SearchJournal", "write_pareto_csv", "read_selected_specs"]

logger = logging.getLogger(__name__)

JOURNAL_FIELDS = (
    "spec",
    "params",
    "macs",
    "latency_ms",
    "f1",
    "accuracy",
    "sensitivity",
    "specificity",
    "auc",
    "seconds",
    "seed",
)
"""The standard fields of a journal record, in column order; records may carry more (``iteration``, ...)."""


def _ordered(record: Mapping[str, Any]) -> dict[str, Any]:
    out = {key: record[key] for key in JOURNAL_FIELDS if key in record}
    out.update((key, value) for key, value in record.items() if key not in out)
    return out


class SearchJournal:
    """Append-only JSON-lines log of the candidates a search has trained, and the file a search resumes from.

    Each line is one record: ``spec`` (paper notation, e.g. ``"[4,4,[4,4],[4,8],[8,8]]"``), ``params``, ``macs``,
    ``latency_ms``, ``f1``, ``accuracy``, ``sensitivity``, ``specificity``, ``auc``, ``seconds`` (training wall
    time), ``seed``, and any extra keys (the driver adds ``iteration`` and ``search_seed``). Lines are appended with
    :func:`naslung.pipeline.atomic_io.append_jsonl` (one write, flushed and fsynced), so a kill leaves at most a torn
    last line, which reading drops: that candidate counts as not trained.

    Latencies the search measured for *untrained* candidates (to prune them) go to a sidecar file
    ``<name>.latency.jsonl`` beside the journal, one line ``{"latency_ms": {spec: ms, ...}}`` per batch, so a
    resumed search prunes with the same numbers even when measured latency is noisy.

    Args:
        path: the journal file (``.jsonl``); its folder is created on the first append.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        name = self.path.name[: -len(".jsonl")] if self.path.name.endswith(".jsonl") else self.path.name
        self.latency_path = self.path.with_name(f"{name}.latency.jsonl")

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Append one trained candidate; ``spec`` is normalised to paper notation. Returns the stored record.

        Raises:
            SearchError: when the record has no ``spec``.
        """
        if "spec" not in record:
            raise SearchError(f"a journal record needs a 'spec' (paper notation); got keys {sorted(record)}")
        stored = _ordered({**record, "spec": arch_to_text(record["spec"])})
        append_jsonl(self.path, stored)
        return stored

    def records(self) -> list[dict[str, Any]]:
        """All complete records in the order they were appended (a torn last line is dropped).

        Raises:
            SearchError: when a record has no ``spec`` or a spec appears twice.
        """
        records = read_jsonl(self.path)
        seen: set[str] = set()
        for number, record in enumerate(records, start=1):
            if "spec" not in record:
                raise SearchError(f"{self.path}: record {number} has no 'spec'; remove or repair that line")
            record["spec"] = arch_to_text(record["spec"])
            if record["spec"] in seen:
                raise SearchError(
                    f"{self.path}: candidate {record['spec']} is recorded twice (record {number}); "
                    "remove the duplicate line"
                )
            seen.add(record["spec"])
        return records

    def done_specs(self) -> set[str]:
        """Paper-notation specs of the candidates already trained."""
        return {record["spec"] for record in self.records()}

    def __len__(self) -> int:
        return len(self.records())

    def exists(self) -> bool:
        """Whether the journal file exists."""
        return self.path.exists()

    def append_latencies(self, latencies: Mapping[str, float]) -> None:
        """Append measured latencies of untrained candidates (``{spec text: ms}``) as one line of the sidecar."""
        if latencies:
            append_jsonl(self.latency_path, {"latency_ms": {arch_to_text(k): float(v) for k, v in latencies.items()}})

    def latencies(self) -> dict[str, float]:
        """All latencies stored in the sidecar (later lines win)."""
        out: dict[str, float] = {}
        for number, line in enumerate(read_jsonl(self.latency_path), start=1):
            entries = line.get("latency_ms")
            if not isinstance(entries, dict):
                raise SearchError(f"{self.latency_path}: line {number} has no 'latency_ms' mapping; remove that line")
            out.update((arch_to_text(k), float(v)) for k, v in entries.items())
        return out


def write_pareto_csv(
    records: Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    latency_key: str = "latency_ms",
    score_key: str = "f1",
) -> Path:
    """Write the Pareto front of ``records`` (lower latency, higher score) as a CSV sorted by latency, atomically.

    Columns: the :data:`JOURNAL_FIELDS` present in any front record, then other keys in first-seen order.

    Args:
        records: trained-candidate records, e.g. :meth:`SearchJournal.records`.
        path: the CSV file to write.
        latency_key: latency column (lower is better).
        score_key: score column (higher is better).

    Returns:
        the path written.
    """
    front = [_ordered(r) for r in pareto_front(list(records), latency_key, score_key)]
    for record in front:
        if "spec" in record:
            record["spec"] = arch_to_text(record["spec"])
    fields: list[str] = [key for key in JOURNAL_FIELDS if any(key in r for r in front)]
    for record in front:
        fields.extend(key for key in record if key not in fields)
    rows = [{k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in front]
    logger.info("writing %d Pareto-front candidates to %s", len(rows), path)
    return write_csv(path, rows, fields)


def read_selected_specs(run_dir: str | os.PathLike) -> list[str]:
    """The specs the search selected for retraining (``RUN/search/selected.json``); ``[]`` before a search.

    Raises:
        DataError: naming the file, when it exists but cannot be read.
    """
    path = Path(run_dir) / "search" / "selected.json"
    if not path.is_file():
        return []
    try:
        return [str(s) for s in json.loads(path.read_text(encoding="utf-8")).get("specs", [])]
    except (OSError, json.JSONDecodeError, AttributeError) as err:
        raise DataError(f"cannot read the selected specs ({err}); re-run `naslung search`", path=str(path)) from err
