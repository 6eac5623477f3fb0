"""The run folder ``RUN/``: every path a step reads or writes, named once, and the trained networks found in it.

The layout (unchanged since naslung 0.1)::

    RUN/data/manifest.csv, cohort.csv, rejects.csv, done.json     prepare
    RUN/search/journal.jsonl, selected.json, summary.json, ...    search
    RUN/train/<slug>/fold_<k>/                                    train: one network per held-out fold
    RUN/train/<slug>/all/                                         ... trained without a test fold
    RUN/train/<slug>/cv_metrics.json                              ... test metrics over folds
    RUN/baselines/<name>/fold_<k>/, cv_metrics.json               baselines
    RUN/ensemble/fold_<k>/predictions.csv, metrics.json, ...      ensemble
    RUN/analysis/ablation/<slug>/<variant>/fold_<k>/, ...         evaluate
    RUN/bundles/naslung_classifier/, naslung_ensemble/, smoke.json
    RUN/report.md, report.html, run_summary.json, logs/run.log

and one fold folder (what :func:`naslung.pipeline.training.step.train_fold` writes)::

    fold_<k>/checkpoints/best_model.pt, config.json, metrics.json, history.jsonl,
             val_predictions.csv, test_predictions.csv, done.json
             job.log          (when the fold ran as an executor's job: its log and, if it failed, the traceback)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from naslung.networks.spec import DEFAULT_KERNEL, ArchSpec

__all__ = [
    "DATA_DIR",
    "SEARCH_DIR",
    "TRAIN_DIR",
    "BASELINES_DIR",
    "ENSEMBLE_DIR",
    "ANALYSIS_DIR",
    "BUNDLES_DIR",
    "LOGS_DIR",
    "DONE_FILE",
    "CHECKPOINT",
    "FOLD_CONFIG",
    "FOLD_METRICS",
    "HISTORY",
    "VAL_PREDICTIONS",
    "TEST_PREDICTIONS",
    "CV_METRICS",
    "JOB_LOG",
    "ALL_FOLDS_DIR",
    "CLASSIFIER_BUNDLE",
    "ENSEMBLE_BUNDLE",
    "fold_dir_name",
    "fold_of",
    "spec_slug",
    "TrainedNetwork",
    "find_trained_networks",
    "RunLayout",
]

#: The step folders of a run, as named inside ``RUN``.
DATA_DIR, SEARCH_DIR, TRAIN_DIR, BASELINES_DIR = "data", "search", "train", "baselines"
ENSEMBLE_DIR, ANALYSIS_DIR, BUNDLES_DIR, LOGS_DIR = "ensemble", "analysis", "bundles", "logs"
#: The marker a finished step leaves in its output folder (:mod:`naslung.pipeline.run.markers`).
DONE_FILE = "done.json"
#: A fold folder's best weights, a plain ``state_dict``.
CHECKPOINT = "checkpoints/best_model.pt"
#: A fold folder's merged training config.
FOLD_CONFIG = "config.json"
#: A fold folder's validation and test metrics.
FOLD_METRICS = "metrics.json"
#: A fold folder's validation metrics per epoch.
HISTORY = "history.jsonl"
#: A fold folder's predictions on its validation patients.
VAL_PREDICTIONS = "val_predictions.csv"
#: A fold folder's predictions on its held-out test fold.
TEST_PREDICTIONS = "test_predictions.csv"
#: A network folder's test metrics per fold, mean ± std.
CV_METRICS = "cv_metrics.json"
#: A fold folder's log when it trained as an executor's (network, fold) job, with the traceback if the job failed.
JOB_LOG = "job.log"
#: The fold folder of a network trained without a test fold.
ALL_FOLDS_DIR = "all"
#: Folder names of the bundles under ``RUN/bundles``.
CLASSIFIER_BUNDLE, ENSEMBLE_BUNDLE = "naslung_classifier", "naslung_ensemble"

_FOLD_DIR = re.compile(r"fold_(\d+)")


def fold_dir_name(test_fold: int | None) -> str:
    """Folder name of a fold's outputs: ``fold_<k>``, or ``all`` without a test fold."""
    return ALL_FOLDS_DIR if test_fold is None else f"fold_{int(test_fold)}"


