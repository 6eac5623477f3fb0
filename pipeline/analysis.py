"""The ``naslung evaluate`` step: ablation (Tables 2-3), feature discriminability and t-SNE (Table 4, Fig. 6),
attention and Grad-CAM maps (Fig. 5) and training curves, from the networks of a run directory.

Writes ``RUN/analysis/``::

    ablation.md / ablation.csv                 F1 (and the other metrics) and parameters per ablation variant
    ablation/<slug>/<variant>/fold_<k>/        networks trained for a variant RUN/train does not already hold
    discriminability.md / discriminability.csv S0, S1, M01, DBI of penultimate features, Softmax vs A-Softmax
    tsne.png                                   t-SNE of those features, side by side (Fig. 6)
    attention.png                              CT slice beside its stage-2 spatial attention map (Fig. 5)
    gradcam.png                                Grad-CAM of the last stage (``monai.visualize.GradCAM``)
    training_curves_<slug>.png                 loss and validation F1 per epoch of each trained network
    summary.json, done.json

Every network is trained on the training folds of one held-out fold, validated on patients carved from them,
and only scored or visualised on the held-out fold, which picks nothing (no network, checkpoint or threshold).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from naslung.networks import count_parameters
from naslung.pipeline.atomic_io import atomic_open, read_jsonl, write_csv, write_json
from naslung.pipeline.datalists import read_manifest, split_for_fold
from naslung.pipeline.discriminability import class_separation, tsne_embedding
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.figures import plot_attention_panels, plot_gradcam_panels, plot_training_curves, plot_tsne
from naslung.pipeline.metrics import BINARY_METRICS, summarise_folds
from naslung.pipeline.progress import Progress, no_progress
from naslung.pipeline.published import TABLE2_AVG, TABLE2_STD, TABLE3, TABLE4
from naslung.pipeline.run.config import CONFIG_FILES, merge_config
from naslung.pipeline.run.layout import (
    DONE_FILE,
    FOLD_CONFIG,
    FOLD_METRICS,
    HISTORY,
    TEST_PREDICTIONS,
    RunLayout,
    TrainedNetwork,
    fold_dir_name,
    fold_of,
    spec_slug,
)
from naslung.pipeline.run.members import load_trained_network
from naslung.pipeline.search.journal import read_selected_specs
from naslung.pipeline.steps import fingerprint, is_done, mark_done
from naslung.pipeline.training import load_train_config, train_fold
from naslung.transforms import eval_transforms

__all__ = [
    "DEFAULT_EVALUATE_CONFIG",
    "ANALYSES",
    "AblationVariant",
    "ABLATION_VARIANTS",
    "VariantRun",
    "load_evaluate_config",
    "load_cubes",
    "penultimate_features",
    "default_gradcam_layer",
    "gradcam_maps",
    "train_variant",
    "ABLATION_FIELDS",
    "ablation_rows",
    "write_ablation",
    "DISCRIMINABILITY_FIELDS",
    "discriminability_rows",
    "write_discriminability",
    "attention_figure",
    "gradcam_figure",
    "training_curve_figures",
    "run_evaluate_step",
]

logger = logging.getLogger(__name__)

#: The packaged evaluation config (bundle-style JSON); every key can be overridden.
DEFAULT_EVALUATE_CONFIG = CONFIG_FILES["evaluate"]
#: Analyses ``naslung evaluate`` can run (the config's ``analyses`` picks among them).
ANALYSES: tuple[str, ...] = ("ablation", "discriminability", "attention", "gradcam", "training_curves")
#: Keys the training step sets itself per fold (as ``naslung.pipeline.training``); not part of a setting.
_RUNTIME_KEYS = ("train_data", "val_data", "test_data", "output_dir", "bundle_root", "dataset_dir")
_LOSS_NAMES = {"softmax": "Softmax", "asoftmax": "A-Softmax"}
_POOLING = (
    torch.nn.modules.pooling._AdaptiveAvgPoolNd,
    torch.nn.modules.pooling._AdaptiveMaxPoolNd,
    torch.nn.modules.pooling._AvgPoolNd,
    torch.nn.modules.pooling._MaxPoolNd,
)


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


# ----------------------------------------------------------------------------------------------------- config
def load_evaluate_config(
    config: str | os.PathLike | Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Merge the packaged ``evaluate.json`` with a user config (file or dict), then ``overrides``.

    Keys use MONAI's ``#`` separator for nested entries (``"tsne#perplexity": 10``); values are taken as they
    are (no ``$`` expressions are evaluated), and ``train_overrides`` is handed to
    :func:`naslung.pipeline.training.load_train_config` unchanged (:func:`naslung.pipeline.run.config.merge_config`).

    Raises:
        ConfigError: a missing or unreadable file, an unknown key, an unknown analysis or variant.
    """
    parser = merge_config("evaluate", config, overrides)
    merged = copy.deepcopy(parser.config)
    unknown = [a for a in merged["analyses"] if a not in ANALYSES]
    if unknown:
        raise ConfigError(f"unknown analyses {unknown} in 'analyses'; choose among {list(ANALYSES)}")
    variants = list(merged["ablation_variants"]) + list(merged["discriminability_variants"].values())
    variants.append(merged["attention_variant"])
    bad = sorted({v for v in variants if v not in ABLATION_VARIANTS})
    if bad:
        raise ConfigError(f"unknown ablation variant(s) {bad}; choose among {list(ABLATION_VARIANTS)}")
    bad_norms = [n for n in merged["feature_normalisations"] if n not in ("raw", "l2")]
    if bad_norms:
        raise ConfigError(f"feature_normalisations {bad_norms}: use 'raw' and/or 'l2'")
    return merged


