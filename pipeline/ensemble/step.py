"""The ``naslung ensemble`` step: majority-vote ensembles of the networks trained in a run directory, the
ensemble-size study (Fig. 7) and the Table 1-style results table beside the paper's published rows.

Reads ``RUN/train/<slug>/fold_<k>/test_predictions.csv`` (one file per network and held-out fold) and writes::

    RUN/ensemble/fold_<k>/predictions.csv   per nodule: each member's probability, votes, vote fraction, mean
                                            probability, prediction, correct, disagreement
    RUN/ensemble/per_fold.csv               the ensemble's metrics on each held-out fold, beside the reference
                                            models' accuracy/AUC and the ensemble's lead over the diameter rule
    RUN/ensemble/metrics.json               members, per-fold and mean ± std metrics, parameters, latency, and
                                            ``reference_models`` (see below)
    RUN/ensemble/reference_per_fold.png     per-fold accuracy and AUC: ensemble, members, reference models
    RUN/ensemble/ensemble_size.csv/.png     metrics against the number of members (random draws)
    RUN/ensemble/results_table.md/.csv      ours (ensemble, single networks and the baselines of RUN/baselines,
                                            scored on the same test folds) beside the published Table 1 and 5

Which networks form the ensemble is fixed before any test fold is looked at (``--members``, else the search's
``selected.json``, else every trained network); the held-out folds only score it.

The reference models of :mod:`naslung.pipeline.reference_models` (the diameter rule and the readers' ratings
ceiling, which read no image) are fitted on each held-out fold's training folds of ``RUN/data/manifest.csv`` and
scored on exactly the ensemble's test nodules. ``metrics.json``'s ``reference_models`` holds each one's per-fold
metrics and mean ± std (or ``omitted`` with the reason), and ``ensemble_minus_diameter_rule`` the per-fold
difference of accuracy and AUC with its mean ± std, the number of folds where the ensemble is ahead, and a paired
bootstrap interval of the mean difference over the test nodules
(:func:`naslung.pipeline.ensemble.paired_bootstrap.paired_bootstrap`), which the report turns into one line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.atomic_io import write_csv, write_json
from naslung.pipeline.ensemble.baselines import baseline_prediction_files, baseline_records
from naslung.pipeline.ensemble.figures import plot_ensemble_size, plot_per_fold_comparison
from naslung.pipeline.ensemble.paired_bootstrap import paired_bootstrap
from naslung.pipeline.ensemble.published import write_results_table
from naslung.pipeline.ensemble.reference_models import (
    DIAMETER_RULE,
    RATINGS_CEILING,
    REFERENCE_LABELS,
    REFERENCE_METHODS,
    REFERENCE_MODELS,
    ReferenceData,
    evaluate_reference_models,
    fold_differences,
    load_reference_data,
    reference_input_files,
)
from naslung.pipeline.ensemble.voting import ensemble_size_study, majority_vote, write_ensemble_table
from naslung.pipeline.errors import DataError
from naslung.pipeline.metrics import BINARY_METRICS, DEFAULT_THRESHOLD, binary_metrics, summarise_folds
from naslung.pipeline.progress import Progress, no_progress
from naslung.pipeline.run.layout import ENSEMBLE_DIR, RunLayout, TrainedNetwork, spec_slug
from naslung.pipeline.run.markers import fingerprint, is_done, mark_done
from naslung.pipeline.run.members import network_cost, read_test_predictions
from naslung.pipeline.search.journal import read_selected_specs

__all__ = [
    "ENSEMBLE_DIR",
    "ENSEMBLE_OUTPUTS",
    "ENSEMBLE_SIZES",
    "PER_FOLD_FIELDS",
    "REFERENCE_FIELDS",
    "VERSUS_DIAMETER_RULE",
    "find_members",
    "fold_probabilities",
    "reference_results",
    "run_ensemble_step",
    "ensemble_headline",
]

logger = logging.getLogger(__name__)

#: Ensemble sizes of the paper's Fig. 7 (sizes above the number of members are dropped).
ENSEMBLE_SIZES: tuple[int, ...] = (1, 3, 5, 7, 9)
#: Outputs (relative to ``RUN/ensemble``) every finished step leaves, besides ``fold_<k>/predictions.csv``.
ENSEMBLE_OUTPUTS: tuple[str, ...] = (
    "metrics.json",
    "per_fold.csv",
    "ensemble_size.csv",
    "ensemble_size.png",
    "results_table.md",
    "results_table.csv",
    "reference_per_fold.png",
)
#: Key of ``metrics.json``'s ``reference_models`` holding the ensemble's per-fold lead over the diameter rule.
VERSUS_DIAMETER_RULE = "ensemble_minus_diameter_rule"
#: Columns of ``per_fold.csv`` from the reference models (fractions; empty where a model was omitted).
REFERENCE_FIELDS: tuple[str, ...] = (
    "diameter_rule_threshold_mm",
    "diameter_rule_accuracy",
    "diameter_rule_auc",
    "ratings_ceiling_accuracy",
    "ratings_ceiling_auc",
    "accuracy_minus_diameter_rule",
    "auc_minus_diameter_rule",
)
#: Columns of ``per_fold.csv``.
PER_FOLD_FIELDS: tuple[str, ...] = (
    "fold",
    *BINARY_METRICS,
    "tp",
    "fp",
    "tn",
    "fn",
    "n",
    "disagreements",
    *REFERENCE_FIELDS,
)
#: Bump when the reference models change, so that finished ensemble steps run again.
_REFERENCE_VERSION = 1


def _selected_slugs(run: Path) -> list[str]:
    return [spec_slug(spec) for spec in read_selected_specs(run)]


def find_members(run_dir: str | os.PathLike, members: Sequence[str] | None = None) -> list[TrainedNetwork]:
    """The networks of ``RUN/train`` that form the ensemble, each with the held-out folds they all share.

    Members are, in this order of precedence: ``members`` (folder names or architecture specs, mapped with
    :func:`naslung.pipeline.run.layout.spec_slug`); the specs of ``RUN/search/selected.json`` that have been
    trained; every folder of ``RUN/train`` holding test predictions. None of these choices looks at a test fold.

    Raises:
        DataError: when ``RUN/train`` holds no trained network, a named member has no test predictions, or the
            members share no held-out fold.
    """
    layout = RunLayout(Path(run_dir))
    train_dir = layout.train_dir
    trained = {slug: network for slug, network in layout.trained().items() if network.folds}
    if not trained:
        raise DataError(
            "no trained network with test predictions; run `naslung train --data RUN/data --out RUN/train/SLUG` first",
            path=str(train_dir),
        )
    if members:
        slugs = []
        for name in members:
            slug = name if name in trained else spec_slug(name)
            if slug not in trained:
                raise DataError(
                    f"member {name!r} (folder {slug!r}) has no fold_<k>/test_predictions.csv; trained networks: "
                    f"{sorted(trained)}",
                    path=str(train_dir),
                )
            slugs.append(slug)
    else:
        selected = [slug for slug in _selected_slugs(layout.root) if slug in trained]
        missing = [slug for slug in _selected_slugs(layout.root) if slug not in trained]
        if missing:
            logger.warning("selected specs not trained yet, left out of the ensemble: %s", missing)
        slugs = selected or sorted(trained)
    if len(set(slugs)) != len(slugs):
        raise DataError(f"members {slugs} name the same network twice; list each once")
    found = [trained[slug] for slug in slugs]
    common = set(found[0].folds).intersection(*(m.folds for m in found[1:]))
    if not common:
        raise DataError(
            "the members share no held-out fold: " + "; ".join(f"{m.slug}: {list(m.folds)}" for m in found),
            path=str(train_dir),
        )
    for member in found:
        if set(member.folds) != common:
            logger.warning(
                "%s has folds %s; the ensemble uses the folds all members share: %s",
                member.slug,
                list(member.folds),
                sorted(common),
            )
    return [dataclasses.replace(m, folds=tuple(sorted(common))) for m in found]


def fold_probabilities(members: Sequence[TrainedNetwork], fold: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The members' test predictions on one held-out fold, aligned by nodule.

    Returns:
        ``(nodule_ids, labels, probabilities)``: ids sorted, ``(n_nodules,)`` labels and ``(n_members,
        n_nodules)`` probabilities of malignancy.

    Raises:
        DataError: when the members predicted different nodules or disagree on a label.
    """
    tables = [read_test_predictions(m.predictions_path(fold)) for m in members]
    ids = sorted(tables[0])
    for member, table in zip(members[1:], tables[1:], strict=True):
        if set(table) != set(ids):
            extra, lacking = sorted(set(table) - set(ids))[:3], sorted(set(ids) - set(table))[:3]
            raise DataError(
                f"fold {fold}: {member.slug} predicted other nodules than {members[0].slug} (extra {extra}, "
                f"missing {lacking}); retrain both on the same manifest",
                path=str(member.predictions_path(fold)),
            )
        bad = [i for i in ids if table[i][0] != tables[0][i][0]]
        if bad:
            raise DataError(
                f"fold {fold}: labels differ from {members[0].slug}'s for {bad[:3]}; retrain on the same manifest",
                path=str(member.predictions_path(fold)),
            )
    labels = np.array([tables[0][i][0] for i in ids], dtype=np.int64)
    matrix = np.array([[table[i][1] for i in ids] for table in tables], dtype=np.float64)
    return ids, labels, matrix


