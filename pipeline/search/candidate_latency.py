"""The latency objective of a merged search config, shared by POP and DNAS: a
:class:`~naslung.pipeline.search.candidate.CandidateProfiler` on the machine's latency table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from naslung.pipeline.search.candidate import CandidateProfiler
from naslung.pipeline.search.latency_table import LatencyTable, resolve_latency_table_path

__all__ = ["candidate_profiler"]


def candidate_profiler(
    config: Mapping[str, Any], train_config: Mapping[str, Any], known: Mapping[str, float] | None = None
) -> CandidateProfiler:
    """The latency function of a merged search config: its latency settings and the machine's latency table.

    Args:
        config: the merged search config (``latency_*`` keys, ``latency_table``).
        train_config: a candidate's merged training config (defines attention and head).
        known: latencies (ms per nodule) this search measured before (its journal), which win over the table.
    """
    table_path = resolve_latency_table_path(config.get("latency_table"))
    return CandidateProfiler(
        train_config,
        device=config.get("latency_device"),
        latency_batch=int(config["latency_batch"]),
        num_threads=config.get("latency_threads"),
        warmup=int(config["latency_warmup"]),
        repeats=int(config["latency_repeats"]),
        known=known,
        table=LatencyTable(table_path) if table_path is not None else None,
    )
