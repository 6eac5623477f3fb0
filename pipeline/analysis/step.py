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
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.analysis.ablation import (
    ABLATION_VARIANTS,
    VariantRun,
    ablation_rows,
    train_variant,
    variant_training_jobs,
    write_ablation,
)
from naslung.pipeline.analysis.discriminability import (
    discriminability_rows,
    tsne_embedding,
    write_discriminability,
)
from naslung.pipeline.analysis.features import load_cubes, penultimate_features
from naslung.pipeline.analysis.figures import attention_figure, gradcam_figure, plot_tsne, training_curve_figures
from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.errors import ConfigError
from naslung.pipeline.progress import Progress, no_progress
from naslung.pipeline.run.config import CONFIG_FILES, merge_config
from naslung.pipeline.run.layout import (
    DONE_FILE,
    RunLayout,
    TrainedNetwork,
    spec_slug,
)
from naslung.pipeline.run.markers import fingerprint, is_done, mark_done
from naslung.pipeline.run.members import load_trained_network
from naslung.pipeline.search.journal import read_selected_specs
from naslung.pipeline.training.step import load_train_config

__all__ = ["DEFAULT_EVALUATE_CONFIG", "ANALYSES", "load_evaluate_config", "run_evaluate_step"]

logger = logging.getLogger(__name__)

#: The packaged evaluation config (bundle-style JSON); every key can be overridden.
DEFAULT_EVALUATE_CONFIG = CONFIG_FILES["evaluate"]
#: Analyses ``naslung evaluate`` can run (the config's ``analyses`` picks among them).
ANALYSES: tuple[str, ...] = ("ablation", "discriminability", "attention", "gradcam", "training_curves")


_LOSS_NAMES = {"softmax": "Softmax", "asoftmax": "A-Softmax"}


# ----------------------------------------------------------------------------------------------------- config
def load_evaluate_config(
    config: str | os.PathLike | Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Merge the packaged ``evaluate.json`` with a user config (file or dict), then ``overrides``.

    Keys use MONAI's ``#`` separator for nested entries (``"tsne#perplexity": 10``); values are taken as they
    are (no ``$`` expressions are evaluated), and ``train_overrides`` is handed to
    :func:`naslung.pipeline.training.step.load_train_config` unchanged
    (:func:`naslung.pipeline.run.config.merge_config`).

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
    run_training_jobs: Callable[[list[dict[str, Any]]], None] | None = None,
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
        run_training_jobs: runs the analysis networks' trainings first, given as
            :func:`~naslung.pipeline.training.step.train_fold_job` mappings (e.g. two single-thread jobs at a time,
            as ``naslung run`` does with its ``train.parallel`` section); ``None``: one after another in this process.

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

    def setting(spec: str, variant: str) -> dict[str, Any]:
        slug = spec_slug(spec)
        base = cfg["train_config"] or (trained[slug].config() if slug in trained else None)
        return {
            "out_dir": layout.ablation_dir(spec, variant),
            "base_config": base,
            "train_overrides": dict(cfg["train_overrides"]),
            "reuse_dir": layout.network_dir(slug),
        }

    if run_training_jobs is not None:
        run_training_jobs(
            [job for spec, v in jobs for job in variant_training_jobs(datalist, spec, v, folds, **setting(spec, v))]
        )
    runs: dict[tuple[str, str], VariantRun] = {}
    for spec, variant in progress(jobs, total=len(jobs), desc="analysis networks"):
        runs[(spec, variant)] = train_variant(
            datalist, spec, variant, folds, **setting(spec, variant), show_progress=show_progress
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
