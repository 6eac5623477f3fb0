"""The run report: one Markdown and one HTML file a person reads first, assembled from a run directory's outputs."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.atomic_io import atomic_open
from naslung.pipeline.ensemble.reference_models import REFERENCE_METHODS
from naslung.pipeline.run.layout import RunLayout
from naslung.pipeline.search.rank_correlation import RANK_CORRELATION_FILE

__all__ = ["build_report", "REPORT_SECTIONS"]

logger = logging.getLogger(__name__)

#: Section titles in report order (tests check that each is present).
REPORT_SECTIONS: tuple[str, ...] = (
    "Cohort",
    "Architecture search",
    "Cross-validated results",
    "Reference models",
    "Comparison with the paper",
    "Ensemble size",
    "Ablation",
    "Feature discriminability",
    "Attention and Grad-CAM",
    "Latency and parameters",
    "Bundles",
)

_METRICS = ("accuracy", "sensitivity", "specificity", "f1", "auc")

#: How the search's validation metrics (``score_metric``) read in captions and table headers.
_METRIC_NAMES = {
    "auc": "AUC",
    "f1": "F1",
    "accuracy": "accuracy",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _pct(value: Any) -> str:
    try:
        return f"{100 * float(value):.2f}"
    except (TypeError, ValueError):
        return "–"


def _figure(run: Path, relative: str, caption: str) -> str:
    return (
        f"![{caption}]({relative})\n\n*{caption}*\n" if (run / relative).is_file() else f"*{caption}: not produced.*\n"
    )


def _not_run(step: str, command: str) -> str:
    return f"*This step has not run yet: `{command}`.*\n"


def _cohort(run: Path) -> str:
    rows = _read_csv(RunLayout(run).manifest)
    if not rows:
        return _not_run("prepare", "naslung prepare embedded --out RUN/data")
    labels = Counter(int(r["label"]) for r in rows)
    folds = Counter(int(r["fold"]) for r in rows)
    sources = Counter(r.get("source", "unknown") for r in rows)
    lines = [
        f"- nodules: **{len(rows)}** ({labels[1]} malignant, {labels[0]} benign); "
        f"patients: {len({r['patient_id'] for r in rows})}; scans: {len({r['series_uid'] for r in rows})}",
        f"- images: {', '.join(f'{k} ({v})' for k, v in sources.items())}",
        "- nodules per fold: " + ", ".join(f"{f}: {folds[f]}" for f in sorted(folds)),
        "- the paper reports 1,004 nodules, 450 malignant (LIDC-IDRI with LUNA16's selection).",
    ]
    if "embedded" in sources:
        lines.append(
            "- **The images are synthetic** (rendered from the real LIDC-IDRI annotations and ratings): "
            "accuracy on them is not comparable to the paper's."
        )
    rejects = _read_csv(RunLayout(run).rejects)
    if rejects:
        lines.append(f"- scans rejected: {len(rejects)} (see `data/rejects.csv`)")
    return "\n".join(lines) + "\n"


def _metric_name(metric: str) -> str:
    """How a metric key reads in the report: ``"auc"`` -> ``"AUC"``, ``"f1"`` -> ``"F1"``."""
    return _METRIC_NAMES.get(metric, metric)


def _score_header(metric: str) -> str:
    """A table header for :func:`_score_cell`'s values: ``"AUC"``, ``"F1 (%)"``."""
    return _metric_name(metric) + ("" if metric == "auc" else " (%)")


