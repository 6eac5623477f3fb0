"""The search step of a run directory: POP over real training and latency, then the Pareto front and the selection.

``run_search_step(out_dir, config, overrides, data_dir)`` reads the search config (``pipeline/configs/search.json``
merged with a user file and overrides), trains candidates on the search folds (every fold not in ``test_folds``:
the evaluation folds are never seen by the search), and writes into ``out_dir``::

    journal.jsonl            one record per trained candidate (spec, params, macs, latency_ms, auc, f1, ...)
    journal.latency.jsonl    latencies measured to prune untrained candidates (replayed on resume)
    settings.json            what the journal depends on; a resume with other settings is refused
    candidates/<slug>/all/   each candidate's training folder (checkpoints, history, metrics)
    pareto.csv               the Pareto front (lower latency, higher validation score), sorted by latency
    pareto.png               Fig. 4-style scatter of latency against the score and accuracy, front highlighted
    selected.json            {"specs": [...]}: the candidates chosen for retraining (see below)
    summary.json, done.json  counts and timings; the marker that makes an identical re-run a no-op

A candidate's score is ``score_metric`` (default validation ROC AUC; ``"f1"`` as the paper) at its best
validation epoch (:func:`~naslung.pipeline.search.candidate.best_validation_epoch`). ``select`` decides what is
retrained: ``"pareto"`` (default) takes the latency/score Pareto front first, then the following non-dominated
fronts, ``select_top_n`` networks in all; ``"top_n"`` the ``select_top_n`` best scores
(:func:`~naslung.pipeline.search.selection.select_candidates`).

Same seed, same machine, same selection: candidate training is seeded (``seed``) and POP prunes with latencies
read from the machine's latency table (:mod:`naslung.pipeline.search.latency_table`), measured once. What can still
change a search: ``max_seconds`` (a wall-time budget stops at a load-dependent point) and ``threads_per_trial``
(torch's float sums depend on the thread count, so trials with other thread counts train slightly different
weights; the sequential and the Ray executor give the same records at the same ``threads_per_trial``).

A killed search resumes from the journal when the same command runs again: finished candidates are not trained
again, an interrupted one resumes from its last checkpoint.

With ``"strategy": "dnas"`` the step runs the differentiable search of :mod:`naslung.pipeline.search.dnas`
instead (same folder, the same ``selected.json`` format; a per-epoch journal and ``alphas.png`` instead of the
candidates' journal and ``pareto.png``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.config_files import packaged_config, read_config_file
from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.errors import ConfigError, SearchError
from naslung.pipeline.progress import Progress, no_progress
from naslung.pipeline.run.config import CONFIG_FILES, merge_config
from naslung.pipeline.run.markers import fingerprint, is_done, mark_done
from naslung.pipeline.search.candidate import METRIC_KEYS, CandidateEvaluator, search_datalist
from naslung.pipeline.search.candidate_latency import candidate_profiler
from naslung.pipeline.search.dnas import run_dnas_search
from naslung.pipeline.search.executors import make_executor
from naslung.pipeline.search.figures import plot_pareto
from naslung.pipeline.search.journal import SearchJournal, write_pareto_csv
from naslung.pipeline.search.pareto import pareto_front
from naslung.pipeline.search.pop import run_search
from naslung.pipeline.search.search_folder import check_search_settings, selected_payload, table_row
from naslung.pipeline.search.selection import SELECTION_RULES, select_candidates
from naslung.pipeline.search.space import SearchSpace

__all__ = [
    "DEFAULT_SEARCH_CONFIG",
    "SEARCH_OUTPUTS",
    "load_search_config",
    "search_space_from_config",
    "select_candidates",
    "candidate_profiler",
    "check_search_settings",
    "selected_payload",
    "table_row",
    "run_search_step",
    "STRATEGIES",
]

logger = logging.getLogger(__name__)

#: Search strategies: Partial Order Pruning (NAS-Lung) and differentiable NAS with Gumbel-Softmax (CovidNet3D).
STRATEGIES = ("pop", "dnas")

#: The packaged search config (MONAI bundle syntax).
DEFAULT_SEARCH_CONFIG = CONFIG_FILES["search"]

#: Files of a finished search step, relative to its folder.
SEARCH_OUTPUTS = ["journal.jsonl", "pareto.csv", "pareto.png", "selected.json", "summary.json"]

#: Keys whose change makes an existing journal unusable (they decide what a candidate's record means or the order
#: of proposals). Budgets, executors and the selection may change between calls.
_REPLAY_KEYS = (
    "space",
    "test_folds",
    "epochs_per_candidate",
    "attention",
    "loss_name",
    "seed",
    "batch_size",
    "latency_batch",
    "score_metric",
    "train",
)
_SPACE_KEYS = ("channels", "min_blocks", "max_blocks", "stem", "depth_rule", "min_stage_blocks", "monotone")


def load_search_config(
    config: str | os.PathLike | Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The packaged search config merged with a user config (file or dict) and ``overrides``, ``$`` expressions
    evaluated.

    Keys use MONAI's ``#`` separator for nested entries (``"space#max_blocks": 5``); merged by
    :func:`naslung.pipeline.run.config.merge_config`.

    Raises:
        ConfigError: the file is missing or unreadable, a key is unknown, or a value cannot be evaluated.
    """
    parser = merge_config("search", config, overrides)
    merged: dict[str, Any] = {}
    for key in parser.config:
        if key.startswith("_"):
            continue
        try:
            merged[key] = parser.get_parsed_content(key)
        except Exception as err:
            raise ConfigError(f"search config key {key!r} cannot be evaluated: {err}") from err
    if merged.get("strategy") not in STRATEGIES:
        raise ConfigError(f"search strategy {merged.get('strategy')!r} is not one of {STRATEGIES}")
    dnas_defaults = packaged_config(DEFAULT_SEARCH_CONFIG)["dnas"]
    unknown_dnas = sorted(set(merged.get("dnas") or {}) - set(dnas_defaults))
    if unknown_dnas:
        raise ConfigError(f"unknown dnas option(s) {unknown_dnas}; known: {sorted(dnas_defaults)}")
    merged["dnas"] = {**dnas_defaults, **(merged.get("dnas") or {})}
    unknown = sorted(set(merged["space"]) - set(_SPACE_KEYS))
    if unknown:
        raise ConfigError(f"unknown search space option(s) {unknown}; known: {list(_SPACE_KEYS)}")
    if merged.get("score_metric") not in METRIC_KEYS:
        raise ConfigError(f"search score_metric {merged.get('score_metric')!r} is not one of {METRIC_KEYS}")
    if merged.get("select") not in SELECTION_RULES:
        raise ConfigError(f"search select {merged.get('select')!r} is not one of {SELECTION_RULES}")
    return merged


