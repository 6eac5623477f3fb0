"""``naslung ensemble``: majority-vote ensemble of a run's trained networks, ensemble-size study, results table."""

from __future__ import annotations

import argparse
from pathlib import Path

from naslung.pipeline.ensemble.step import ENSEMBLE_OUTPUTS, run_ensemble_step
from naslung.pipeline.metrics import BINARY_METRICS
from naslung.pipeline.progress import no_progress, tqdm_progress

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``naslung ensemble``."""
    parser = subparsers.add_parser(
        "ensemble",
        help="combine the trained networks of a run by majority vote; ensemble-size study; results table",
        description=(
            "Combine the networks of RUN/train (their test_predictions.csv on the same held-out folds) by majority "
            "vote: each network votes malignant when its probability exceeds 0.5 and the nodule is malignant when "
            "more than half of the n networks vote so. Writes RUN/ensemble/fold_<k>/predictions.csv, metrics.json, "
            "per_fold.csv, reference_per_fold.png (per-fold accuracy and AUC beside the diameter rule and the "
            "ratings ceiling), ensemble_size.csv/.png and results_table.md/.csv."
        ),
    )
    parser.add_argument("--run", required=True, help="run directory (with train/<slug>/fold_<k>/)")
    parser.add_argument(
        "--members",
        nargs="+",
        metavar="SLUG",
        help="networks to combine: folder names under RUN/train or specs (default: search/selected.json's specs "
        "that were trained, else every trained network)",
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1, 3, 5, 7, 9], help="ensemble sizes of the size study"
    )
    parser.add_argument("--draws", type=int, default=10, help="random member subsets per size (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset draws")
    parser.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    parser.add_argument("--force", action="store_true", help="recompute even when up to date")
    parser.set_defaults(func=run)


def _pct(value: object) -> str:
    return f"{100 * float(value):.2f}" if isinstance(value, (int, float)) else "–"


def run(args: argparse.Namespace) -> int:
    result = run_ensemble_step(
        args.run,
        members=args.members,
        sizes=args.sizes,
        draws=args.draws,
        seed=args.seed,
        latency=not args.no_latency,
        force=args.force,
        progress=no_progress if args.quiet else tqdm_progress,
    )
    out = Path(args.run) / "ensemble"
    if result.get("skipped"):
        print(f"{out} is up to date (nothing to do; --force recomputes)")
    members = ", ".join(m["slug"] for m in result["members"])
    print(f"ensemble of {result['n_members']} ({members}) on held-out folds {result['folds']}: {result['rule']}")
    print(f"  {'':<10}" + "".join(f"{name:>16}" for name in BINARY_METRICS))
    summary = result["summary"]
    cells = [f"{_pct(summary[f'{m}_mean'])} ± {_pct(summary[f'{m}_std'])}" for m in BINARY_METRICS]
    print(f"  {'mean ± std':<10}" + "".join(f"{cell:>16}" for cell in cells))
    for row in result["per_fold"]:
        print(f"  {'fold ' + str(row['fold']):<10}" + "".join(f"{_pct(row[m]):>16}" for m in BINARY_METRICS))
    print(f"  members disagree on {result['n_disagreements']} of {result['n_nodules']} nodules")
    if result.get("params") is not None:
        latency = result.get("latency_ms")
        extra = "" if latency is None else f", {latency:.3f} ms per nodule on CPU (members run one after another)"
        print(f"  parameters: {result['params']:,}{extra}")
    print(f"outputs in {out}: fold_<k>/predictions.csv, {', '.join(ENSEMBLE_OUTPUTS)}")
    return 0