def fold_of(name: str) -> int | None:
    """The held-out fold of a fold folder's name (``"fold_3"`` -> 3); ``None`` for any other name (``all``)."""
    match = _FOLD_DIR.fullmatch(name)
    return int(match.group(1)) if match else None


def spec_slug(spec: Any) -> str:
    """A filesystem-safe folder name for a network: ``"[4,4,[4,4],[4,8],[8,8]]"`` -> ``"4-4_4-4_4-8_8-8"``.

    Specs (an :class:`~naslung.networks.ArchSpec`, its text or nested lists) map to their channels, stage by
    stage (a block with another kernel than 3 as ``8k5``); factory names (``"densenet121"``) are kept as they are.
    """
    if isinstance(spec, str) and not spec.strip().startswith("["):
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.strip()).strip("-") or "network"
    arch = ArchSpec.coerce(spec)
    stem = f"{arch.stage1}-{arch.stage2}"

    def block(channels: int, kernel: int) -> str:
        return f"{channels}" if kernel == DEFAULT_KERNEL else f"{channels}k{kernel}"

    stages = zip(arch.stages, arch.kernel_sizes, strict=True)
    return "_".join([stem, *("-".join(map(block, widths, kernels)) for widths, kernels in stages)])


def _weights_order(name: str) -> tuple[int, int]:
    fold = fold_of(name)
    return (0, 0) if name == ALL_FOLDS_DIR else (1, fold if fold is not None else 0)


