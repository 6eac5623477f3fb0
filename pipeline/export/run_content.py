"""What a bundle takes from a run folder: the trained networks it ships, their held-out metrics and the data set
they were trained on."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.metrics import BINARY_METRICS
from naslung.pipeline.run.layout import CHECKPOINT, CV_METRICS, FOLD_CONFIG, RunLayout, fold_dir_name, spec_slug
from naslung.pipeline.search.journal import read_selected_specs

__all__ = [
    "BundleMember",
    "DataDescription",
    "read_json",
    "trained_members",
    "resolve_member",
    "default_members",
    "cv_eval_metrics",
    "ensemble_eval_metrics",
    "describe_data",
]


@dataclass
class BundleMember:
    """One trained network going into a bundle.

    Args:
        slug: folder name under ``RUN/train`` (:func:`naslung.pipeline.training.step.spec_slug`).
        spec: the architecture spec (paper notation) or network name from the fold's config.
        fold_dir: the fold folder whose weights are shipped (``all`` when trained without a test fold).
        weights: its ``checkpoints/best_model.pt`` (a plain ``state_dict``).
        config: the merged training config used for that fold (``config.json``).
        cv_metrics: ``RUN/train/<slug>/cv_metrics.json`` (held-out test metrics per fold), or None.
    """

    slug: str
    spec: str
    fold_dir: Path
    weights: Path
    config: dict[str, Any]
    cv_metrics: dict[str, Any] | None


def read_json(path: Path) -> Any:
    """The JSON content of a run file.

    Raises:
        DataError: the file is missing or not valid JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON ({err})", path=str(path)) from None


def trained_members(run_dir: str | os.PathLike) -> list[str]:
    """Slugs under ``RUN/train`` with at least one finished fold's weights (``checkpoints/best_model.pt``), sorted."""
    return [slug for slug, network in RunLayout(Path(run_dir)).trained().items() if network.weight_dirs]


def resolve_member(run_dir: str | os.PathLike, slug: str, fold: int | None = None) -> BundleMember:
    """Find the weights and config of a trained network in ``RUN/train/<slug>``.

    Without ``fold`` the network trained on all data (``all/``, :func:`train_fold` with ``test_fold=None``) is
    shipped when present, else the fold with the lowest number; the bundle states which.

    Args:
        run_dir: the run directory.
        slug: folder under ``RUN/train`` (a spec string is turned into its slug).
        fold: ship this held-out fold's model (``fold_<k>``).

    Raises:
        ConfigError: the network or fold was not trained (the message lists what was).
    """
    layout = RunLayout(Path(run_dir))
    if slug.strip().startswith("["):
        slug = spec_slug(slug)
    train_dir = layout.train_dir / slug
    if not train_dir.is_dir():
        raise ConfigError(
            f"no trained network {slug!r} in {layout.train_dir}; trained: {trained_members(layout.root) or 'none'} "
            "(run `naslung train` first)"
        )
    network = layout.trained().get(slug)
    names = [fold_dir_name(fold)] if fold is not None else list(network.weight_dirs if network else ())
    for folder in (train_dir / name for name in names):
        weights = folder / CHECKPOINT
        if weights.is_file() and (folder / FOLD_CONFIG).is_file():
            config = read_json(folder / FOLD_CONFIG)
            cv_path = train_dir / CV_METRICS
            cv_metrics = read_json(cv_path) if cv_path.is_file() else None
            return BundleMember(slug, str(config.get("arch", slug)), folder, weights, config, cv_metrics)
    what = f"fold {fold}" if fold is not None else "any fold"
    raise ConfigError(f"{train_dir}: {what} has no checkpoints/best_model.pt and config.json; finish training first")


