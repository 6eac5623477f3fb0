"""The anchors the networks are measured against, on the packaged cohort's 10 folds: the diameter rule and the
readers' ratings ceiling (see :mod:`naslung.pipeline.reference_models`).

Run ``python benchmarks/anchors.py``. Each fold is held out once; both models are fitted on the other nine folds
and scored on it. Writes ``benchmarks/results/anchors.json`` (per-fold and mean ± sample std metrics) and prints
both models side by side. It reads whatever ``pipeline/data/cohort_default.csv.gz`` holds at the time.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import platform
import time
from pathlib import Path

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.data.cohort_table import DEFAULT_COHORT_FILE, load_default_cohort, summarise_cohort
from naslung.pipeline.ensemble.reference_models import (
    DIAMETER_RULE,
    RATINGS_CEILING,
    evaluate_reference_models,
    reference_data_from_rows,
)

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results" / "anchors.json"


def _cohort_digest() -> str:
    resource = importlib.resources.files("naslung.pipeline").joinpath(DEFAULT_COHORT_FILE)
    return hashlib.sha256(resource.read_bytes()).hexdigest()[:16]


def _cell(summary: dict, metric: str) -> str:
    mean, std = summary[f"{metric}_mean"], summary[f"{metric}_std"]
    return f"{100 * mean:.1f}% ± {100 * std:.1f}" if metric == "accuracy" else f"{mean:.3f} ± {std:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file to write (default {RESULTS})")
    args = parser.parse_args()

    start = time.perf_counter()
    rows = load_default_cohort()
    data = reference_data_from_rows(rows, source="the packaged default cohort")
    results = evaluate_reference_models(data)
    seconds = time.perf_counter() - start
    counts = summarise_cohort(rows)
    folds = sorted({int(r["fold"]) for r in rows})
    record = {
        "benchmark": "anchors",
        "cohort": {"file": f"naslung/pipeline/{DEFAULT_COHORT_FILE}", "sha256_16": _cohort_digest(), **counts},
        "folds": folds,
        "protocol": "each fold held out once; models fitted on the other folds; metrics per fold, mean ± sample std",
        "models": results,
        "seconds": round(seconds, 2),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    write_json(args.out, record)

    print(f"cohort: {counts['nodules']} nodules ({counts['malignant']} malignant), {len(folds)} folds")
    names = {DIAMETER_RULE: "diameter rule", RATINGS_CEILING: "ratings ceiling (reader ratings, no image)"}
    print(f"{'anchor (10-fold, mean ± std)':<52} {'accuracy':>14} {'AUC':>15}")
    for name, short in names.items():
        model = results[name]
        if "summary" not in model:
            print(f"anchor {short}: omitted ({model['omitted']})")
            continue
        print(
            f"{'anchor: ' + short:<52} {_cell(model['summary'], 'accuracy'):>14} {_cell(model['summary'], 'auc'):>15}"
        )
    if all("summary" in results[name] for name in (DIAMETER_RULE, RATINGS_CEILING)):
        rule, ceiling = results[DIAMETER_RULE]["summary"], results[RATINGS_CEILING]["summary"]
        gap_points = 100 * (ceiling["accuracy_mean"] - rule["accuracy_mean"])
        print(
            f"anchor gap, ratings ceiling - diameter rule: accuracy {gap_points:+.1f} points, "
            f"AUC {ceiling['auc_mean'] - rule['auc_mean']:+.3f} (goal: networks above the diameter rule, towards the "
            "ceiling)"
        )
    print(f"written to {args.out} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