def _stamp(path: Path) -> list:
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _fold_row(fold: int, labels: np.ndarray, vote: Mapping[str, np.ndarray], threshold: float) -> dict[str, Any]:
    metrics = binary_metrics(labels, vote["mean_probability"], threshold, y_pred=vote["prediction"])
    row: dict[str, Any] = {"fold": fold}
    row.update({key: metrics[key] for key in PER_FOLD_FIELDS if key in metrics})
    row["disagreements"] = int(vote["disagreement"].sum())
    return row


def _bootstrap_against_rule(
    data: ReferenceData,
    rule_per_fold: Sequence[Mapping[str, Any]],
    fold_nodules: Mapping[int, Sequence[str]],
    fold_labels: Mapping[int, Sequence[int]],
    fold_scores: Mapping[int, tuple[np.ndarray, np.ndarray]],
) -> dict[str, Any]:
    """Paired bootstrap of ensemble - diameter rule on each fold's test nodules (the rule's t of that fold)."""
    assert data.diameter_mm is not None  # the rule has per-fold results, so every nodule has a diameter
    folds = []
    for record in rule_per_fold:
        fold = int(record["fold"])
        diameter = data.diameter_mm[data.index(fold_nodules[fold])]
        probability, prediction = fold_scores[fold]
        folds.append(
            {
                "fold": fold,
                "labels": fold_labels[fold],
                "model_score": probability,
                "model_prediction": prediction,
                "reference_score": diameter,
                "reference_prediction": (diameter > float(record["threshold_mm"])).astype(np.int64),
            }
        )
    return paired_bootstrap(folds)


