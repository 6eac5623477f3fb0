"""``naslung evaluate``: ablation, feature discriminability, attention and Grad-CAM maps of a run's networks."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from naslung.pipeline.analysis.step import run_evaluate_step
from naslung.pipeline.commands.overrides import add_config_arguments, parse_overrides
from naslung.pipeline.progress import no_progress, tqdm_progress

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``naslung evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="ablation (Tables 2-3), discriminability and t-SNE (Table 4, Fig. 6), attention/Grad-CAM (Fig. 5)",
        description=(
            "Analyse the networks of a run directory into RUN/analysis: the ablation trains the selected specs "
            "with and without CBAM, channel- vs spatial-first and Softmax vs A-Softmax on the same folds (reusing "
            "RUN/train where the setting matches); then feature discriminability, t-SNE, attention and Grad-CAM "
            "figures on the held-out folds, and training curves. The packaged config is pipeline/configs/"
            "evaluate.json; e.g. --set max_specs=1 --set 'train_overrides={\"max_epochs\": 2}' for a quick run."
        ),
    )
    parser.add_argument("--run", required=True, help="run directory (with data/manifest.csv and train/)")
    parser.add_argument("--force", action="store_true", help="redo the analyses even when up to date")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = run_evaluate_step(
        args.run,
        config=args.config,
        overrides=parse_overrides(args.overrides),
        force=args.force,
        show_progress=not args.quiet,
        progress=no_progress if args.quiet else tqdm_progress,
    )
    out = Path(args.run) / "analysis"
    if summary.get("skipped"):
        print(f"{out} is up to date (nothing to do; --force redoes it)")
    print(f"analysed {', '.join(summary['specs'])} on held-out folds {summary['folds']}")
    for row in summary.get("ablation", []):
        f1 = f"{100 * row['f1_mean']:6.2f}" + ("" if math.isnan(row["f1_std"]) else f" ± {100 * row['f1_std']:5.2f}")
        print(f"  {row['name']:<32} F1 (%) {f1:<16} params {row['params']:,.0f}")
    for row in summary.get("discriminability", []):
        dbi = f"{row['DBI_mean']:.3f}" + ("" if math.isnan(row["DBI_std"]) else f" ± {row['DBI_std']:.3f}")
        print(f"  {row['loss']:<10} {row['features']:<4} features: DBI {dbi}")
    print(f"outputs in {out}: " + ", ".join(summary["outputs"]))
    return 0
