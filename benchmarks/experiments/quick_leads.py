"""Every stored clean-clone run's AUC lead over the diameter rule, with its 95% interval, in one figure.

Run: ``python benchmarks/experiments/quick_leads.py``. It reads the run folders the README's tables name
(``benchmarks/results/quick_run_session12*`` to the newest, and ``standard_run_session14*`` on; the control run with
SphereFace's λ floor and the one run beside other work are left out), each fold's ``auc_minus_diameter_rule`` from its
``per_fold.csv`` (or ``ensemble_per_fold.csv``), and the paired bootstrap interval of the mean lead from its
``ensemble_metrics.json`` (``reference_models.ensemble_minus_diameter_rule.bootstrap``, written since session 16).
Runs from before that take the interval that ``benchmarks/experiments/lead_intervals.py`` computed for a run with the
same members and the same per-fold AUCs (``benchmarks/results/lead_intervals.json``): a network trained with the same
seed scores the same to the last digit, so such a run made the same predictions. A run with neither has no interval.

Writes ``benchmarks/results/quick_leads.json`` and ``quick_leads.png``: per run the mean lead as a point, its interval
as a bar and each fold's lead as a small mark; zero is the diameter rule.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.errors import DataError
from naslung.pipeline.plotting import new_figure, save_figure

RESULTS = Path(__file__).resolve().parents[1] / "results"
#: Folders of runs that are not the profile as released: a control, a run beside other work and a stopped trial.
EXCLUDED = ("quick_run_session12_floor5", "quick_run_session10_contended", "standard_run_session14_e20_stopped")
_FOLDER = re.compile(r"^(quick|standard)_run_session(\d+)(?:_(\w+))?$")


def run_folders(results: Path, first_session: dict[str, int] | None = None) -> list[Path]:
    """The run folders under ``results`` from each profile's first session on (quick 12, standard 14), in session
    order, ``EXCLUDED`` left out."""
    first = first_session or {"quick": 12, "standard": 14}
    found = []
    for path in results.iterdir():
        match = _FOLDER.match(path.name)
        if path.is_dir() and match and path.name not in EXCLUDED and int(match[2]) >= first[match[1]]:
            found.append((match[1], int(match[2]), match[3] or "", path))
    return [path for *_, path in sorted(found, key=lambda f: (f[0] != "quick", f[1], f[2] != "", f[2]))]


def _per_fold_leads(folder: Path) -> list[dict[str, float]]:
    for name in ("per_fold.csv", "ensemble_per_fold.csv"):
        path = folder / name
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            if not rows or "auc_minus_diameter_rule" not in rows[0]:
                raise DataError(f"{path}: no auc_minus_diameter_rule column")
            return [
                {"fold": int(r["fold"]), "auc": float(r["auc"]), "lead": float(r["auc_minus_diameter_rule"])}
                for r in rows
            ]
    raise DataError(f"{folder}: neither per_fold.csv nor ensemble_per_fold.csv")


def _interval(metrics: dict[str, Any], folds: Sequence[dict[str, float]], known: dict[str, Any]) -> dict | None:
    """The run's own bootstrap interval, else that of a run in ``known`` with the same members and fold AUCs."""
    own = metrics.get("reference_models", {}).get("ensemble_minus_diameter_rule", {}).get("bootstrap")
    if own:
        return {"low": own["auc"]["low"], "high": own["auc"]["high"], "from": "ensemble_metrics.json"}
    members = [m["spec"] for m in metrics.get("members", [])]
    aucs = [round(f["auc"], 12) for f in folds]
    for name, entry in known.items():
        same_aucs = [round(f["auc"], 12) for f in entry["per_fold"]] == aucs
        if entry.get("members") == members and same_aucs:
            boot = entry["ensemble_minus_diameter_rule"]["bootstrap"]["auc"]
            return {"low": boot["low"], "high": boot["high"], "from": f"lead_intervals.json:{name}"}
    return None


def collect(results: Path = RESULTS) -> list[dict[str, Any]]:
    """One entry per run folder: profile, folder, members, per-fold leads, mean lead and its interval (or None)."""
    known_path = results / "lead_intervals.json"
    known = json.loads(known_path.read_text(encoding="utf-8")) if known_path.is_file() else {}
    entries = []
    for folder in run_folders(results):
        metrics_path = folder / "ensemble_metrics.json"
        if not metrics_path.is_file():
            raise DataError(f"{folder}: no ensemble_metrics.json")
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        folds = _per_fold_leads(folder)
        entries.append(
            {
                "profile": _FOLDER.match(folder.name)[1],
                "folder": folder.name,
                "members": [m["spec"] for m in metrics.get("members", [])],
                "per_fold": folds,
                "mean_lead": sum(f["lead"] for f in folds) / len(folds),
                "interval": _interval(metrics, folds, known),
            }
        )
    return entries


def plot(entries: Sequence[dict[str, Any]], path: Path) -> Path:
    """Mean AUC lead per run (point), its 95% interval (bar) and each fold's lead (small marks); written to ``path``."""
    figure = new_figure(max(6.0, 0.45 * len(entries) + 2.0), 4.0)
    ax = figure.add_subplot()
    colours = {"quick": "tab:orange", "standard": "tab:green"}
    for x, entry in enumerate(entries):
        colour = colours[entry["profile"]]
        if entry["interval"]:
            ax.plot([x, x], [entry["interval"]["low"], entry["interval"]["high"]], color=colour, lw=2, alpha=0.5)
        ax.plot([x] * len(entry["per_fold"]), [f["lead"] for f in entry["per_fold"]], "_", color="0.3", ms=8)
        ax.plot(x, entry["mean_lead"], "o", color=colour, label=entry["profile"])
    ax.axhline(0.0, color="0.2", lw=1)
    ax.set_xticks(range(len(entries)), [e["folder"].replace("_run_session", " ") for e in entries], rotation=60)
    ax.set_ylabel("ensemble AUC minus diameter rule's")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="lower left", fontsize=8)
    ax.set_title("Mean AUC lead over the held-out folds (point), 95% bootstrap interval (bar), each fold (dash)")
    ax.title.set_fontsize(9)
    return save_figure(figure, path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    entries = collect(args.results)
    write_json(args.results / "quick_leads.json", {"runs": entries})
    plot(entries, args.results / "quick_leads.png")
    for e in entries:
        iv = e["interval"]
        span = f"({iv['low']:+.3f} to {iv['high']:+.3f})" if iv else "(no interval)"
        print(f"{e['folder']:32s} {e['mean_lead']:+.4f} {span}")


if __name__ == "__main__":
    main()