def default_members(run_dir: str | os.PathLike, ensemble: bool) -> list[str]:
    """The networks a bundle ships when ``--member`` is not given.

    A single-network bundle takes the only trained network, else the first spec of ``RUN/search/selected.json``
    that was trained (the search picks on validation data, never on test folds). An ensemble takes the members
    listed in ``RUN/ensemble/metrics.json`` (key ``members``), else the trained specs of ``selected.json``, else
    every trained network.

    Raises:
        ConfigError: no trained network, an ambiguous choice, or fewer than two ensemble members.
    """
    run = Path(run_dir)
    trained = trained_members(run)
    if not trained:
        raise ConfigError(f"no trained network in {run / 'train'}; run `naslung train` first")
    selected = [s for s in (spec_slug(spec) for spec in read_selected_specs(run)) if s in trained]
    if not ensemble:
        if len(trained) == 1:
            return trained
        if selected:
            return selected[:1]
        raise ConfigError(f"{len(trained)} trained networks ({trained}); choose one with --member SLUG")
    members: list[str] = []
    metrics_path = RunLayout(run).ensemble_metrics
    if metrics_path.is_file():
        listed = read_json(metrics_path)
        listed = listed.get("members", []) if isinstance(listed, dict) else []
        for entry in listed:
            name = str(entry.get("slug") or entry.get("spec", "")) if isinstance(entry, dict) else str(entry)
            members.append(spec_slug(name) if name.strip().startswith("[") else name)
    members = members or selected or trained
    if len(members) < 2:
        raise ConfigError(f"an ensemble needs at least two trained networks, found {members}; train more specs")
    return members


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def cv_eval_metrics(cv_metrics: dict[str, Any] | None) -> dict[str, Any]:
    """Mean and std of the held-out test metrics over folds from ``cv_metrics.json`` (NaN left out)."""
    if not cv_metrics:
        return {}
    summary = cv_metrics.get("summary") or {}
    metrics: dict[str, Any] = {}
    for name in BINARY_METRICS:
        for stat in ("mean", "std"):
            value = summary.get(f"{name}_{stat}")
            if _finite_number(value):
                metrics[f"{name}_{stat}"] = float(value)
    if metrics:
        metrics["n_folds"] = int(summary.get("n_folds", len(cv_metrics.get("folds", []))))
        metrics["test_folds"] = [int(f) for f in cv_metrics.get("folds", [])]
    return metrics


def ensemble_eval_metrics(run: Path) -> dict[str, Any]:
    """Held-out metrics of the ensemble from ``RUN/ensemble/metrics.json`` (top level or under a summary key)."""
    path = run / "ensemble" / "metrics.json"
    if not path.is_file():
        return {}
    content = read_json(path)
    if not isinstance(content, dict):
        return {}
    for scope in (content, *(content.get(k) for k in ("summary", "ensemble", "test", "metrics"))):
        if not isinstance(scope, dict):
            continue
        found = {
            key: float(scope[key])
            for name in BINARY_METRICS
            for key in (name, f"{name}_mean", f"{name}_std")
            if _finite_number(scope.get(key))
        }
        if found:
            folds = content.get("folds")
            if isinstance(folds, list):
                found.update(n_folds=len(folds), test_folds=[int(f) for f in folds])
            return found
    return {}


@dataclass
class DataDescription:
    """The data set a run was trained on, from ``RUN/data/manifest.csv`` (for the bundle's README and metadata)."""

    kind: str  # "embedded", "lidc" or "other"
    sources: list[str]
    n_nodules: int
    n_malignant: int
    n_patients: int


def describe_data(run: Path) -> DataDescription:
    """The data set of ``RUN/data/manifest.csv``: kind, sources and counts (kind ``other`` without a manifest)."""
    manifest = run / "data" / "manifest.csv"
    if not manifest.is_file():
        return DataDescription("other", [], 0, 0, 0)
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    sources = sorted({(row.get("source") or "").strip() or "unknown" for row in rows})
    lowered = [s.lower() for s in sources]
    if lowered and all(s == "embedded" for s in lowered):
        kind = "embedded"
    elif any("lidc" in s or "luna" in s for s in lowered):
        kind = "lidc"
    else:
        kind = "other"
    malignant = sum(1 for row in rows if str(row.get("label", "")).strip() == "1")
    patients = len({row.get("patient_id", "") for row in rows})
    return DataDescription(kind, sources, len(rows), malignant, patients)