# --------------------------------------------------------------------------------------------- networks, data
def load_cubes(datalist: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """Cubes of a datalist through the evaluation transforms.

    Returns:
        ``(images, labels, nodule_ids)``: ``(N, 1, 32, 32, 32)`` float tensor, ``(N,)`` int labels, ids.

    Raises:
        DataError: for an empty datalist.
    """
    if not datalist:
        raise DataError("no cubes to load: the datalist is empty")
    transform = eval_transforms()
    items = [transform(dict(d)) for d in datalist]
    images = torch.stack([torch.as_tensor(item["image"]) for item in items]).float()
    labels = np.array([int(d["label"]) for d in datalist], dtype=np.int64)
    ids = [str(d.get("nodule_id", i)) for i, d in enumerate(datalist)]
    return images, labels, ids


@torch.no_grad()
def penultimate_features(
    network: torch.nn.Module, images: torch.Tensor, device: str | torch.device = "cpu", batch_size: int = 32
) -> np.ndarray:
    """Penultimate-layer features (the head's input) of ``images`` (B, 1, D, H, W) -> ``(B, C)``.

    Uses the network's ``features(x)`` (:class:`naslung.networks.CBAMResNet3D`), in eval mode.

    Raises:
        ConfigError: when the network has no ``features`` method (MONAI's baselines).
    """
    if not callable(getattr(network, "features", None)):
        raise ConfigError(
            f"{type(network).__name__} has no features(x) method; feature discriminability needs a NAS-Lung network"
        )
    network.eval()
    chunks = [network.features(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(chunks).double().numpy()


def default_gradcam_layer(network: torch.nn.Module, input_shape: Sequence[int] = (1, 32, 32, 32)) -> str:
    """The layer Grad-CAM should look at: the last module (in the order modules finish their forward pass)
    whose output still has the input's spatial axes, pooling layers excluded.

    That is the output of the last convolutional stage, the input of the global pooling: ``"stage5"`` of
    :class:`naslung.networks.CBAMResNet3D` (after its CBAM, 4^3 for a 32^3 cube; the head is a linear or
    angular layer on the pooled features, and in eval mode it returns ``(B, 2)`` logits, the score MONAI's
    Grad-CAM differentiates), ``"class_layers.relu"`` of MONAI's DenseNet121 (as MONAI's documentation uses)
    and ``"layer4"`` of MONAI's ResNets. A container finishes after its children, so the outermost folder of
    the last stage is returned.

    Args:
        network: any network of :func:`naslung.networks.build_network` (or another classifier).
        input_shape: shape of one input without the batch axis, ``(C, *spatial)``.

    Raises:
        ConfigError: when no module keeps the spatial axes.
    """
    finished: list[tuple[str, torch.nn.Module, Any]] = []
    handles = [
        module.register_forward_hook(lambda mod, _inp, out, name=name: finished.append((name, mod, out)))
        for name, module in network.named_modules()
        if name
    ]
    was_training = network.training
    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    try:
        network.eval()
        with torch.no_grad():
            network(torch.zeros((1, *input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
        network.train(was_training)
    ndim = len(input_shape) + 1
    for name, module, output in reversed(finished):
        if isinstance(output, torch.Tensor) and output.ndim == ndim and not isinstance(module, _POOLING):
            return name
    raise ConfigError(f"{type(network).__name__}: no layer keeps the spatial axes; name the Grad-CAM layer")


def gradcam_maps(
    network: torch.nn.Module,
    images: torch.Tensor,
    target_layer: str | None = None,
    class_idx: int | None = None,
) -> np.ndarray:
    """Grad-CAM maps (Selvaraju et al. 2017) with ``monai.visualize.GradCAM``, upsampled to the input size.

    Works for every network of the factory (NAS-Lung candidates and MONAI's 3D baselines). The network is
    deep-copied first, because MONAI's hooks stay registered on the module and it switches off the target
    layer's ``inplace`` flag. Each nodule is processed alone (MONAI scores a batch by summing the logits of
    every sample's arg-max class over all samples, which mixes nodules). MONAI's default post-processing maps
    (min, max) to (1, 0), reversing magnitudes; here the ReLU'd, trilinearly upsampled map is returned as is
    (0 = no evidence; larger = more), so callers scale it for display.

    Args:
        network: a classifier returning ``(B, K)`` logits in eval mode.
        images: ``(B, C, *spatial)`` inputs, e.g. ``(B, 1, 32, 32, 32)`` cubes.
        target_layer: module name (``dict(network.named_modules())`` key); default :func:`default_gradcam_layer`.
        class_idx: the class whose logit is explained (1 = malignant); ``None``: each nodule's predicted class.

    Returns:
        ``(B, *spatial)`` float32 maps, non-negative.
    """
    from monai.visualize import GradCAM

    model = copy.deepcopy(network).eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    layer = target_layer or default_gradcam_layer(model, tuple(images.shape[1:]))
    names = dict(model.named_modules())
    if layer not in names:
        raise ConfigError(f"Grad-CAM layer {layer!r} is not a module of {type(network).__name__}")
    cam = GradCAM(nn_module=model, target_layers=layer, postprocessing=lambda x: x)
    maps = []
    with torch.enable_grad():
        for image in images:
            result = cam(x=image[None].to(device).float(), class_idx=class_idx)
            maps.append(torch.as_tensor(result)[0, 0].detach().float().cpu().numpy())
    return np.stack(maps).astype(np.float32)


# ------------------------------------------------------------------------------------------------- training
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
    :func:`naslung.pipeline.training.train_fold` (which itself skips finished folds).

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
    if variant not in ABLATION_VARIANTS:
        raise ConfigError(f"unknown ablation variant {variant!r}; choose among {list(ABLATION_VARIANTS)}")
    base = dict(base_config) if isinstance(base_config, Mapping) else base_config
    arch = spec
    if isinstance(base, dict) and spec_slug(str(base.get("arch", ""))) == spec_slug(spec):
        arch = base["arch"]  # the same network as written by `naslung train` (spacing may differ), so it can match
    overrides = {**(train_overrides or {}), "arch": arch, **ABLATION_VARIANTS[variant].overrides()}
    merged = load_train_config(base, overrides)
    run = VariantRun(spec, spec_slug(spec), variant, {}, {}, [])
    for fold in folds:
        candidate = None if reuse_dir is None else Path(reuse_dir) / fold_dir_name(fold)
        if candidate is not None and _reusable(candidate, datalist, fold, merged):
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


def _sig(mean: Any, std: Any) -> str:
    """``mean ± std`` with 4 significant digits (feature distances span orders of magnitude)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{float(mean):.4g}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {float(std):.2g}"
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


# ----------------------------------------------------------------------------------------- discriminability
DISCRIMINABILITY_FIELDS: tuple[str, ...] = (
    "source",
    "loss",
    "variant",
    "features",
    "n",
    *(f"{k}_{s}" for k in ("S0", "S1", "M01", "DBI") for s in ("mean", "std")),
)


def discriminability_rows(
    features: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    variants: Mapping[str, str],
    normalisations: Sequence[str] = ("raw", "l2"),
) -> list[dict[str, Any]]:
    """Table 4 rows: S0, S1, M01 and DBI (eq. 12-14) per loss and feature normalisation, mean ± std over networks.

    Args:
        features: loss name -> one ``(features (N, C), labels (N,))`` pair per network (spec and held-out fold),
            the features of that fold's test cubes.
        variants: loss name -> variant key (for the ``variant`` column).
        normalisations: ``"raw"`` features and/or ``"l2"`` (each vector scaled to unit length first).
    """
    rows = []
    for loss, pairs in features.items():
        for norm in normalisations:
            values = [class_separation(f, y, l2_normalize=norm == "l2") for f, y in pairs]
            summary = summarise_folds(values, keys=("S0", "S1", "M01", "DBI"))
            row = {"source": "ours", "loss": loss, "variant": variants.get(loss, ""), "features": norm}
            row.update({k: v for k, v in summary.items() if k != "n_folds"}, n=len(values))
            rows.append(row)
    return rows


def write_discriminability(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``discriminability.csv`` and ``.md``: our rows, then the paper's Table 4 (marked published)."""
    out = Path(out_dir)
    keys = ("S0", "S1", "M01", "DBI")
    published = [
        {"source": "published", "loss": r["loss"], "features": "unknown", "n": "", **{f"{k}_mean": r[k] for k in keys}}
        for r in TABLE4
    ]
    write_csv(out / "discriminability.csv", [*rows, *published], DISCRIMINABILITY_FIELDS)
    n_networks = rows[0]["n"] if rows else 0
    lines = [
        "Penultimate-layer features of the held-out test cubes (each fold's own network): mean intra-class "
        "distance S0 (benign) and S1 (malignant), distance of the class centres M01, and Davies-Bouldin index "
        f"DBI = (S0 + S1) / M01 (lower = more separable); mean ± std over {n_networks} network(s) "
        "(specs × held-out folds). `l2`: each feature vector scaled to unit length first (the paper does not say "
        "which it used; DBI is unchanged by one global scale, S and M are not).",
        "",
        "| Loss | Features | Source | S0 | S1 | M01 | DBI |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [_sig(row[f"{k}_mean"], row[f"{k}_std"]) for k in ("S0", "S1", "M01", "DBI")]
        lines.append(f"| {row['loss']} | {row['features']} | ours | " + " | ".join(cells) + " |")
    for row in published:
        cells = [f"{row[f'{k}_mean']:.3f}" for k in ("S0", "S1", "M01", "DBI")]
        lines.append(f"| {row['loss']} | – | published (Table 4) | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("The paper's A-Softmax row prints DBI 1.453 where (S0 + S1) / M01 of its own numbers is 1.379.")
    with atomic_open(out / "discriminability.md", "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return out / "discriminability.md", out / "discriminability.csv"


# -------------------------------------------------------------------------------------------------- figures
def _examples(datalist: Sequence[Mapping[str, Any]], per_class: int) -> list[Mapping[str, Any]]:
    """The first ``per_class`` malignant and benign nodules of a fold, by nodule id (chosen by label only)."""
    ordered = sorted(datalist, key=lambda d: str(d["nodule_id"]))
    malignant = [d for d in ordered if int(d["label"]) == 1][:per_class]
    benign = [d for d in ordered if int(d["label"]) == 0][:per_class]
    return malignant + benign


def attention_figure(
    fold_dir: str | os.PathLike,
    test_items: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    per_class: int = 3,
    stage: str = "stage2",
    title: str | None = None,
) -> Path:
    """Fig. 5: CT slices beside the ``stage`` spatial attention map of a trained CBAM network.

    Args:
        fold_dir: the trained network's fold folder.
        test_items: the held-out fold's datalist items; the first ``per_class`` of each class (by nodule id) are drawn.
        path: PNG to write.
        per_class: nodules per class.
        stage: which stage's CBAM map (``"stage2"``: full resolution, as the paper shows).
        title: figure title.

    Raises:
        ConfigError: when the network records no attention map for ``stage`` (no CBAM).
    """
    network = load_trained_network(fold_dir)
    chosen = _examples(test_items, per_class)
    images, labels, ids = load_cubes(chosen)
    with torch.no_grad():
        probabilities = torch.softmax(network(images), dim=1)[:, 1].numpy()
    maps = network.attention_maps() if callable(getattr(network, "attention_maps", None)) else {}
    if stage not in maps:
        raise ConfigError(f"{fold_dir}: the network records no {stage} attention map (trained without CBAM?)")
    names = [f"{i}\n(p={p:.2f})" for i, p in zip(ids, probabilities, strict=True)]  # two lines: ids are long
    return plot_attention_panels(
        images,
        maps[stage],
        labels,
        path,
        max_per_class=per_class,
        nodule_ids=names,
        title=title or f"{stage.replace('stage', 'Stage-')} spatial attention",
    )


def gradcam_figure(
    fold_dir: str | os.PathLike,
    test_items: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    per_class: int = 3,
    target_layer: str | None = None,
    class_idx: int | None = None,
    title: str | None = None,
) -> Path:
    """Grad-CAM panels (CT slice, map, overlay) of a trained network on held-out nodules; see :func:`gradcam_maps`."""
    network = load_trained_network(fold_dir)
    chosen = _examples(test_items, per_class)
    images, labels, ids = load_cubes(chosen)
    layer = target_layer or default_gradcam_layer(network, tuple(images.shape[1:]))
    cams = gradcam_maps(network, images, layer, class_idx)
    with torch.no_grad():
        probabilities = torch.softmax(network(images), dim=1)[:, 1].numpy()
    names = [f"{i}\n(p={p:.2f})" for i, p in zip(ids, probabilities, strict=True)]  # two lines: ids are long
    target = "predicted class" if class_idx is None else f"class {class_idx}"
    return plot_gradcam_panels(
        images,
        cams,
        labels,
        path,
        max_per_class=per_class,
        nodule_ids=names,
        title=f"{title or 'Grad-CAM'}: layer '{layer}', {target}",
    )


def training_curve_figures(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """One PNG per network of ``RUN/train``: training loss and validation F1 per epoch, one line per fold.

    Returns:
        the written ``training_curves_<slug>.png`` paths.
    """
    written = []
    for member in RunLayout(Path(run_dir)).trained().values():
        records: list[dict[str, Any]] = []
        spec = member.slug
        fold_dirs = sorted(
            (d for d in member.directory.iterdir() if fold_of(d.name) is not None), key=lambda d: fold_of(d.name)
        )
        for fold_dir in fold_dirs:
            fold = fold_of(fold_dir.name)
            for record in read_jsonl(fold_dir / HISTORY):
                entry: dict[str, Any] = {"epoch": record.get("epoch")}
                for key in ("train_loss", "val_f1"):
                    if key in record:
                        entry[f"{key} (fold {fold})"] = record[key]
                records.append(entry)
            config = fold_dir / FOLD_CONFIG
            if config.is_file():
                spec = str(json.loads(config.read_text(encoding="utf-8")).get("arch", spec))
        if not records:
            continue
        written.append(
            plot_training_curves(
                records, Path(out_dir) / f"training_curves_{member.slug}.png", title=f"Training curves of {spec}"
            )
        )
    return written


# ------------------------------------------------------------------------------------------------ the step
def _resolve_specs(run: Path, cfg: Mapping[str, Any], trained: Mapping[str, TrainedNetwork]) -> list[str]:
    specs = [str(s) for s in cfg["specs"]] or read_selected_specs(run)
    if not specs:
        specs = [t.spec for t in trained.values()]
    specs = [s for s in dict.fromkeys(specs) if s.strip().startswith("[")]  # ablations need NAS-Lung specs
    if not specs:
        raise ConfigError(
            "no NAS-Lung architecture to analyse: set 'specs' in the evaluation config, or run `naslung search` / "
            "`naslung train --arch '[...]'` first"
        )
    return specs[: int(cfg["max_specs"])]


def _resolve_folds(
    cfg: Mapping[str, Any],
    datalist: Sequence[Mapping[str, Any]],
    trained_folds: Sequence[int],
    train_folds: Sequence[int],
) -> list[int]:
    present = {int(d["fold"]) for d in datalist}
    folds = [int(f) for f in cfg["folds"]] or list(trained_folds) or [int(f) for f in train_folds]
    missing = [f for f in folds if f not in present]
    if missing:
        raise ConfigError(f"folds {missing} hold no nodules; folds in the data: {sorted(present)}")
    return folds


def run_evaluate_step(
    run_dir: str | os.PathLike,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    force: bool = False,
    show_progress: bool = False,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Run the analyses of the evaluation config on ``run_dir`` and write ``RUN/analysis`` (module docstring).

    Specs are the config's ``specs``, else ``RUN/search/selected.json``'s, else those trained in ``RUN/train``
    (at most ``max_specs``). The training setting of each spec is its ``RUN/train`` fold's ``config.json`` (or
    the config's ``train_config``, or the packaged one) plus ``train_overrides``; the ablation changes only
    ``attention`` and ``loss_name``. Held-out folds are the config's ``folds``, else those ``RUN/train`` used,
    else the training config's.

    Args:
        run_dir: the run directory; ``RUN/data/manifest.csv`` must exist.
        config: evaluation config (file or dict) over the packaged ``evaluate.json``.
        overrides: last-word overrides (MONAI ``#`` ids).
        force: redo the analyses even when up to date (finished trainings are still reused).
        show_progress: Ignite progress bars while training.
        progress: wraps the loop over networks to train.

    Returns:
        ``summary.json``'s content plus ``"skipped": bool``.

    Raises:
        DataError: a missing manifest or training output; ConfigError: a bad config.
    """
    layout = RunLayout(Path(run_dir))
    run, out = layout.root, layout.analysis_dir
    cfg = load_evaluate_config(config, overrides)
    manifest = layout.manifest
    datalist = read_manifest(manifest)
    trained = {slug: network for slug, network in layout.trained().items() if network.folds}
    specs = _resolve_specs(run, cfg, trained)
    first_trained = trained.get(spec_slug(specs[0]))
    train_cfg_folds = load_train_config(cfg["train_config"], dict(cfg["train_overrides"]))["folds"]
    folds = _resolve_folds(cfg, datalist, first_trained.folds if first_trained else [], train_cfg_folds)
    done_files = [n.fold_dir(f) / DONE_FILE for n in layout.trained().values() for f in n.folds]
    done_markers = sorted(str(p.stat().st_mtime_ns) for p in done_files if p.is_file())
    digest = fingerprint(cfg, specs, folds, [manifest.stat().st_size, manifest.stat().st_mtime_ns], done_markers)
    if not force and is_done(out, digest):
        logger.info("%s is up to date; skipping", out)
        return {**json.loads((out / "summary.json").read_text(encoding="utf-8")), "skipped": True}

    analyses = list(cfg["analyses"])
    jobs: list[tuple[str, str]] = []
    if "ablation" in analyses:
        jobs += [(spec, v) for spec in specs for v in cfg["ablation_variants"]]
    if "discriminability" in analyses:
        jobs += [(spec, v) for spec in specs for v in cfg["discriminability_variants"].values()]
    if {"attention", "gradcam"} & set(analyses):
        jobs.append((specs[0], cfg["attention_variant"]))
    jobs = list(dict.fromkeys(jobs))

    runs: dict[tuple[str, str], VariantRun] = {}
    for spec, variant in progress(jobs, total=len(jobs), desc="analysis networks"):
        slug = spec_slug(spec)
        base = cfg["train_config"] or (trained[slug].config() if slug in trained else None)
        runs[(spec, variant)] = train_variant(
            datalist,
            spec,
            variant,
            folds,
            layout.ablation_dir(spec, variant),
            base,
            dict(cfg["train_overrides"]),
            reuse_dir=layout.network_dir(slug),
            show_progress=show_progress,
        )

    summary: dict[str, Any] = {"specs": specs, "folds": folds, "analyses": analyses, "outputs": []}
    outputs: list[str] = ["summary.json"]
    if "ablation" in analyses:
        rows = ablation_rows([runs[(s, v)] for s in specs for v in cfg["ablation_variants"]])
        write_ablation(rows, out)
        outputs += ["ablation.md", "ablation.csv"]
        summary["ablation"] = [
            {k: r[k] for k in ("variant", "name", "f1_mean", "f1_std", "params")} for r in rows if r["spec"] == "all"
        ]
    fold_items = {f: [d for d in datalist if int(d["fold"]) == f] for f in folds}
    if "discriminability" in analyses:
        variants = dict(cfg["discriminability_variants"])
        features: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {loss: [] for loss in variants}
        tsne_inputs = []
        for loss, variant in variants.items():
            for spec in specs:
                for fold in folds:
                    network = load_trained_network(runs[(spec, variant)].fold_dirs[fold], cfg["device"])
                    images, labels, _ = load_cubes(fold_items[fold])
                    features[loss].append(
                        (penultimate_features(network, images, cfg["device"], int(cfg["batch_size"])), labels)
                    )
            tsne_inputs.append(features[loss][0])
        rows = discriminability_rows(features, variants, cfg["feature_normalisations"])
        write_discriminability(rows, out)
        outputs += ["discriminability.md", "discriminability.csv", "tsne.png"]
        summary["discriminability"] = [{k: r[k] for k in ("loss", "features", "DBI_mean", "DBI_std")} for r in rows]
        _tsne_figure(tsne_inputs, list(variants), cfg["tsne"], out / "tsne.png", specs[0], folds[0])
    attention_run = runs.get((specs[0], cfg["attention_variant"]))
    gradcam_loss = ABLATION_VARIANTS[cfg["attention_variant"]].loss_name
    if "attention" in analyses and attention_run is not None:
        attention_figure(
            attention_run.fold_dirs[folds[0]],
            fold_items[folds[0]],
            out / "attention.png",
            int(cfg["attention_examples"]),
            cfg["attention_stage"],
            title=f"{cfg['attention_stage'].replace('stage', 'Stage-')} spatial attention of {specs[0]} "
            f"({_LOSS_NAMES[gradcam_loss]}), held-out fold {folds[0]}",
        )
        outputs.append("attention.png")
    if "gradcam" in analyses and attention_run is not None:
        gradcam_figure(
            attention_run.fold_dirs[folds[0]],
            fold_items[folds[0]],
            out / "gradcam.png",
            int(cfg["attention_examples"]),
            cfg["gradcam_layer"],
            cfg["gradcam_class"],
            title=f"Grad-CAM of {specs[0]} ({_LOSS_NAMES[gradcam_loss]}), held-out fold {folds[0]}",
        )
        outputs.append("gradcam.png")
    if "training_curves" in analyses:
        curves = training_curve_figures(run, out)
        outputs += [p.name for p in curves]
    summary["outputs"] = outputs
    summary["networks"] = [
        {"spec": r.spec, "variant": r.variant, "reused_folds": [f for f, used in r.reused.items() if used]}
        for r in runs.values()
    ]
    write_json(out / "summary.json", summary)
    mark_done(out, digest, outputs, {"specs": specs, "folds": folds})
    return {**summary, "skipped": False}


def _tsne_figure(
    inputs: Sequence[tuple[np.ndarray, np.ndarray]],
    losses: Sequence[str],
    tsne_cfg: Mapping[str, Any],
    path: Path,
    spec: str,
    fold: int,
) -> Path:
    embeddings = [
        tsne_embedding(
            feats,
            seed=int(tsne_cfg.get("seed", 0)),
            perplexity=float(tsne_cfg.get("perplexity", 30.0)),
            l2_normalize=bool(tsne_cfg.get("l2_normalize", False)),
        )
        for feats, _ in inputs
    ]
    letters = "abcdefghij"
    return plot_tsne(
        embeddings,
        [labels for _, labels in inputs],
        path,
        title=f"t-SNE of penultimate features of {spec}, held-out fold {fold}",
        panel_titles=[f"({letters[i]}) {loss} loss" for i, loss in enumerate(losses)],
    )
