"""The ablation of the evaluate step (the paper's Tables 2-3): its variants, the networks trained or reused for each,
and the table of their held-out metrics beside the published ones."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from naslung.networks import count_parameters
from naslung.pipeline.atomic_io import atomic_open, write_csv
from naslung.pipeline.data.datalists import split_for_fold
from naslung.pipeline.ensemble.published import TABLE2_AVG, TABLE2_STD, TABLE3
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.metrics import BINARY_METRICS, summarise_folds
from naslung.pipeline.run.layout import (
    FOLD_METRICS,
    TEST_PREDICTIONS,
    fold_dir_name,
    spec_slug,
)
from naslung.pipeline.run.markers import fingerprint, is_done
from naslung.pipeline.run.members import load_trained_network
from naslung.pipeline.training.step import load_train_config, train_fold

__all__ = [
    "AblationVariant",
    "ABLATION_VARIANTS",
    "VariantRun",
    "train_variant",
    "variant_training_jobs",
    "ABLATION_FIELDS",
    "ablation_rows",
    "write_ablation",
]

logger = logging.getLogger(__name__)

#: Keys the training step sets itself per fold (as ``naslung.pipeline.training.step``); not part of a setting.
_RUNTIME_KEYS = ("train_data", "val_data", "test_data", "output_dir", "bundle_root", "dataset_dir")


@dataclasses.dataclass(frozen=True)
class AblationVariant:
    """One setting of the ablation (paper Table 2) or of the CBAM order (Table 3).

    Args:
        name: the row label (the paper's where it has one).
        attention: ``attention`` of the training config (``"channel_first"``, ``"spatial_first"``, ``"none"``).
        loss_name: ``loss_name`` of the training config (``"softmax"`` or ``"asoftmax"``).
        published: ``(table, method)`` of the paper's row for the same setting.
    """

    name: str
    attention: str
    loss_name: str
    published: tuple[str, str] | None = None

    def overrides(self) -> dict[str, str]:
        """Training-config overrides of this variant."""
        return {"attention": self.attention, "loss_name": self.loss_name}


#: The ablation variants by key (the config's ``ablation_variants`` lists keys).
ABLATION_VARIANTS: dict[str, AblationVariant] = {
    "base": AblationVariant("NAS (base)", "none", "softmax", ("table2", "NAS (base)")),
    "cbam": AblationVariant("NAS+CBAM", "channel_first", "softmax", ("table2", "NAS+CBAM")),
    "angular": AblationVariant("NAS+L_ang", "none", "asoftmax", ("table2", "NAS+L_ang")),
    "cbam_angular": AblationVariant(
        "NAS+CBAM+L_ang (channel-first)", "channel_first", "asoftmax", ("table2", "NAS+CBAM+L_ang")
    ),
    "spatial_first": AblationVariant(
        "NAS+CBAM+L_ang (spatial-first)", "spatial_first", "asoftmax", ("table3", "spatial-first")
    ),
}


@dataclasses.dataclass
class VariantRun:
    """The networks of one spec and ablation variant, one per held-out fold.

    Args:
        spec: architecture in the paper's notation.
        slug: its folder name.
        variant: key of :data:`ABLATION_VARIANTS`.
        fold_dirs: held-out fold -> folder with ``checkpoints/best_model.pt``, ``config.json``, ``metrics.json``.
        reused: held-out fold -> whether the network came from ``RUN/train`` rather than being trained here.
        per_fold: test metrics per fold (``fold`` plus :data:`naslung.pipeline.metrics.BINARY_METRICS`).
        params: parameter count (the same for every fold).
    """

    spec: str
    slug: str
    variant: str
    fold_dirs: dict[int, Path]
    reused: dict[int, bool]
    per_fold: list[dict[str, Any]]
    params: int | None = None

    @property
    def summary(self) -> dict[str, float | int]:
        """Mean ± std of the test metrics over folds."""
        return summarise_folds(self.per_fold, keys=BINARY_METRICS)


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _RUNTIME_KEYS}


def _reusable(fold_dir: Path, datalist: Sequence[Mapping[str, Any]], fold: int, merged: Mapping[str, Any]) -> bool:
    """Whether ``fold_dir`` holds a finished training of exactly this setting and split (as ``train_fold`` skips)."""
    if not (fold_dir / TEST_PREDICTIONS).is_file():
        return False
    split = split_for_fold(
        datalist, fold, val_fraction=float(merged.get("val_fraction", 0.1)), seed=int(merged["seed"])
    )
    ids = [[d["nodule_id"] for d in part] for part in (split.train, split.val, split.test)]
    return is_done(fold_dir, fingerprint(_comparable(merged), ids))


def _reused_fold_dir(
    reuse_dir: str | os.PathLike | None, datalist: Sequence[Mapping[str, Any]], fold: int, merged: Mapping[str, Any]
) -> Path | None:
    """``reuse_dir/fold_<k>`` when it holds a finished training of the ``merged`` setting on ``fold``'s split."""
    if reuse_dir is None:
        return None
    candidate = Path(reuse_dir) / fold_dir_name(fold)
    return candidate if _reusable(candidate, datalist, fold, merged) else None


def _variant_setting(
    spec: str,
    variant: str,
    base_config: str | os.PathLike | Mapping[str, Any] | None,
    train_overrides: Mapping[str, Any] | None,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(base config, overrides, merged config) of ``spec`` trained as ``variant``; ConfigError for an unknown one."""
    if variant not in ABLATION_VARIANTS:
        raise ConfigError(f"unknown ablation variant {variant!r}; choose among {list(ABLATION_VARIANTS)}")
    base = dict(base_config) if isinstance(base_config, Mapping) else base_config
    arch = spec
    if isinstance(base, dict) and spec_slug(str(base.get("arch", ""))) == spec_slug(spec):
        arch = base["arch"]  # the same network as written by `naslung train` (spacing may differ), so it can match
    overrides = {**(train_overrides or {}), "arch": arch, **ABLATION_VARIANTS[variant].overrides()}
    return base, overrides, load_train_config(base, overrides)


def variant_training_jobs(
    datalist: Sequence[Mapping[str, Any]],
    spec: str,
    variant: str,
    folds: Sequence[int],
    out_dir: str | os.PathLike,
    base_config: str | os.PathLike | Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    reuse_dir: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """The trainings :func:`train_variant` would run, as jobs for
    :func:`naslung.pipeline.training.step.train_fold_job`: one per held-out fold that ``reuse_dir`` cannot supply.

    Run them first (e.g. two at a time on an executor); :func:`train_variant` then finds them finished and only
    collects. Same arguments as :func:`train_variant`.
    """
    base, overrides, merged = _variant_setting(spec, variant, base_config, train_overrides)
    return [
        {"datalist": list(datalist), "test_fold": fold, "out_dir": str(out_dir), "config": base,
         "overrides": overrides}
        for fold in folds
        if _reused_fold_dir(reuse_dir, datalist, fold, merged) is None
    ]  # fmt: skip


def train_variant(
    datalist: Sequence[Mapping[str, Any]],
    spec: str,
    variant: str,
    folds: Sequence[int],
    out_dir: str | os.PathLike,
    base_config: str | os.PathLike | Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    reuse_dir: str | os.PathLike | None = None,
    show_progress: bool = False,
) -> VariantRun:
    """Train (or reuse) one network per held-out fold for ``spec`` with an ablation variant's settings.

    The setting is ``base_config`` + ``train_overrides`` + ``arch=spec`` + the variant's ``attention`` and
    ``loss_name``. A fold of ``reuse_dir`` (``RUN/train/<slug>``) is reused when it finished training with exactly
    this setting on the same split; otherwise the network is trained into ``out_dir/fold_<k>`` with
    :func:`naslung.pipeline.training.step.train_fold` (which itself skips finished folds).

    Args:
        datalist: the cohort's datalist (all folds).
        spec: architecture in the paper's notation.
        variant: key of :data:`ABLATION_VARIANTS`.
        folds: held-out folds.
        out_dir: where new networks go (``RUN/analysis/ablation/<slug>/<variant>``).
        base_config: the training config (file or dict) the variant modifies.
        train_overrides: further training-config overrides (MONAI ``#`` ids).
        reuse_dir: a folder of networks trained by ``naslung train`` that may hold this setting.
        show_progress: Ignite progress bars while training.

    Raises:
        ConfigError: for an unknown variant.
    """
    base, overrides, merged = _variant_setting(spec, variant, base_config, train_overrides)
    run = VariantRun(spec, spec_slug(spec), variant, {}, {}, [])
    for fold in folds:
        candidate = _reused_fold_dir(reuse_dir, datalist, fold, merged)
        if candidate is not None:
            logger.info("%s %s fold %d: reusing %s", spec, variant, fold, candidate)
            metrics = json.loads((candidate / FOLD_METRICS).read_text(encoding="utf-8"))
            run.fold_dirs[fold], run.reused[fold] = candidate, True
        else:
            metrics = train_fold(datalist, fold, out_dir, base, overrides, show_progress=show_progress)
            run.fold_dirs[fold], run.reused[fold] = Path(out_dir) / fold_dir_name(fold), False
        if "test" not in metrics:
            raise DataError(f"fold {fold} has no test metrics; re-run its training", path=str(run.fold_dirs[fold]))
        run.per_fold.append({"fold": fold, **{k: metrics["test"][k] for k in BINARY_METRICS}})
    if run.fold_dirs:
        run.params = count_parameters(load_trained_network(run.fold_dirs[folds[0]]))
    return run


# ------------------------------------------------------------------------------------------------- ablation
def _published_lookup(table: str, method: str) -> tuple[float | None, float | None]:
    """(F1, std) of a published ablation row in percent (std None where not printed)."""
    if table == "table2":
        mean = next((r.f1 for r in TABLE2_AVG if r.method == method), None)
        std = next((r.f1 for r in TABLE2_STD if r.method == method), None)
        return mean, std
    return next((r.f1 for r in TABLE3 if r.method == method), None), None


def ablation_rows(runs: Sequence[VariantRun]) -> list[dict[str, Any]]:
    """Rows of ``ablation.csv``: one per (spec, variant), then one per variant over specs (``spec == "all"``).

    Per network: mean ± std of each test metric over the held-out folds. Per variant: mean ± std over the
    specs of each spec's fold mean, as the paper's Table 2 reports its five best NAS models; parameters too.
    Metrics are fractions in [0, 1].
    """
    rows: list[dict[str, Any]] = []
    for run in runs:
        summary = run.summary
        variant = ABLATION_VARIANTS[run.variant]
        row: dict[str, Any] = {"spec": run.spec, "slug": run.slug, "variant": run.variant, "name": variant.name}
        row.update(attention=variant.attention, loss_name=variant.loss_name, folds=" ".join(map(str, run.fold_dirs)))
        row.update({k: summary[k] for k in summary if k != "n_folds"})
        row.update(params=run.params, params_std=0.0, n=summary["n_folds"], reused=all(run.reused.values()))
        rows.append(row)
    for key in dict.fromkeys(run.variant for run in runs):
        group = [r for r in rows if r["variant"] == key]
        variant = ABLATION_VARIANTS[key]
        means = [{m: r[f"{m}_mean"] for m in BINARY_METRICS} | {"params": r["params"] or math.nan} for r in group]
        summary = summarise_folds(means, keys=(*BINARY_METRICS, "params"))
        row = {"spec": "all", "slug": "", "variant": key, "name": variant.name, "attention": variant.attention}
        row.update(loss_name=variant.loss_name, folds=group[0]["folds"], n=len(group), reused=False)
        row.update({k: v for k, v in summary.items() if k != "n_folds"})
        row["params"], row["params_std"] = row.pop("params_mean"), row.get("params_std")
        rows.append(row)
    return rows


ABLATION_FIELDS: tuple[str, ...] = (
    "spec",
    "slug",
    "variant",
    "name",
    "attention",
    "loss_name",
    "folds",
    "n",
    *(f"{m}_{s}" for m in BINARY_METRICS for s in ("mean", "std")),
    "params",
    "params_std",
    "reused",
)


def _pm(mean: Any, std: Any, scale: float = 100.0, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{scale * float(mean):.{digits}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {scale * float(std):.{digits}f}"
    return text


def _params_cell(mean: Any, std: Any = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{float(mean):,.0f}"
    if std and not math.isnan(float(std)):
        text += f" ± {float(std):,.0f}"
    return text


def write_ablation(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``ablation.csv`` (all rows) and ``ablation.md`` (per-variant rows beside the published ones)."""
    out = Path(out_dir)
    write_csv(out / "ablation.csv", rows, ABLATION_FIELDS)
    overall = [r for r in rows if r["spec"] == "all"]
    networks = [r for r in rows if r["spec"] != "all"]
    specs = list(dict.fromkeys(r["spec"] for r in networks))
    lines = [
        f"Test-fold metrics (%) of {len(specs)} network(s) ({', '.join(f'`{s}`' for s in specs)}) on held-out "
        f"folds {overall[0]['folds'] if overall else ''}; with one network the ± is the std over folds, with "
        "several it is the std over networks of their fold means (as the paper's Table 2, whose 5 best NAS "
        "models were evaluated on folds 1-5). Published values are the paper's (Table 2, Table 3).",
        "",
        "| Variant | CBAM | Loss | F1 (%) | Accu. (%) | Sens. (%) | Spec. (%) | AUC (%) | params | published F1 (%) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in overall:
        variant = ABLATION_VARIANTS[row["variant"]]
        published = _published_lookup(*variant.published) if variant.published else (None, None)
        published_cell = "–" if published[0] is None else _pm(published[0], published[1], scale=1.0)
        if variant.published:
            published_cell += f" ({variant.published[0].replace('table', 'Table ')})"
        source = networks if len(specs) == 1 else [row]
        cell_row = next(r for r in source if r["variant"] == row["variant"])
        cells = [_pm(cell_row[f"{m}_mean"], cell_row[f"{m}_std"]) for m in ("f1", "accuracy", "sensitivity")]
        cells += [_pm(cell_row[f"{m}_mean"], cell_row[f"{m}_std"]) for m in ("specificity", "auc")]
        lines.append(
            f"| {variant.name} | {variant.attention} | {variant.loss_name} | " + " | ".join(cells) + " | "
            f"{_params_cell(row['params'], row['params_std'])} | {published_cell} |"
        )
    lines += ["", "Per network (mean ± std over folds):", "", "| spec | variant | F1 (%) | params | trained in |"]
    lines.append("|---|---|---:|---:|---|")
    for row in networks:
        where = "`train/` (reused)" if row["reused"] else "`analysis/ablation/`"
        lines.append(
            f"| `{row['spec']}` | {row['name']} | {_pm(row['f1_mean'], row['f1_std'])} | "
            f"{_params_cell(row['params'])} | {where} |"
        )
    with atomic_open(out / "ablation.md", "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return out / "ablation.md", out / "ablation.csv"
