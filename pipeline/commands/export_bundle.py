"""``naslung export-bundle``: write a trained network, or the ensemble, of a run directory as a MONAI bundle."""

from __future__ import annotations

import argparse
import logging

from naslung.pipeline.export.step import export_bundle
from naslung.pipeline.progress import no_progress, tqdm_progress

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``naslung export-bundle``."""
    parser = subparsers.add_parser(
        "export-bundle",
        help="write a MONAI bundle (configs, weights, TorchScript, docs) of a trained network or the ensemble",
        description=(
            "Write a self-contained MONAI bundle: inference/evaluate/train configs, metadata with the held-out "
            "metrics, model.pt + model.ts (member_<i>.pt/.ts for an ensemble), the naslung code the configs use "
            "under scripts/, README and licences. Run it with `python -m monai.bundle run --config_file "
            "BUNDLE/configs/inference.json --bundle_root BUNDLE --datalist FILE --output_dir DIR`."
        ),
    )
    parser.add_argument("--run", required=True, help="run directory (with train/<slug>/, data/manifest.csv, ...)")
    parser.add_argument("--out", required=True, help="bundle folder to write, e.g. RUN/bundles/naslung_classifier")
    parser.add_argument("--ensemble", action="store_true", help="export the majority-vote ensemble of several networks")
    parser.add_argument(
        "--member",
        dest="members",
        action="append",
        metavar="SLUG",
        help="network to ship (folder under RUN/train or a spec); repeat for ensemble members "
        "(default: the only trained network / the search's selection / RUN/ensemble's members)",
    )
    parser.add_argument(
        "--fold", type=int, help="ship this held-out fold's models (default: the 'all' model, else the lowest fold)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet = getattr(args, "quiet", False)
    summary = export_bundle(
        args.run,
        args.out,
        ensemble=args.ensemble,
        members=args.members,
        fold=args.fold,
        progress=no_progress if quiet else tqdm_progress,
    )
    state = "up to date" if summary.skipped else "written"
    members = ", ".join(f"{m['spec']} ({m['weights']})" for m in summary.members)
    print(f"{summary.kind} bundle {state}: {summary.path}")
    print(f"  networks: {members}")
    shown = {k: v for k, v in summary.eval_metrics.items() if isinstance(v, float)}
    if shown:
        print("  held-out metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    else:
        print("  held-out metrics: none recorded (see the bundle's README)")
    print(f"  latency: {summary.latency_ms_per_nodule:.2f} ms per nodule (CPU, 1 thread)")
    print(
        f"  run it: python -m monai.bundle run --config_file {summary.path}/configs/inference.json "
        f"--bundle_root {summary.path} --datalist FILE --output_dir DIR"
    )
    logging.getLogger(__name__).debug("export summary: %s", summary)
    return 0
