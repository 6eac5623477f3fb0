"""What both search strategies (POP in :mod:`~naslung.pipeline.search.runner`, DNAS in
:mod:`~naslung.pipeline.search.dnas`) check and write in a search folder: ``settings.json`` and ``selected.json``."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from naslung.pipeline.errors import SearchError

__all__ = ["check_search_settings", "table_row", "selected_payload"]


def check_search_settings(
    out: Path, settings: Mapping[str, Any], strategy: str, resuming: Callable[[], bool], state: Path
) -> bool:
    """Refuse a search folder that holds the other strategy's search or, when resuming, other settings.

    Args:
        out: the search folder; its ``settings.json`` is what a search there was started with.
        settings: this search's settings (``strategy`` missing means POP).
        strategy: ``"pop"`` or ``"dnas"``.
        resuming: tells whether ``state`` (the journal or the supernet checkpoint) holds finished work to continue;
            called only once the folder is known to hold this strategy's search (the other strategy's journal
            need not parse as this one's).
        state: the file a resumed search continues from, named in the error.

    Returns:
        whether ``settings.json`` was there.

    Raises:
        SearchError: the folder holds the other strategy's search, or resuming with changed settings.
    """
    path = out / "settings.json"
    if not path.is_file():
        return False
    stored = json.loads(path.read_text(encoding="utf-8"))
    found = stored.get("strategy", "pop")
    if found != strategy:
        raise SearchError(
            f"{out} holds a {found.upper()} search; use a new --out folder for a {strategy.upper()} search"
        )
    changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
    if changed and resuming():
        raise SearchError(
            f"{state}: was written with other settings ({', '.join(changed)} differ from {path}); "
            "use the same settings to resume, or a new --out folder for a new search"
        )
    return True


def table_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a trained candidate shown in summaries and ``selected.json`` (``front_rank`` when set)."""
    keys = ("spec", "params", "macs", "latency_ms", "auc", "f1", "accuracy", "sensitivity", "specificity", "best_epoch")
    row = {key: record.get(key) for key in keys}
    if "front_rank" in record:
        row["front_rank"] = record["front_rank"]
    return row


def selected_payload(
    config: Mapping[str, Any], selected: Sequence[Mapping[str, Any]], test_folds: Sequence[int]
) -> dict[str, Any]:
    """The content of ``selected.json`` (read by :func:`~naslung.pipeline.search.journal.read_selected_specs`).

    ``specs`` in selection order; ``score_key`` the validation metric of the search-time scores in ``candidates``;
    ``select`` the rule (``"pareto"``: ``candidates[i]["front_rank"]`` is its non-dominated front, 1 = Pareto).
    """
    return {
        "specs": [r["spec"] for r in selected],
        "score_key": config["score_metric"],
        "select": config["select"],
        "select_top_n": int(config["select_top_n"]),
        "latency_budget_ms": config.get("latency_budget_ms"),
        "candidates": [table_row(r) for r in selected],
        "searched_with": {
            "attention": config["attention"],
            "loss_name": config["loss_name"],
            "epochs_per_candidate": int(config["epochs_per_candidate"]),
        },
        "test_folds": list(test_folds),
        "journal": "journal.jsonl",
    }
