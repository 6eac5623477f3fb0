"""naslung.pipeline.search: Partial Order Pruning (POP) over the CBAM-3D residual search space of NAS-Lung."""

from __future__ import annotations

from naslung.pipeline.search.journal import JOURNAL_FIELDS, SearchJournal, write_pareto_csv
from naslung.pipeline.search.latency_table import LATENCY_TABLE_ENV, LatencyTable, resolve_latency_table_path
from naslung.pipeline.search.pareto import dominates, is_dominated, non_dominated_fronts, objectives, pareto_front
from naslung.pipeline.search.partial_order import arch_precedes, comparable, precedes, stage_embeds, strictly_precedes
from naslung.pipeline.search.pop import PartialOrderPruning, SearchResult, iteration_rng, run_search
from naslung.pipeline.search.rank_correlation import search_vs_retrained, spearman, write_rank_correlation
from naslung.pipeline.search.selection import SCORE_METRICS, SELECTION_RULES, select_candidates
from naslung.pipeline.search.space import (
    DEPTH_RULES,
    MONOTONE_MODES,
    Arch,
    SearchSpace,
    arch_from,
    arch_to_text,
    to_arch_spec,
)

__all__ = [
    "Arch",
    "SearchSpace",
    "arch_from",
    "arch_to_text",
    "to_arch_spec",
    "DEPTH_RULES",
    "MONOTONE_MODES",
    "precedes",
    "strictly_precedes",
    "comparable",
    "stage_embeds",
    "arch_precedes",
    "objectives",
    "dominates",
    "is_dominated",
    "pareto_front",
    "non_dominated_fronts",
    "SELECTION_RULES",
    "SCORE_METRICS",
    "select_candidates",
    "LATENCY_TABLE_ENV",
    "LatencyTable",
    "resolve_latency_table_path",
    "spearman",
    "search_vs_retrained",
    "write_rank_correlation",
    "PartialOrderPruning",
    "SearchResult",
    "iteration_rng",
    "run_search",
    "JOURNAL_FIELDS",
    "SearchJournal",
    "write_pareto_csv",
]