def search_space_from_config(config: Mapping[str, Any]) -> SearchSpace:
    """The :class:`~naslung.pipeline.search.space.SearchSpace` of a merged search config's ``space``."""
    return SearchSpace(**dict(config["space"]))


def _replay_settings(
    config: Mapping[str, Any],
    datalist: Sequence[Mapping[str, Any]],
    train_config: Mapping[str, Any] | None,
    device: str,
) -> dict[str, Any]:
    settings = {key: config[key] for key in _REPLAY_KEYS}
    settings["test_folds"] = sorted(int(f) for f in config["test_folds"])
    settings["latency_device"] = device
    settings["train_config"] = fingerprint(train_config) if train_config else None
    settings["data"] = fingerprint(sorted((str(d["nodule_id"]), int(d["label"]), int(d["fold"])) for d in datalist))
    return json.loads(json.dumps(settings, default=str))


def _check_resume(out: Path, journal: SearchJournal, settings: dict[str, Any]) -> None:
    def resuming() -> bool:
        return bool(journal.exists() and len(journal))

    if not check_search_settings(out, settings, "pop", resuming, journal.path) and resuming():
        logger.warning("%s has no settings.json; assuming the journal matches these settings", out)
    write_json(out / "settings.json", settings)


def run_search_step(
    out_dir: str | os.PathLike,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Run (or resume) the architecture search into ``out_dir`` and write its outputs (see the module docstring).

    Args:
        out_dir: the search folder (``RUN/search``).
        config: user search config (file or dict) on top of ``pipeline/configs/search.json``.
        overrides: last-word overrides (MONAI ``#`` ids).
        data_dir: folder with ``manifest.csv``; overrides the config's ``data_dir``.
        progress: progress reporter around each batch of candidates.

    Returns:
        the summary (also written to ``summary.json``): space size, stop reason, counts, timings, front, selection.

    Raises:
        ConfigError: bad config or no data folder.
        DataError: no manifest, or no nodule outside the evaluation folds.
        SearchError: the journal was written with other settings, or a candidate failed.
    """
    cfg = load_search_config(config, overrides)
    data = data_dir if data_dir is not None else cfg.get("data_dir")
    if not data:
        raise ConfigError("no data folder: pass --data DIR (a folder with manifest.csv) or set data_dir in the config")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    space = search_space_from_config(cfg)
    logger.info("search space: %d candidates (%s)", space.size(), space.describe())
    datalist = search_datalist(read_manifest(Path(data) / "manifest.csv"), cfg["test_folds"])

    train_config = read_config_file(cfg["train_config"], "training config") if cfg.get("train_config") else None
    if cfg["strategy"] == "dnas":
        return run_dnas_search(out, cfg, datalist, space, train_config, progress)
    evaluator = CandidateEvaluator(
        datalist,
        out / "candidates",
        epochs=int(cfg["epochs_per_candidate"]),
        attention=cfg["attention"],
        loss_name=cfg["loss_name"],
        seed=int(cfg["seed"]),
        train_config=train_config,
        train_overrides=cfg.get("train") or {},
        score_metric=cfg["score_metric"],
    )
    journal = SearchJournal(out / "journal.jsonl")
    profiler = candidate_profiler(cfg, evaluator.merged_config("[4,4,[4],[4],[4]]"), journal.latencies())
    settings = _replay_settings(cfg, datalist, train_config, profiler.device)
    budgets = {key: cfg.get(key) for key in ("max_candidates", "max_seconds", "patience")}
    selection = {key: cfg.get(key) for key in ("select_top_n", "latency_budget_ms", "select")}
    digest = fingerprint(settings, budgets, selection)
    if is_done(out, digest):
        logger.info("%s is up to date; skipping the search", out)
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        return {**summary, "skipped": True}
    _check_resume(out, journal, settings)

    batch_size = int(cfg["batch_size"])
    score_key = str(cfg["score_metric"])
    executor = make_executor(
        cfg["executor"],
        workers=cfg.get("workers"),
        address=cfg.get("ray_address"),
        threads_per_trial=cfg.get("threads_per_trial"),
        gpus_per_trial=cfg.get("gpus_per_trial"),
    )
    start = time.perf_counter()
    with executor:
        startup_seconds = time.perf_counter() - start
        workers = executor.workers or 1
        if batch_size < workers:
            logger.warning(
                "batch_size=%d < workers=%d: only %d candidates train at a time; raise batch_size to use every worker",
                batch_size,
                workers,
                batch_size,
            )

        def map_fn(function: Any, archs: Iterable[Any]) -> Iterable[Any]:
            # time the batch's candidates now, while no trial is training, then train them
            return executor.map(function, profiler.prefetch(archs))

        result = run_search(
            space,
            evaluator,
            profiler,
            journal=journal,
            rng_seed=int(cfg["seed"]),
            batch_size=batch_size,
            patience=cfg.get("patience"),
            max_candidates=cfg.get("max_candidates"),
            max_seconds=cfg.get("max_seconds"),
            map_fn=map_fn,
            score_key=score_key,
            progress=progress,
        )
        executor_info = executor.describe()
        search_seconds = time.perf_counter() - start - startup_seconds

    records = journal.records()
    if not records:
        raise SearchError(f"the search trained no candidate ({result.stop_reason}); raise max_candidates/max_seconds")
    front = pareto_front(records, score_key=score_key)
    write_pareto_csv(records, out / "pareto.csv", score_key=score_key)
    plot_pareto(records, front, out / "pareto.png", pruned_count=result.pruned, score_key=score_key)
    selected = select_candidates(
        records, int(cfg["select_top_n"]), cfg.get("latency_budget_ms"), score_key=score_key, rule=cfg["select"]
    )
    if not selected:
        logger.warning(
            "no trained candidate is within latency_budget_ms=%s; selected.json is empty", cfg.get("latency_budget_ms")
        )
    write_json(out / "selected.json", selected_payload(cfg, selected, settings["test_folds"]))
    summary = {
        "space": space.describe(),
        "stop_reason": result.stop_reason,
        "iterations": result.iterations,
        "trained": len(records),
        "evaluated": result.evaluated,
        "resumed": result.resumed,
        "pruned": result.pruned,
        "remaining": result.remaining,
        "executor_start_seconds": startup_seconds,
        "search_seconds": search_seconds,
        "candidates_per_hour": 3600.0 * result.evaluated / search_seconds if search_seconds > 0 else None,
        "training_seconds": sum(float(r.get("seconds", 0.0)) for r in records),
        "search_nodules": len(datalist),
        "test_folds": settings["test_folds"],
        "executor": executor_info,
        "latency": profiler.describe(),
        "score_metric": score_key,
        "select": cfg["select"],
        "front": [table_row(r) for r in front],
        "selected": [r["spec"] for r in selected],
    }
    write_json(out / "summary.json", summary)
    mark_done(out, digest, SEARCH_OUTPUTS, {k: summary[k] for k in ("stop_reason", "trained", "selected")})
    logger.info(
        "search: %d trained (%d now, %d from the journal), front of %d, stop: %s",
        len(records),
        result.evaluated,
        result.resumed,
        len(front),
        result.stop_reason,
    )
    return summary