def reference_results(
    run_dir: str | os.PathLike,
    per_fold: Sequence[dict[str, Any]],
    fold_nodules: Mapping[int, Sequence[str]],
    fold_labels: Mapping[int, Sequence[int]],
    fold_scores: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """The reference models on the ensemble's test nodules, and the ensemble's per-fold lead over the diameter rule.

    Fills the :data:`REFERENCE_FIELDS` of each row of ``per_fold`` in place (None where a model is omitted).

    Args:
        run_dir: the run directory (reads ``RUN/data``: see
            :func:`naslung.pipeline.ensemble.reference_models.load_reference_data`).
        per_fold: the ensemble's rows of ``per_fold.csv`` (``fold``, ``accuracy``, ``auc``...).
        fold_nodules: ``{fold: nodule ids}`` the ensemble was tested on.
        fold_labels: ``{fold: labels}`` in the same order.
        fold_scores: ``{fold: (mean probability, majority-vote prediction)}`` of the ensemble, ``(n_nodules,)``
            each in the same order; when given, the lead over the diameter rule also gets a paired bootstrap
            interval (:func:`naslung.pipeline.ensemble.paired_bootstrap.paired_bootstrap`).

    Returns:
        ``{"diameter_rule": record, "ratings_ceiling": record, "ensemble_minus_diameter_rule": {"per_fold",
        "summary"[, "bootstrap"]}}`` (records of
        :func:`naslung.pipeline.ensemble.reference_models.evaluate_reference_models`); a model that cannot be scored
        (no manifest, another manifest than the networks', no ratings) has ``omitted`` with the reason instead, which
        is logged.
    """
    try:
        data = load_reference_data(RunLayout(Path(run_dir)).data_dir)
        references: dict[str, Any] = evaluate_reference_models(data, fold_nodules, fold_labels)
    except DataError as err:
        references = {name: {"label": REFERENCE_LABELS[name], "omitted": str(err)} for name in REFERENCE_MODELS}
    for name, record in references.items():
        if "omitted" in record:
            logger.warning("%s omitted: %s", name, record["omitted"])
    by_fold = {name: {int(r["fold"]): r for r in references[name].get("per_fold", [])} for name in REFERENCE_MODELS}
    for row in per_fold:
        fold = int(row["fold"])
        rule, ceiling = by_fold[DIAMETER_RULE].get(fold, {}), by_fold[RATINGS_CEILING].get(fold, {})
        row["diameter_rule_threshold_mm"] = rule.get("threshold_mm")
        for metric in ("accuracy", "auc"):
            row[f"diameter_rule_{metric}"] = rule.get(metric)
            row[f"ratings_ceiling_{metric}"] = ceiling.get(metric)
            row[f"{metric}_minus_diameter_rule"] = None
    if "per_fold" in references[DIAMETER_RULE]:
        rows, summary = fold_differences(per_fold, references[DIAMETER_RULE]["per_fold"])
        for row, difference in zip(per_fold, rows, strict=True):
            row["accuracy_minus_diameter_rule"] = difference["accuracy"]
            row["auc_minus_diameter_rule"] = difference["auc"]
        references[VERSUS_DIAMETER_RULE] = {"per_fold": rows, "summary": summary}
        if fold_scores is not None:
            references[VERSUS_DIAMETER_RULE]["bootstrap"] = _bootstrap_against_rule(
                data, references[DIAMETER_RULE]["per_fold"], fold_nodules, fold_labels, fold_scores
            )
        logger.info(
            "ensemble - diameter rule: accuracy %+.4f ± %.4f, AUC %+.4f ± %.4f (ahead on AUC in %d of %d folds)",
            summary["accuracy_mean"],
            summary["accuracy_std"],
            summary["auc_mean"],
            summary["auc_std"],
            summary["auc_folds_ahead"],
            len(rows),
        )
    else:
        references[VERSUS_DIAMETER_RULE] = {"omitted": references[DIAMETER_RULE]["omitted"]}
    return references


def run_ensemble_step(
    run_dir: str | os.PathLike,
    members: Sequence[str] | None = None,
    sizes: Sequence[int] = ENSEMBLE_SIZES,
    draws: int = 10,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    latency: bool = True,
    force: bool = False,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Combine the trained networks of ``run_dir`` by majority vote and write ``RUN/ensemble`` (module docstring).

    Each member's probability is thresholded at ``threshold`` (strictly greater is a malignant vote); a nodule is
    malignant when more than ``floor(n / 2)`` of the ``n`` members vote so (paper Sec. 3.5). The mean probability
    (used for the AUC) and the vote fraction are kept per nodule as a measure of uncertainty, and nodules on which
    the members disagree are flagged. Metrics are computed per held-out fold, then summarised as mean ± sample
    std over folds. The ensemble-size study draws ``n`` of the members at random ``draws`` times for each
    ``n`` in ``sizes`` not above the number of members. The step is skipped when its inputs are unchanged.

    Args:
        run_dir: the run directory (``RUN``).
        members: folder names or specs of the members (default: see :func:`find_members`).
        sizes: ensemble sizes of the study (paper: 1, 3, 5, 7, 9).
        draws: random subsets per size (paper: 10).
        seed: seed of the subset draws.
        threshold: each member's decision threshold.
        latency: measure each member's CPU latency (off: parameters only).
        force: recompute even when up to date.
        progress: wraps the loops over members and sizes.

    Returns:
        the content of ``metrics.json`` plus ``"skipped": bool``.

    Raises:
        DataError: see :func:`find_members` and :func:`fold_probabilities`.
    """
    layout = RunLayout(Path(run_dir))
    run, out = layout.root, layout.ensemble_dir
    found = find_members(run, members)
    folds = list(found[0].folds)
    stamps = [_stamp(m.predictions_path(f)) for m in found for f in folds]
    stamps += [_stamp(path) for path in baseline_prediction_files(run)]
    stamps += [_stamp(path) for path in reference_input_files(layout.data_dir)]
    settings = {"sizes": list(sizes), "draws": draws, "seed": seed, "threshold": threshold, "latency": latency}
    settings["reference_version"] = _REFERENCE_VERSION
    digest = fingerprint(stamps, settings, [m.slug for m in found])
    if not force and is_done(out, digest):
        logger.info("%s is up to date; skipping", out)
        return {**json.loads((out / "metrics.json").read_text(encoding="utf-8")), "skipped": True}

    names = [m.slug for m in found]
    per_fold, member_folds = [], {m.slug: [] for m in found}
    all_ids, all_labels, all_folds, all_probs = [], [], [], []
    fold_nodules: dict[int, list[str]] = {}
    fold_labels: dict[int, list[int]] = {}
    fold_scores: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for fold in progress(folds, total=len(folds), desc="ensemble folds"):
        ids, labels, matrix = fold_probabilities(found, fold)
        write_ensemble_table(layout.ensemble_predictions(fold), ids, labels, matrix, names, threshold)
        vote = majority_vote(matrix, threshold)
        per_fold.append(_fold_row(fold, labels, vote, threshold))
        for member, probs in zip(found, matrix, strict=True):
            member_folds[member.slug].append({"fold": fold, **binary_metrics(labels, probs, threshold)})
        all_ids += ids
        fold_nodules[fold] = ids
        fold_labels[fold] = labels.tolist()
        fold_scores[fold] = (vote["mean_probability"], vote["prediction"])
        all_labels.append(labels)
        all_folds.append(np.full(len(ids), fold))
        all_probs.append(matrix)
    summary = summarise_folds(per_fold, keys=BINARY_METRICS)
    references = reference_results(run, per_fold, fold_nodules, fold_labels, fold_scores)
    write_csv(out / "per_fold.csv", per_fold, PER_FOLD_FIELDS)

    labels_all, folds_all = np.concatenate(all_labels), np.concatenate(all_folds)
    probs_all = np.concatenate(all_probs, axis=1)
    used_sizes = [int(s) for s in sizes if 1 <= int(s) <= len(found)]
    if len(used_sizes) < len(list(sizes)):
        logger.info("ensemble-size study: %d members, sizes %s only", len(found), used_sizes)
    size_rows = ensemble_size_study(
        probs_all, labels_all, used_sizes, draws, seed, threshold, folds=folds_all, progress=progress
    )
    size_fields = ["size", "draws"] + [f"{m}_{s}" for m in BINARY_METRICS for s in ("mean", "std")]
    write_csv(out / "ensemble_size.csv", size_rows, size_fields)
    plot_ensemble_size(size_rows, out / "ensemble_size.png", title=f"Ensemble size ({len(found)} members)")

    member_records = []
    for member in progress(found, total=len(found), desc="member cost"):
        cost = network_cost(member.fold_dir(member.folds[0]), latency=latency)
        member_records.append(
            {
                "slug": member.slug,
                "spec": member.spec,
                **cost,
                "summary": summarise_folds(member_folds[member.slug], keys=BINARY_METRICS),
                "per_fold": member_folds[member.slug],
            }
        )
    params = [r["params"] for r in member_records]
    latencies = [r["latency_ms"] for r in member_records]
    total_params = int(sum(params)) if all(p is not None for p in params) else None
    total_latency = float(sum(latencies)) if all(v is not None for v in latencies) else None

    ours = [
        {"method": f"Ensemble of {len(found)} (ours)", **summary, "params": total_params, "latency_ms": total_latency}
    ]
    ours += [
        {"method": f"{r['spec']} (ours)", **r["summary"], "params": r["params"], "latency_ms": r["latency_ms"]}
        for r in member_records
    ]
    baselines = baseline_records(run, fold_nodules, threshold, latency=latency, progress=progress)
    ours += [
        {"method": f"{r['slug']} baseline (ours)", **r["summary"], "params": r["params"], "latency_ms": r["latency_ms"]}
        for r in baselines
    ]
    ours += [
        {"method": REFERENCE_METHODS[name], **references[name]["summary"], "params": None, "latency_ms": None}
        for name in REFERENCE_MODELS
        if "summary" in references[name]
    ]
    write_results_table(ours, out / "results_table.md", out / "results_table.csv", tables=("table1", "table5"))
    ensemble_label = f"Ensemble of {len(found)}"
    comparison: dict[str, list[dict[str, Any]]] = {ensemble_label: per_fold}
    comparison.update({f"member {r['slug']}": r["per_fold"] for r in member_records})
    short_names = {DIAMETER_RULE: "diameter rule", RATINGS_CEILING: "ratings ceiling (reader ratings, no image)"}
    comparison.update(
        {short_names[name]: references[name]["per_fold"] for name in REFERENCE_MODELS if "per_fold" in references[name]}
    )
    plot_per_fold_comparison(
        comparison,
        out / "reference_per_fold.png",
        emphasis=[ensemble_label, *short_names.values()],
        title="Held-out folds: ensemble and members against the reference models",
    )

    pooled_vote = majority_vote(probs_all, threshold)
    result = {
        "members": member_records,
        "n_members": len(found),
        "folds": folds,
        "threshold": threshold,
        "rule": f"malignant when more than {len(found) // 2} of {len(found)} members have p > {threshold}",
        "per_fold": per_fold,
        "summary": summary,
        "n_nodules": len(all_ids),
        "n_disagreements": int(pooled_vote["disagreement"].sum()),
        "params": total_params,
        "latency_ms": total_latency,
        "baselines": baselines,
        "reference_models": references,
        "ensemble_size": size_rows,
    }
    write_json(out / "metrics.json", result)
    outputs = list(ENSEMBLE_OUTPUTS) + [layout.ensemble_predictions(f).relative_to(out).as_posix() for f in folds]
    mark_done(out, digest, outputs, {k: summary.get(f"{k}_mean") for k in BINARY_METRICS})
    logger.info("ensemble of %d on folds %s: F1 %.4f ± %.4f", len(found), folds, summary["f1_mean"], summary["f1_std"])
    return {**result, "skipped": False}


def ensemble_headline(result: Mapping[str, Any]) -> str:
    """One line on :func:`run_ensemble_step`'s result: the ensemble's test F1, accuracy and AUC beside the diameter
    rule's and the ratings ceiling's, and the folds where the ensemble is ahead of the diameter rule on AUC, with the
    paired bootstrap's interval of that lead when the result has one."""
    summary = result.get("summary", {})
    references = result.get("reference_models", {})

    def mean(record: Mapping[str, Any], key: str) -> float:
        return float(record.get("summary", {}).get(f"{key}_mean", float("nan")))

    line = f"ensemble of {result.get('n_members', '?')}: test F1 {summary.get('f1_mean', float('nan')):.3f}"
    line += f", accuracy {100 * float(summary.get('accuracy_mean', float('nan'))):.1f}%"
    line += f", AUC {float(summary.get('auc_mean', float('nan'))):.3f}"
    shown = [(name, references[name]) for name in REFERENCE_MODELS if "summary" in references.get(name, {})]
    if shown:
        names = {DIAMETER_RULE: "diameter rule", RATINGS_CEILING: "ratings ceiling"}
        line += "; " + ", ".join(
            f"{names[name]} {100 * mean(record, 'accuracy'):.1f}% / {mean(record, 'auc'):.3f}" for name, record in shown
        )
    versus = references.get(VERSUS_DIAMETER_RULE, {}).get("summary")
    if versus:
        line += f"; ahead of the diameter rule on AUC in {versus['auc_folds_ahead']} of {versus['n_folds']} folds"
    bootstrap = references.get(VERSUS_DIAMETER_RULE, {}).get("bootstrap", {})
    if "auc" in bootstrap:
        auc, level = bootstrap["auc"], round(100 * float(bootstrap.get("level", 0.95)))
        line += f" (AUC lead {auc['observed']:+.3f}, {level}% interval {auc['low']:+.3f} to {auc['high']:+.3f})"
    return line
