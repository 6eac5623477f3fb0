"""Baseline networks (MONAI's 3D nets, MC3-18) trained on the same held-out folds as the searched ones, and their
held-out metrics, parameters and latency for the results table.

A run keeps them apart from the searched networks, so they never join an ensemble or a bundle by default::

    RUN/baselines/<name>/fold_<k>/...      what :func:`naslung.pipeline.training.step.train_fold` writes
    RUN/baselines/<name>/cv_metrics.json   test metrics per fold, mean ± std
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from naslung.networks import BASELINES, registered_name
from naslung.pipeline.errors import ConfigError
from naslung.pipeline.metrics import BINARY_METRICS, DEFAULT_THRESHOLD, binary_metrics, summarise_folds
from naslung.pipeline.progress import Progress, no_progress
from naslung.pipeline.run.layout import BASELINES_DIR, RunLayout
from naslung.pipeline.run.members import network_cost, read_test_predictions
from naslung.pipeline.training.step import network_overrides, train_folds

__all__ = [
    "BASELINES_DIR",
    "baseline_names",
    "baseline_training_jobs",
    "train_baselines",
    "baseline_prediction_files",
    "baseline_records",
]

logger = logging.getLogger(__name__)


def baseline_names(networks: Sequence[str]) -> list[str]:
    """Registered names of ``networks`` (``"DenseNet121"`` -> ``"densenet121"``), each once, in order.

    Raises:
        ConfigError: for an unknown name, or ``cbam_resnet3d`` (NAS-Lung candidates are searched, not baselines).
    """
    names: list[str] = []
    for network in networks:
        name = registered_name(network)
        if name not in BASELINES:
            raise ConfigError(f"{name!r} is the searched network family, not a baseline; baselines: {list(BASELINES)}")
        if name not in names:
            names.append(name)
    return names


def _baseline_overrides(name: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**(overrides or {}), **network_overrides(name)}


def baseline_training_jobs(
    datalist: Sequence[Mapping[str, Any]],
    networks: Sequence[str],
    folds: Sequence[int],
    run_dir: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The trainings :func:`train_baselines` runs, as (network, fold) jobs for
    :func:`naslung.pipeline.training.step.train_fold_job`: each writes only ``RUN/baselines/<name>/fold_<k>``.

    Run them on an executor first (:func:`naslung.pipeline.training.jobs.run_fold_jobs`); :func:`train_baselines`
    then finds them finished and only collects. Same arguments as :func:`train_baselines`.

    Raises:
        ConfigError: see :func:`baseline_names`.
    """
    layout = RunLayout(Path(run_dir))
    return [
        {
            "datalist": list(datalist),
            "test_fold": fold,
            "out_dir": str(layout.baselines_dir / name),
            "overrides": _baseline_overrides(name, overrides),
        }
        for name in baseline_names(networks)
        for fold in folds
    ]


def train_baselines(
    datalist: Sequence[Mapping[str, Any]],
    networks: Sequence[str],
    folds: Sequence[int],
    run_dir: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    show_progress: bool = False,
    progress: Progress = no_progress,
    run_training_jobs: Callable[[list[dict[str, Any]]], Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Train each baseline on each held-out fold into ``RUN/baselines/<name>`` (resumable, as ``train_folds``).

    Args:
        datalist: the cohort's cube datalist (``manifest.csv``).
        networks: registered baseline names, e.g. ``["resnet18", "densenet121", "mc3_18"]``.
        folds: held-out test folds (those of the searched networks, for a fair comparison).
        run_dir: the run directory.
        overrides: training-config overrides shared by all baselines (the network keys are set per baseline, see
            :func:`naslung.pipeline.training.step.network_overrides`).
        show_progress: attach the engines' progress bars.
        progress: wraps the loop over networks.
        run_training_jobs: runs the (network, fold) trainings first, given as :func:`baseline_training_jobs`
            (``naslung run`` passes its ``train.parallel`` executor, as for the retrain); ``None``: one after
            another in this process.

    Returns:
        ``{name: cv_metrics}`` (:func:`naslung.pipeline.training.step.train_folds`'s result) per baseline.

    Raises:
        ConfigError: see :func:`baseline_names`.
    """
    names = baseline_names(networks)
    if run_training_jobs is not None:
        run_training_jobs(baseline_training_jobs(datalist, names, folds, run_dir, overrides))
    results = {}
    for name in progress(names, desc="baselines"):  # after run_training_jobs, only collects the finished folds
        results[name] = train_folds(
            datalist,
            list(folds),
            RunLayout(Path(run_dir)).baselines_dir / name,
            overrides=_baseline_overrides(name, overrides),
            show_progress=show_progress,
        )
    return results


def baseline_prediction_files(run_dir: str | os.PathLike) -> list[Path]:
    """Every ``RUN/baselines/<name>/fold_<k>/test_predictions.csv``, sorted (for up-to-date checks)."""
    found = RunLayout(Path(run_dir)).baselines().values()
    return sorted(network.predictions_path(fold) for network in found for fold in network.folds)


def baseline_records(
    run_dir: str | os.PathLike,
    fold_nodules: Mapping[int, Sequence[str]],
    threshold: float = DEFAULT_THRESHOLD,
    latency: bool = True,
    progress: Progress = no_progress,
) -> list[dict[str, Any]]:
    """Held-out metrics, parameters and CPU latency of each trained baseline, on exactly the ensemble's test sets.

    A baseline is scored only when it has test predictions for every fold of ``fold_nodules`` and they cover the
    same nodules; otherwise it is left out with a warning (trained on other folds or another manifest).

    Args:
        run_dir: the run directory.
        fold_nodules: ``{fold: nodule ids}`` of the held-out test sets the searched networks were scored on.
        threshold: decision threshold on the probability of malignancy.
        latency: measure CPU latency (batch 1, one thread); off: parameters only.
        progress: wraps the loop over baselines.

    Returns:
        one ``{"slug", "spec", "params", "latency_ms", "summary", "per_fold"}`` per baseline (as the ensemble's
        member records), sorted by name.
    """
    networks = list(RunLayout(Path(run_dir)).baselines().values())
    folds = sorted(int(f) for f in fold_nodules)
    records = []
    for network in progress(networks, total=len(networks), desc="baselines"):
        missing = [f for f in folds if f not in network.folds]
        if missing:
            logger.warning("baseline %s has no test predictions for folds %s; left out", network.slug, missing)
            continue
        per_fold = []
        for fold in folds:
            table = read_test_predictions(network.predictions_path(fold))
            if set(table) != {str(n) for n in fold_nodules[fold]}:
                logger.warning("baseline %s predicted other nodules on fold %d; left out", network.slug, fold)
                break
            ids = sorted(table)
            labels, probabilities = [table[i][0] for i in ids], [table[i][1] for i in ids]
            per_fold.append({"fold": fold, **binary_metrics(labels, probabilities, threshold)})
        else:
            records.append(
                {
                    "slug": network.slug,
                    "spec": network.slug,
                    **network_cost(network.fold_dir(folds[0]), latency=latency),
                    "summary": summarise_folds(per_fold, keys=BINARY_METRICS),
                    "per_fold": per_fold,
                }
            )
    return records