def _score_cell(value: Any, metric: str) -> str:
    """A validation score as the report shows it: AUC as a fraction, the other metrics in percent."""
    if metric != "auc":
        return _pct(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{number:.3f}" if number == number else "–"


def _rank_correlation(run: Path, metric: str) -> list[str]:
    """Lines on whether the search's ranking survived retraining (``RUN/search/rank_correlation.json``)."""
    record = _read_json(run / RANK_CORRELATION_FILE)
    if not isinstance(record, dict):
        return [
            f"- search-time against retrained ranking: not computed yet (`{RANK_CORRELATION_FILE.as_posix()}` "
            "is written by `naslung run`'s train step once the selected networks are retrained)"
        ]
    compared = str(record.get("metric") or metric)
    name = _metric_name(compared)
    rho = record.get("rho")
    if rho is None:
        headline = f"undefined ({record.get('reason') or 'no reason recorded'})"
    else:
        headline = f"Spearman ρ = **{float(rho):+.2f}** over {record.get('n')} networks"
    lines = [
        f"- search-time against retrained ranking of the selected networks (validation {name}): {headline}",
        "",
        f"| spec | search-time val {_score_header(compared)} | retrained val {_score_header(compared)} "
        "(mean over folds) | retrained folds |",
        "|---|---:|---:|---:|",
    ]
    for network in record.get("networks") or []:
        lines.append(
            f"| `{network.get('spec')}` | {_score_cell(network.get('search_score'), compared)} | "
            f"{_score_cell(network.get('retrained_score'), compared)} | {len(network.get('retrained_folds') or {})} |"
        )
    lines += [
        "",
        "*Search-time: a candidate's best validation epoch in the search's short training; retrained: the mean over "
        "the retrained folds of each fold's best validation epoch (a validation split of the training folds, never "
        "the test fold).*",
    ]
    return lines


def _search(run: Path) -> str:
    journal = run / "search" / "journal.jsonl"
    if not journal.is_file():
        return _not_run("search", "naslung search --out RUN/search")
    records = [
        json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines() if line.strip().endswith("}")
    ]
    summary = _read_json(run / "search" / "summary.json") or {}
    selection = _read_json(RunLayout(run).selected) or {}
    selected = selection.get("specs", [])
    # the metric the search ranked candidates by; runs from before score_metric existed ranked by F1
    metric = str(selection.get("score_key") or summary.get("score_metric") or "f1")
    name = _metric_name(metric)
    lines = [f"- candidates trained: **{len(records)}**", f"- candidates scored by validation {name}"]
    if "size" in summary.get("space", {}):
        lines.append(f"- search space: {summary['space']['size']:,} candidates ({summary['space'].get('channels')})")
    for key in ("pruned", "remaining", "stop_reason", "search_seconds", "candidates_per_hour", "search_nodules"):
        if key in summary:
            value = summary[key]
            lines.append(f"- {key.replace('_', ' ')}: {round(value, 1) if isinstance(value, float) else value}")
    if selected:
        rule = selection.get("select")
        how = {"pareto": f" (latency/{name} Pareto fronts)", "top_n": f" (best validation {name})"}.get(rule, "")
        lines.append(f"- selected for retraining{how}: " + ", ".join(f"`{s}`" for s in selected))
        lines += _rank_correlation(run, metric)
    second = "f1" if metric == "accuracy" else "accuracy"  # the right panel of pareto.png
    pareto = _read_csv(run / "search" / "pareto.csv")
    if pareto:
        lines += [
            "",
            f"Pareto front of latency and validation {name}:",
            "",
            f"| spec | params | latency ms | val {_score_header(metric)} | val {_score_header(second)} |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in pareto:
            lines.append(
                f"| `{row.get('spec')}` | {row.get('params', '–')} | {float(row.get('latency_ms') or 'nan'):.3f} | "
                f"{_score_cell(row.get(metric), metric)} | {_score_cell(row.get(second), second)} |"
            )
    caption = (
        f"Latency against validation {name} (left, the search score) and {_metric_name(second)} (right) of every "
        f"trained candidate; the latency/{name} Pareto front in red"
    )
    lines += ["", _figure(run, "search/pareto.png", caption)]
    return "\n".join(lines) + "\n"


def _cv(run: Path) -> str:
    layout = RunLayout(run)
    members = [n for n in layout.trained().values() if n.cv_metrics_path.is_file()]
    baselines = [n for n in layout.baselines().values() if n.cv_metrics_path.is_file()]
    ensemble = _read_json(layout.ensemble_metrics)
    if not members and not baselines and not ensemble:
        return _not_run("train", "naslung train --data RUN/data --out RUN/train/SLUG --arch SPEC")
    lines = ["Test-fold metrics (%), mean ± std over the held-out folds:", ""]
    lines += ["| network | folds | " + " | ".join(_METRICS) + " |", "|---|---|" + "---:|" * len(_METRICS)]
    for member, suffix in [(m, "") for m in members] + [(b, " (baseline)") for b in baselines]:
        cv = _read_json(member.cv_metrics_path) or {}
        summary = cv.get("summary", {})
        cells = [f"{_pct(summary.get(f'{m}_mean'))} ± {_pct(summary.get(f'{m}_std'))}" for m in _METRICS]
        name = f"`{member.slug}`{suffix}"
        lines.append(f"| {name} | {cv.get('folds')} | " + " | ".join(cells) + " |")
    if ensemble:
        summary = ensemble.get("summary", ensemble)
        cells = [f"{_pct(summary.get(f'{m}_mean'))} ± {_pct(summary.get(f'{m}_std'))}" for m in _METRICS]
        lines.append(f"| **ensemble** | {ensemble.get('folds', '')} | " + " | ".join(cells) + " |")
    per_fold = _read_csv(layout.ensemble_per_fold)
    if per_fold:
        lines += ["", "Ensemble per fold:", "", "| fold | " + " | ".join(_METRICS) + " |", "|---|" + "---:|" * 5]
        for row in per_fold:
            lines.append(f"| {row.get('fold')} | " + " | ".join(_pct(row.get(m)) for m in _METRICS) + " |")
    curves = sorted(run.glob("analysis/training_curves*.png"))
    for path in curves[:3]:
        lines += ["", _figure(run, str(path.relative_to(run)), f"Training curves ({path.stem})")]
    return "\n".join(lines) + "\n"


def _fold_cell(value: Any, metric: str, signed: bool = False) -> str:
    """Accuracy in percent, AUC as a fraction; differences signed (points of accuracy, AUC units)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    if number != number:  # NaN
        return "–"
    sign = "+" if signed else ""
    return f"{100 * number:{sign}.1f}" if metric == "accuracy" else f"{number:{sign}.3f}"


def _fold_row(name: str, rows: Any, folds: list[int], metric: str, signed: bool = False) -> str:
    """A table row: the value on each fold, then mean ± sample std over the folds that have one."""
    by_fold = {int(r["fold"]): r.get(metric) for r in rows or []}
    cells = [_fold_cell(by_fold.get(f), metric, signed) for f in folds]
    values = []
    for fold in folds:
        try:
            values.append(float(by_fold[fold]))
        except (KeyError, TypeError, ValueError):
            continue
    finite = [v for v in values if v == v]
    if finite:
        std = float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")
        mean_cell = f"{_fold_cell(float(np.mean(finite)), metric, signed)} ± {_fold_cell(std, metric)}"
    else:
        mean_cell = "–"
    return f"| {name} | " + " | ".join(cells) + f" | {mean_cell} |"


def _bootstrap_line(bootstrap: dict[str, Any]) -> str:
    """The paired bootstrap's intervals of the ensemble's lead over the diameter rule, as one bullet."""
    level = round(100 * float(bootstrap.get("level", 0.95)))
    parts = []
    for metric, name, scale, digits, unit in (
        ("accuracy", "accuracy", 100.0, 1, " points"),
        ("auc", "AUC", 1.0, 3, ""),
    ):
        stats = bootstrap.get(metric)
        if not stats:
            continue
        low, high = float(stats["low"]) * scale, float(stats["high"]) * scale
        verdict = "; these nodules cannot tell it from no difference" if low <= 0.0 <= high else ""
        parts.append(
            f"{name} {float(stats['observed']) * scale:+.{digits}f}{unit} ({level}% interval {low:+.{digits}f} to "
            f"{high:+.{digits}f}, ahead in {100 * float(stats['ahead_fraction']):.0f}% of resamples{verdict})"
        )
    return (
        f"- how sure the lead is (paired bootstrap of the test nodules, {int(bootstrap.get('resamples', 0)):,} "
        "resamples within each fold, stratified by label; ensemble − diameter rule, mean over folds): "
        + "; ".join(parts)
    )


def _references(run: Path) -> str:
    ensemble = _read_json(RunLayout(run).ensemble_metrics)
    if not ensemble:
        return _not_run("ensemble", "naslung ensemble --run RUN")
    references = ensemble.get("reference_models")
    if not references:
        return "*The ensemble step ran before the reference models existed: `naslung ensemble --run RUN --force`.*\n"
    folds = [int(f) for f in ensemble.get("folds", [])]
    rule, ceiling = references.get("diameter_rule", {}), references.get("ratings_ceiling", {})
    versus = references.get("ensemble_minus_diameter_rule", {})
    lines = [
        "Two models that read no image, fitted on each held-out fold's training folds (never on the test fold) and "
        "scored on exactly the ensemble's test nodules:",
        "",
        "- **diameter rule**: malignant if the annotated diameter > t mm, t maximising accuracy on the training "
        "folds; its AUC ranks nodules by diameter. The networks must beat it.",
        "- **ratings ceiling**: logistic regression on the readers' 8 ratings (subtlety … texture, mean over "
        "readers) plus the diameter; **reader ratings, not an image model**. These are the cues the embedded "
        "data's renderer draws, so it bounds what a network reading them from the cube could reach. The "
        "malignancy rating, which defines the label, is not an input.",
        "",
    ]
    members = ensemble.get("members", [])
    for metric, title in (("accuracy", "Accuracy (%)"), ("auc", "ROC AUC")):
        lines += [
            f"{title} per held-out fold, mean ± std over folds:",
            "",
            "| model | " + " | ".join(f"fold {f}" for f in folds) + " | mean ± std |",
            "|---|" + "---:|" * (len(folds) + 1),
            _fold_row(
                f"**ensemble of {ensemble.get('n_members', len(members))}**", ensemble.get("per_fold"), folds, metric
            ),
        ]
        lines += [_fold_row(f"member `{m.get('slug')}`", m.get("per_fold"), folds, metric) for m in members]
        for name, record in (
            ("diameter rule", rule),
            ("ratings ceiling (reader ratings, not an image model)", ceiling),
        ):
            if "per_fold" in record:
                lines.append(_fold_row(name, record["per_fold"], folds, metric))
        if "per_fold" in versus:
            unit = "points" if metric == "accuracy" else "AUC"
            lines.append(_fold_row(f"*ensemble − diameter rule* ({unit})", versus["per_fold"], folds, metric, True))
        lines.append("")
    summary = versus.get("summary")
    if summary:
        n = summary.get("n_folds", len(folds))
        lines.append(
            f"- the ensemble is ahead of the diameter rule on accuracy in **{summary.get('accuracy_folds_ahead')} of "
            f"{n}** folds and on AUC in **{summary.get('auc_folds_ahead')} of {n}** folds"
        )
    bootstrap = versus.get("bootstrap")
    if bootstrap:
        lines.append(_bootstrap_line(bootstrap))
    if "per_fold" in rule:
        lines.append(
            "- diameter thresholds t per fold (mm): "
            + ", ".join(f"{r['fold']}: {float(r['threshold_mm']):.2f}" for r in rule["per_fold"])
        )
    if "ratings_source" in ceiling:
        lines.append(f"- ratings read from {ceiling['ratings_source']}")
    for name, record in (("diameter rule", rule), ("ratings ceiling", ceiling)):
        if "omitted" in record:
            lines.append(f"- {name} omitted: {record['omitted']}")
    lines += [
        "",
        _figure(run, "ensemble/reference_per_fold.png", "Per-fold accuracy and AUC against the reference models"),
    ]
    return "\n".join(lines) + "\n"


def _include(run: Path, relative: str, command: str) -> str:
    path = run / relative
    return path.read_text(encoding="utf-8") + "\n" if path.is_file() else _not_run(relative, command)


def _latency(run: Path) -> str:
    rows = _read_csv(run / "ensemble" / "results_table.csv")
    no_image = set(REFERENCE_METHODS.values())  # the reference models have no network to time
    ours = [r for r in rows if r.get("source") == "ours" and r.get("method") not in no_image]
    if not ours:
        return _not_run("ensemble", "naslung ensemble --run RUN")
    lines = ["| network | parameters (M) | latency ms / nodule (CPU, batch 1) |", "|---|---:|---:|"]
    for row in ours:
        params = row.get("params_m", row.get("params", "–"))
        lines.append(f"| {row.get('method')} | {params} | {row.get('latency_ms', '–')} |")
    return "\n".join(lines) + "\n"


def _bundles(run: Path) -> str:
    root = RunLayout(run).bundles_dir
    bundles = sorted(p for p in root.glob("*") if (p / "configs" / "metadata.json").is_file()) if root.is_dir() else []
    if not bundles:
        return _not_run("export-bundle", "naslung export-bundle --run RUN --out RUN/bundles/NAME")
    lines = []
    for bundle in bundles:
        lines.append(f"- `{bundle.relative_to(run)}`: run it with")
        lines.append(
            f"  `python -m monai.bundle run --config_file {bundle}/configs/inference.json "
            f"--bundle_root {bundle} --datalist DATALIST.json --output_dir OUT`"
        )
    smoke = _read_json(RunLayout(run).smoke)
    for check in (smoke or {}).get("bundles", []):
        lines.append(
            f"- smoke check of `{Path(str(check.get('bundle', '?'))).name}` run without naslung on "
            f"{check.get('n', '?')} cubes: **{check.get('status')}** (largest probability difference from naslung's "
            f"{float(check.get('max_abs_difference', float('nan'))):.1e})"
        )
    return "\n".join(lines) + "\n"


def build_report(run_dir: str | os.PathLike, title: str = "naslung run report") -> tuple[Path, Path]:
    """Write ``run_dir/report.md`` and ``run_dir/report.html`` from whatever steps have produced.

    Each section shows its step's numbers and figures, or says which command produces it. Figures are linked
    by relative path so the folder can be moved or zipped.

    Returns:
        the Markdown and HTML paths.
    """
    run = Path(run_dir)
    sections = {
        "Cohort": _cohort(run),
        "Architecture search": _search(run),
        "Cross-validated results": _cv(run),
        "Reference models": _references(run),
        "Comparison with the paper": _include(run, "ensemble/results_table.md", "naslung ensemble --run RUN"),
        "Ensemble size": _figure(run, "ensemble/ensemble_size.png", "Metrics against ensemble size (Fig. 7)"),
        "Ablation": _include(run, "analysis/ablation.md", "naslung evaluate --run RUN"),
        "Feature discriminability": _include(run, "analysis/discriminability.md", "naslung evaluate --run RUN")
        + "\n"
        + _figure(run, "analysis/tsne.png", "t-SNE of penultimate features (Fig. 6)"),
        "Attention and Grad-CAM": _figure(run, "analysis/attention.png", "Stage-2 spatial attention (Fig. 5)")
        + "\n"
        + _figure(run, "analysis/gradcam.png", "Grad-CAM of the last stage"),
        "Latency and parameters": _latency(run),
        "Bundles": _bundles(run),
    }
    text = [f"# {title}", "", f"Run directory: `{run.resolve()}`", ""]
    for name in REPORT_SECTIONS:
        text += [f"## {name}", "", sections[name]]
    markdown_text = "\n".join(text)
    md_path, html_path = RunLayout(run).report_md, RunLayout(run).report_html
    with atomic_open(md_path, "w") as handle:
        handle.write(markdown_text)
    with atomic_open(html_path, "w") as handle:
        handle.write(_to_html(markdown_text, title))
    logger.info("report written to %s", md_path)
    return md_path, html_path


def _to_html(markdown_text: str, title: str) -> str:
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.45}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.25em .6em}"
        "img{max-width:100%}code{background:#f3f3f3;padding:0 .2em}"
    )
    head = f"<meta charset='utf-8'><title>{title}</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>\n"
