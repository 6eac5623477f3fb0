"""``naslung run``: the whole job from raw scans (or the embedded data) to a searched ensemble, a report and bundles.

Each step reads the previous step's outputs from the run directory and skips itself when they are current, so
re-running the same command after a crash resumes where it stopped. The steps, in order::

    prepare -> search -> train -> baselines -> ensemble -> evaluate -> export-bundle -> smoke -> report

``baselines`` trains the factory networks listed in the profile's ``baselines.networks`` (none in ``quick``) on the
same folds, into ``RUN/baselines``; the results table of ``ensemble`` and the report list them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.analysis.report import build_report
from naslung.pipeline.analysis.step import run_evaluate_step
from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.data.cohort_table import load_default_cohort
from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.data.embedded import COHORT_FILE, render_embedded, write_rendered_cohort
from naslung.pipeline.data.prepare_raw import prepare_scans
from naslung.pipeline.data.synthetic_ct import RENDER_VERSION
from naslung.pipeline.ensemble.baselines import train_baselines
from naslung.pipeline.ensemble.step import ensemble_headline, run_ensemble_step
from naslung.pipeline.errors import ConfigError, NaslungError
from naslung.pipeline.export.run_content import trained_members
from naslung.pipeline.export.smoke import smoke_test_bundle
from naslung.pipeline.export.step import export_bundle
from naslung.pipeline.progress import Progress, no_progress
from naslung.pipeline.run.config import PROFILES, TRAIN_STEP_KEYS, check_profile, load_profile
from naslung.pipeline.run.layout import CLASSIFIER_BUNDLE, ENSEMBLE_BUNDLE, RunLayout
from naslung.pipeline.run.markers import fingerprint, is_done, mark_done
from naslung.pipeline.search.executors import make_executor, ray_available, shared_ray_instance
from naslung.pipeline.search.journal import read_selected_specs
from naslung.pipeline.search.rank_correlation import write_rank_correlation
from naslung.pipeline.search.runner import run_search_step
from naslung.pipeline.training.jobs import run_fold_jobs
from naslung.pipeline.training.step import train_fold_job, train_folds

# PROFILES and load_profile live in naslung.pipeline.run.config; re-exported for the benchmarks that import them here
__all__ = ["PROFILES", "RunContext", "RUN_STEPS", "load_profile", "subsample_cohort", "run_job"]

logger = logging.getLogger(__name__)


def subsample_cohort(rows: Sequence[Mapping[str, Any]], n_nodules: int | None, seed: int = 0) -> list[dict]:
    """About ``n_nodules`` cohort rows drawn by whole patients, stratified by fold and label, deterministically.

    ``None`` or a number at least the cohort's size returns every row. Rows are copied whole (every column, the
    readers' ratings included).
    """
    rows = [dict(r) for r in rows]
    if n_nodules is None or n_nodules >= len(rows):
        return rows
    rng = np.random.default_rng(seed)
    patients: dict[str, list[dict]] = {}
    for row in rows:
        patients.setdefault(str(row["patient_id"]), []).append(row)
    strata: dict[tuple[int, int], list[str]] = {}
    for pid, items in sorted(patients.items()):
        key = (int(items[0]["fold"]), int(max(int(r["label"]) for r in items)))
        strata.setdefault(key, []).append(pid)
    share = n_nodules / len(rows)
    chosen: list[dict] = []
    for key in sorted(strata):
        pids = [strata[key][i] for i in rng.permutation(len(strata[key]))]
        target = share * sum(len(patients[p]) for p in pids)
        taken = 0
        for pid in pids:
            if taken >= target:
                break
            chosen.extend(patients[pid])
            taken += len(patients[pid])
    return sorted(chosen, key=lambda r: str(r["nodule_id"]))


@dataclass
class RunContext:
    """What every step of a run needs.

    Args:
        run_dir: the run directory.
        settings: the profile's settings per step (see :func:`naslung.pipeline.run.config.load_profile`), checked
            key by key here too (:func:`naslung.pipeline.run.config.check_profile`).
        data: a raw data path (``None``: the embedded default data).
        data_kind: ``dicom``, ``luna16`` or ``lidc`` for ``data``.
        progress: progress wrapper for long loops (the CLI passes tqdm bars).
        show_progress: whether engines attach their own progress bars.

    Raises:
        ConfigError: an unknown section or key in ``settings``.
    """

    run_dir: Path
    settings: dict[str, Any]
    data: Path | None = None
    data_kind: str = "dicom"
    progress: Progress = no_progress
    show_progress: bool = False
    summaries: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_profile(self.settings, "RunContext.settings")

    @property
    def layout(self) -> RunLayout:
        """The paths of the run folder."""
        return RunLayout(self.run_dir)

    @property
    def data_dir(self) -> Path:
        return self.layout.data_dir

    def section(self, name: str) -> dict[str, Any]:
        """The profile's section ``name`` as the step receives it (comments, ``_...`` keys, left out)."""
        return {k: v for k, v in self.settings.get(name, {}).items() if not str(k).startswith("_")}