@dataclasses.dataclass(frozen=True)
class TrainedNetwork:
    """One network folder of a run (``RUN/train/<slug>``, ``RUN/baselines/<name>`` or an ablation variant's).

    Args:
        slug: the folder's name (:func:`spec_slug` of its architecture, or a baseline's name).
        directory: the folder.
        folds: held-out folds whose ``fold_<k>/test_predictions.csv`` exists, ascending.
        weight_dirs: fold folders holding ``checkpoints/best_model.pt``: ``all`` first, then by fold.
    """

    slug: str
    directory: Path
    folds: tuple[int, ...]
    weight_dirs: tuple[str, ...] = ()

    def fold_dir(self, fold: int | None) -> Path:
        """``<directory>/fold_<fold>`` (``all`` for ``None``)."""
        return self.directory / fold_dir_name(fold)

    def predictions_path(self, fold: int) -> Path:
        """``<directory>/fold_<fold>/test_predictions.csv``."""
        return self.fold_dir(fold) / TEST_PREDICTIONS

    def checkpoint_path(self, fold: int | None) -> Path:
        """``<directory>/fold_<fold>/checkpoints/best_model.pt``."""
        return self.fold_dir(fold) / CHECKPOINT

    @property
    def cv_metrics_path(self) -> Path:
        """``<directory>/cv_metrics.json`` (written once every fold of a ``train_folds`` call finished)."""
        return self.directory / CV_METRICS

    def config(self) -> dict[str, Any]:
        """The training config (``config.json``) of the first finished fold that has one; ``{}`` when none does."""
        names = [fold_dir_name(f) for f in self.folds] + [n for n in self.weight_dirs if fold_of(n) not in self.folds]
        for name in names:
            try:
                return dict(json.loads((self.directory / name / FOLD_CONFIG).read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError, TypeError, ValueError):
                continue
        return {}

    @property
    def spec(self) -> str:
        """Its architecture: ``arch`` of its training config, else the folder's name."""
        return str(self.config().get("arch") or self.slug)


def _scan(directory: Path) -> TrainedNetwork:
    folds, weights = [], []
    for child in directory.iterdir():
        fold = fold_of(child.name)
        if fold is not None and (child / TEST_PREDICTIONS).is_file():
            folds.append(fold)
        if (fold is not None or child.name == ALL_FOLDS_DIR) and (child / CHECKPOINT).is_file():
            weights.append(child.name)
    return TrainedNetwork(directory.name, directory, tuple(sorted(folds)), tuple(sorted(weights, key=_weights_order)))


def find_trained_networks(folder: str | os.PathLike) -> dict[str, TrainedNetwork]:
    """The trained networks of a folder of network folders (``RUN/train``, ``RUN/baselines``), by slug, sorted.

    A network is trained when its folder holds a finished fold (test predictions or best weights) or its
    ``cv_metrics.json``; what each caller needs of it (test predictions for the ensemble, weights for a bundle,
    cross-validated metrics for the report) are the fields of :class:`TrainedNetwork`.
    """
    root = Path(folder)
    if not root.is_dir():
        return {}
    found = {}
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        network = _scan(directory)
        if network.folds or network.weight_dirs or network.cv_metrics_path.is_file():
            found[network.slug] = network
    return found


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder.

    Args:
        root: the run folder (``RUN``).
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # prepare
    @property
    def data_dir(self) -> Path:
        return self.root / DATA_DIR

    @property
    def manifest(self) -> Path:
        return self.data_dir / "manifest.csv"

    @property
    def rejects(self) -> Path:
        return self.data_dir / "rejects.csv"

    # search
    @property
    def search_dir(self) -> Path:
        return self.root / SEARCH_DIR

    @property
    def selected(self) -> Path:
        return self.search_dir / "selected.json"

    # train, baselines
    @property
    def train_dir(self) -> Path:
        return self.root / TRAIN_DIR

    def network_dir(self, network: Any) -> Path:
        """``RUN/train/<slug>`` of a spec, a slug or a factory name."""
        return self.train_dir / spec_slug(network)

    @property
    def baselines_dir(self) -> Path:
        return self.root / BASELINES_DIR

    def trained(self) -> dict[str, TrainedNetwork]:
        """The trained networks of ``RUN/train`` (:func:`find_trained_networks`)."""
        return find_trained_networks(self.train_dir)

    def baselines(self) -> dict[str, TrainedNetwork]:
        """The trained baselines of ``RUN/baselines``."""
        return find_trained_networks(self.baselines_dir)

    # ensemble
    @property
    def ensemble_dir(self) -> Path:
        return self.root / ENSEMBLE_DIR

    @property
    def ensemble_metrics(self) -> Path:
        return self.ensemble_dir / "metrics.json"

    @property
    def ensemble_per_fold(self) -> Path:
        return self.ensemble_dir / "per_fold.csv"

    def ensemble_predictions(self, fold: int) -> Path:
        return self.ensemble_dir / fold_dir_name(fold) / "predictions.csv"

    # evaluate
    @property
    def analysis_dir(self) -> Path:
        return self.root / ANALYSIS_DIR

    def ablation_dir(self, spec: Any, variant: str) -> Path:
        """``RUN/analysis/ablation/<slug>/<variant>``: networks the ablation trains itself."""
        return self.analysis_dir / "ablation" / spec_slug(spec) / variant

    # bundles, report, logs
    @property
    def bundles_dir(self) -> Path:
        return self.root / BUNDLES_DIR

    def bundle_dir(self, name: str) -> Path:
        return self.bundles_dir / name

    def bundles(self) -> list[Path]:
        """The exported bundles (folders with ``configs/inference.json``), sorted by name."""
        return [p.parent.parent for p in sorted(self.bundles_dir.glob("*/configs/inference.json"))]

    @property
    def smoke(self) -> Path:
        return self.bundles_dir / "smoke.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def run_summary(self) -> Path:
        return self.root / "run_summary.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS_DIR

    @property
    def run_log(self) -> Path:
        return self.logs_dir / "run.log"
