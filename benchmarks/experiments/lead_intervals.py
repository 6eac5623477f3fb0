"""How sure a finished run's lead over the diameter rule is: the ensemble step's paired bootstrap, on earlier runs.

Run ``python benchmarks/experiments/lead_intervals.py --run RUN --name NAME [--run RUN --name NAME ...]``.

Runs made before the ensemble step computed a bootstrap interval lack one. For each ``RUN`` this copies what the
ensemble step reads (``RUN/train``, ``RUN/data``, ``RUN/search``) into a temporary folder, runs the pipeline's own
:func:`~naslung.pipeline.ensemble.step.run_ensemble_step` there (the run itself is not touched), and keeps the
ensemble's per-fold lead over the diameter rule and its interval (``ensemble_minus_diameter_rule``). Results are
merged into ``benchmarks/results/lead_intervals.json`` under ``NAME`` and printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.ensemble.step import run_ensemble_step

__all__ = ["main", "lead_interval"]

RESULTS = Path(__file__).resolve().parents[1] / "results" / "lead_intervals.json"


def lead_interval(run: Path) -> dict:
    """The ensemble step's ``ensemble_minus_diameter_rule`` record for a copy of ``run`` (per fold, summary and
    bootstrap), with the ensemble's members and per-fold metrics."""
    with tempfile.TemporaryDirectory(prefix="lead_interval_") as scratch:
        copy = Path(scratch) / "run"
        for part in ("train", "data", "search"):
            if (run / part).is_dir():
                shutil.copytree(run / part, copy / part)
        result = run_ensemble_step(copy, latency=False, force=True)
    versus = result["reference_models"]["ensemble_minus_diameter_rule"]
    if "omitted" in versus:
        raise SystemExit(f"{run}: no lead over the diameter rule to measure: {versus['omitted']}")
    return {
        "run": str(run),
        "members": [m["spec"] for m in result["members"]],
        "per_fold": [{k: r[k] for k in ("fold", "accuracy", "auc")} for r in result["per_fold"]],
        "ensemble_minus_diameter_rule": versus,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", required=True, help="a finished run folder")
    parser.add_argument("--name", action="append", required=True, help="the key of each --run in the results")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if len(args.run) != len(args.name):
        parser.error("give one --name per --run")
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    for run, name in zip(args.run, args.name, strict=True):
        record = lead_interval(run)
        results[name] = record
        boot = record["ensemble_minus_diameter_rule"]["bootstrap"]
        print(
            f"{name}: ensemble - diameter rule, mean over {len(record['per_fold'])} folds: "
            + "; ".join(
                f"{m} {boot[m]['observed']:+.4f} [{boot[m]['low']:+.4f}, {boot[m]['high']:+.4f}], "
                f"ahead in {boot[m]['ahead_fraction']:.0%} of resamples"
                for m in ("accuracy", "auc")
            )
        )
        write_json(args.out, results)  # after each run, so a later failure keeps the earlier ones
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