def _step_prepare(ctx: RunContext) -> str:
    settings = ctx.section("prepare")
    if ctx.data is not None:
        summary = prepare_scans(ctx.data_kind, ctx.data, ctx.data_dir, progress=ctx.progress)
        return f"{summary.nodules} nodules from {summary.scans_found} scans ({summary.scans_rejected} rejected)"
    # whole cohort rows (ratings included); render_embedded keeps them as RUN/data/cohort.csv for the ratings ceiling
    rows = subsample_cohort(load_default_cohort(), settings.get("subsample_nodules"), int(settings.get("seed", 0)))
    malignant = sum(int(r["label"]) for r in rows)
    digest = fingerprint(settings, [r["nodule_id"] for r in rows], {"render_version": RENDER_VERSION})
    if is_done(ctx.data_dir, digest):
        if not (ctx.data_dir / COHORT_FILE).is_file():  # prepared before the data folder kept its cohort
            write_rendered_cohort(ctx.data_dir, rows)
        return f"embedded data up to date: {len(rows)} nodules ({malignant} malignant)"
    summary = render_embedded(
        ctx.data_dir,
        rows=rows,
        n_scans=int(settings.get("scans", 2)),
        seed=int(settings.get("seed", 0)),
        workers=int(settings.get("workers", 2)),
        progress=ctx.progress,
    )
    mark_done(ctx.data_dir, digest, [ctx.layout.manifest.name], {"nodules": len(rows), "malignant": malignant})
    return f"embedded data: {len(rows)} nodules ({malignant} malignant), {summary.get('n_scans', '?')} whole scans"


def _train_overrides(ctx: RunContext) -> dict[str, Any]:
    """The profile's ``train`` section as training-config overrides (``folds`` included, step keys left out).

    Everything else passes through as it is, the loss included: the retrained networks, the baselines and the
    evaluate step's networks take the recipe the profile names.
    """
    return {k: v for k, v in ctx.section("train").items() if k not in TRAIN_STEP_KEYS}


def _step_search(ctx: RunContext) -> str:
    overrides = ctx.section("search")
    overrides.setdefault("test_folds", ctx.section("train").get("folds", [0, 1, 2, 3, 4]))
    result = run_search_step(ctx.layout.search_dir, overrides=overrides, data_dir=ctx.data_dir, progress=ctx.progress)
    selected = result.get("selected", [])
    space = result.get("space", {}).get("size", "?")
    strategy = result.get("strategy", "pop")
    pruned = "" if result.get("pruned") is None else f"{result['pruned']} pruned, "  # DNAS prunes nothing
    metric = str(result.get("score_metric", "f1"))
    rule = "from the latency/score Pareto fronts" if result.get("select") == "pareto" else "with the best scores"
    front_scores = [float(r[metric]) for r in result.get("front", []) if r.get(metric) is not None]
    best = max(front_scores, default=float("nan"))  # the front holds the best score
    return (
        f"{strategy.upper()} over a space of {space} candidates: {result.get('trained', '?')} trained, {pruned}"
        f"{len(selected)} selected {rule} (best validation {metric.upper()} {best:.3f}; "
        f"{result.get('stop_reason', '')})"
    )


def _selected_specs(ctx: RunContext) -> list[str]:
    path = ctx.layout.selected
    if not path.is_file():
        raise NaslungError(f"{path}: no selection; run `naslung search` first")
    specs = read_selected_specs(ctx.run_dir)
    if not specs:
        raise NaslungError(f"{path}: the search selected no network (widen latency_budget_ms?)")
    return specs


