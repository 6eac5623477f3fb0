"""``naslung train``: train one network (a NAS-Lung spec or a baseline) on one or several held-out folds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from naslung.networks import NETWORKS
from naslung.pipeline.commands.overrides import add_config_arguments, parse_overrides
from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.training.step import load_train_config, network_overrides, train_folds

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``naslung train``."""
    parser = subparsers.add_parser("train", help="train a network on one or more held-out folds")
    parser.add_argument("--data", required=True, help="folder with manifest.csv (from `naslung prepare`)")
    parser.add_argument("--out", required=True, help="run directory of this network")
    parser.add_argument("--folds", type=int, nargs="+", help="held-out test folds (default: the config's `folds`)")
    parser.add_argument(
        "--network",
        default="cbam_resnet3d",
        choices=sorted(NETWORKS),
        help="network of the factory: cbam_resnet3d (a NAS-Lung spec, see --arch) or a 3D baseline",
    )
    parser.add_argument("--arch", help="spec of cbam_resnet3d, e.g. '[4,4,[4,4],[4,8],[8,8]]' (default: the config's)")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.overrides)
    overrides.update(network_overrides(args.network, args.arch))
    merged = load_train_config(args.config, overrides)
    folds = args.folds or merged["folds"]
    datalist = read_manifest(Path(args.data) / "manifest.csv")
    result = train_folds(datalist, folds, args.out, args.config, overrides, show_progress=not args.quiet)
    summary = result["summary"]
    print(f"trained {merged['arch']} on folds {folds}; results in {Path(args.out) / 'cv_metrics.json'}")
    for name in ("accuracy", "sensitivity", "specificity", "f1", "auc"):
        if f"{name}_mean" in summary:
            print(f"  {name:<12} {summary[f'{name}_mean']:.4f} ± {summary.get(f'{name}_std', float('nan')):.4f}")
    if not summary:
        print(json.dumps(result["per_fold"], indent=2))
    return 0
