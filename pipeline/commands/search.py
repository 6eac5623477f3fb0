"""``naslung search``: Partial Order Pruning (default) or differentiable (DNAS) architecture search on the search
folds, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

from naslung.pipeline.commands.overrides import add_config_arguments, parse_overrides
from naslung.pipeline.progress import no_progress, tqdm_progress
from naslung.pipeline.search.runner import load_search_config, run_search_step, search_space_from_config

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``naslung search``."""
    parser = subparsers.add_parser(
        "search",
        help="POP or DNAS architecture search (trains on the folds outside test_folds)",
        description=(
            "Search NAS-Lung architectures with Partial Order Pruning. Candidates train on the nodules of every fold "
            "not in the config's test_folds (default 1-5), so no evaluation fold is seen by the search. Writes "
            "OUT/journal.jsonl, pareto.csv, pareto.png and selected.json; running the same command again resumes. "
            "--strategy dnas trains a Gumbel-Softmax supernet instead (CovidNet3D) and writes alphas.png and the "
            "same selected.json."
        ),
    )
    parser.add_argument("--out", required=True, help="search folder, e.g. RUN/search")
    parser.add_argument("--data", help="folder with manifest.csv from `naslung prepare` (or data_dir in the config)")
    parser.add_argument(
        "--strategy", choices=("pop", "dnas"), help="search strategy (default: the config's strategy, pop)"
    )
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def _number(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.overrides)
    if args.strategy:
        overrides["strategy"] = args.strategy
    space = search_space_from_config(load_search_config(args.config, overrides))
    print(f"search space: {space.size():,} candidates ({space!r})")
    summary = run_search_step(
        args.out,
        args.config,
        overrides,
        data_dir=args.data,
        progress=no_progress if args.quiet else tqdm_progress,
    )
    out = Path(args.out)
    if summary.get("skipped"):
        print(f"{out} is up to date (nothing to do)")
    if summary.get("strategy") == "dnas":
        print(
            f"DNAS: {summary['epochs']} supernet epochs ({summary['resumed_epochs']} from the checkpoint) in "
            f"{summary['supernet_seconds']:.1f} s; derived {', '.join(summary['derived'])}"
        )
    pruned = summary.get("pruned")
    print(
        f"trained {summary['trained']} candidates ({summary['evaluated']} now, {summary['resumed']} from the journal), "
        f"pruned {pruned if pruned is not None else 'n/a'}; stop: {summary['stop_reason']}"
    )
    print("Pareto front (latency ms per nodule, validation F1 and accuracy):")
    print(f"  {'spec':<36} {'params':>9} {'latency_ms':>11} {'f1':>7} {'accuracy':>9}")
    for row in summary["front"]:
        print(
            f"  {row['spec']:<36} {row['params']!s:>9} {_number(row['latency_ms'], 3):>11} "
            f"{_number(row['f1']):>7} {_number(row['accuracy']):>9}"
        )
    print(f"selected for retraining: {', '.join(summary['selected']) or '(none)'}")
    figure = out / ("alphas.png" if summary.get("strategy") == "dnas" else "pareto.png")
    print(f"outputs: {out / 'journal.jsonl'}, {out / 'pareto.csv'}, {figure}, {out / 'selected.json'}")
    return 0