def _run_jobs_in_parallel(
    ctx: RunContext, jobs: list[dict[str, Any]], parallel: Mapping[str, Any], desc: str = "retrain jobs"
) -> None:
    """Train (network, fold) jobs on the search's executor: the profile's ``train.parallel`` section.

    ``{"executor": "ray", "workers": 2, "threads_per_job": 1}`` runs two single-thread jobs at a time (Ray, or one
    after another when Ray is missing). Small 3D networks use a second torch thread poorly, so on a 2-core CPU two
    single-thread jobs train more cubes per second than one job with two threads. Each job writes only its own
    fold folder and its log (``fold_<k>/job.log``); finished folds are skipped on a re-run. A failed job does not
    stop the others: once they finish, :class:`~naslung.pipeline.training.jobs.TrainingJobsError` names each failed
    job's network, fold and log, and the same command retries only those.

    The keys of ``parallel`` are checked with the profile (:data:`naslung.pipeline.run.config.PARALLEL_KEYS`).
    """
    if parallel.get("executor", "ray") == "ray" and not parallel.get("ray_address") and not ray_available():
        # one job at a time with a single thread would be slower than the plain loop with all threads
        logger.warning("train.parallel: Ray is not installed (pip install 'naslung[ray]'); training one job at a time")
        return
    executor = make_executor(
        str(parallel.get("executor", "ray")),
        workers=parallel.get("workers"),
        address=parallel.get("ray_address"),
        threads_per_trial=parallel.get("threads_per_job"),
    )
    with executor:  # every job runs; the failed ones are then reported with their network, fold and log
        run_fold_jobs(executor, jobs, function=train_fold_job, progress=ctx.progress, desc=desc)


def _step_train(ctx: RunContext) -> str:
    datalist = read_manifest(ctx.layout.manifest)
    overrides = _train_overrides(ctx)
    folds = overrides.pop("folds", [0, 1, 2, 3, 4])
    parallel = ctx.section("train").get("parallel")
    specs = _selected_specs(ctx)
    per_network = {spec: {**overrides, "arch": spec} for spec in specs}  # the profile's recipe, loss included
    jobs = [
        {
            "datalist": datalist,
            "test_fold": fold,
            "out_dir": str(ctx.layout.network_dir(spec)),
            "overrides": per_network[spec],
        }
        for spec in specs
        for fold in folds
    ]
    if parallel:
        _run_jobs_in_parallel(ctx, jobs, parallel)
    f1 = []
    for spec in ctx.progress(specs, desc="retrain"):  # after a parallel run, only collects the finished folds
        result = train_folds(
            datalist,
            folds,
            ctx.layout.network_dir(spec),
            overrides=per_network[spec],
            show_progress=ctx.show_progress,
        )
        f1.append(result["summary"].get("f1_mean", float("nan")))
    ranks = write_rank_correlation(ctx.run_dir)  # search/rank_correlation.json
    agreement = (
        f"Spearman {ranks['rho']:+.2f} over {ranks['n']} networks"
        if ranks["rho"] is not None
        else f"undefined ({ranks['reason']})"
    )
    return (
        f"{len(f1)} networks on folds {folds}; test F1 per network: "
        + ", ".join(f"{v:.3f}" for v in f1)
        + f"; search vs retrained validation {ranks['metric'].upper()} rank correlation: {agreement}"
    )


def _step_baselines(ctx: RunContext) -> str:
    settings = ctx.section("baselines")
    networks = list(settings.get("networks") or [])
    if not networks:
        return "none (list factory networks in the profile's baselines.networks, e.g. resnet18)"
    overrides = _train_overrides(ctx)
    folds = overrides.pop("folds", [0, 1, 2, 3, 4])
    overrides = {**overrides, **settings.get("train", {})}  # the retrained networks' recipe, loss included
    parallel = ctx.section("train").get("parallel")

    def run_training_jobs(jobs: list[dict[str, Any]]) -> None:  # the baselines' (network, fold) jobs, as the retrain's
        _run_jobs_in_parallel(ctx, jobs, parallel, desc="baseline jobs")

    results = train_baselines(
        read_manifest(ctx.layout.manifest),
        networks,
        folds,
        ctx.run_dir,
        overrides=overrides,
        show_progress=ctx.show_progress,
        progress=ctx.progress,
        run_training_jobs=run_training_jobs if parallel else None,
    )
    f1 = ", ".join(f"{name} {r['summary'].get('f1_mean', float('nan')):.3f}" for name, r in results.items())
    return f"{len(results)} baselines on folds {folds}; test F1: {f1}"


def _step_ensemble(ctx: RunContext) -> str:
    # every key reaches the step (the profile's keys are checked against ENSEMBLE_KEYS); none is dropped
    result = run_ensemble_step(ctx.run_dir, **ctx.section("ensemble"), progress=ctx.progress)
    return ensemble_headline(result)


def _step_evaluate(ctx: RunContext) -> str:
    train = _train_overrides(ctx)
    folds = train.pop("folds", None)
    evaluate = ctx.section("evaluate")
    # the profile's evaluate.train_overrides refine the train section (e.g. fewer epochs), never replace it
    train.update(evaluate.pop("train_overrides", {}))
    overrides = {"train_overrides": train, **({"folds": folds} if folds else {}), **evaluate}
    parallel = ctx.section("train").get("parallel")

    def run_training_jobs(jobs: list[dict[str, Any]]) -> None:  # the analyses' networks, as train.parallel says
        if jobs:
            _run_jobs_in_parallel(ctx, jobs, parallel, desc="analysis jobs")

    result = run_evaluate_step(
        ctx.run_dir,
        overrides=overrides,
        progress=ctx.progress,
        run_training_jobs=run_training_jobs if parallel else None,
    )
    figures = [name for name in result.get("outputs", []) if str(name).endswith(".png")]
    return f"{', '.join(result.get('analyses', []))} of {result.get('specs')}: {len(figures)} figures"


def _step_report(ctx: RunContext) -> str:
    md, _ = build_report(ctx.run_dir)
    return f"report at {md}"


def _step_export(ctx: RunContext) -> str:
    settings = ctx.section("export")
    made = []
    if settings.get("single", True):
        made.append(export_bundle(ctx.run_dir, ctx.layout.bundle_dir(CLASSIFIER_BUNDLE)))
    if settings.get("ensemble", True) and len(trained_members(ctx.run_dir)) >= 2:
        made.append(export_bundle(ctx.run_dir, ctx.layout.bundle_dir(ENSEMBLE_BUNDLE), ensemble=True))
    return "bundles: " + ", ".join(str(Path(p).relative_to(ctx.run_dir)) for p in made)


def _step_smoke(ctx: RunContext) -> str:
    bundles = ctx.layout.bundles()
    if not bundles:
        raise NaslungError(f"{ctx.layout.bundles_dir}: no bundle to check; run `naslung export-bundle`")
    # every bundle, the ensemble too, at once: each runs in its own process, mostly importing MONAI on one core
    with ThreadPoolExecutor(max_workers=len(bundles)) as pool:
        results = list(pool.map(lambda bundle: smoke_test_bundle(bundle, ctx.data_dir), bundles))
    status = "ok" if all(r.get("status") == "ok" for r in results) else "failed"
    write_json(ctx.layout.smoke, {"status": status, "bundles": results})
    return "inference bundles " + ", ".join(
        f"{b.name}: {r.get('status')}" for b, r in zip(bundles, results, strict=True)
    )


#: The steps of ``naslung run`` in order (:data:`naslung.pipeline.run.config.STEP_NAMES`): (name, function returning
#: a one-line summary).
RUN_STEPS: tuple[tuple[str, Callable[[RunContext], str]], ...] = (
    ("prepare", _step_prepare),
    ("search", _step_search),
    ("train", _step_train),
    ("baselines", _step_baselines),
    ("ensemble", _step_ensemble),
    ("evaluate", _step_evaluate),
    ("export-bundle", _step_export),
    ("smoke", _step_smoke),
    ("report", _step_report),
)


def run_job(
    ctx: RunContext, steps: Sequence[str] | None = None, echo: Callable[[str], None] = logger.info
) -> dict[str, str]:
    """Run the steps (default all) in order; each skips itself when its outputs are current.

    Args:
        ctx: the run's context.
        steps: names from :data:`RUN_STEPS` to run (in pipeline order).
        echo: receives a one-line summary per step (the CLI prints them).

    Raises:
        NaslungError: re-raised with the step's name in front, so the user knows where it failed.
    """
    names = [name for name, _ in RUN_STEPS]
    unknown = [s for s in steps or [] if s not in names]
    if unknown:
        raise ConfigError(f"unknown step(s) {unknown}; steps: {names}")
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    with shared_ray_instance():  # search, train and evaluate share one local Ray instance
        for name, func in RUN_STEPS:
            if steps and name not in steps:
                continue
            start = time.perf_counter()
            try:
                line = func(ctx)
            except NaslungError as err:
                raise type(err)(f"step {name!r} failed: {err}") from err
            seconds = time.perf_counter() - start
            timings[name] = round(seconds, 1)
            ctx.summaries[name] = line
            echo(f"[{name}] {line} ({seconds:.0f} s)")
            write_json(ctx.layout.run_summary, {"steps": ctx.summaries, "seconds": timings})
    return ctx.summaries
