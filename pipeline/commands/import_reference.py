"""``naslung import-reference``: convert the NAS-Lung authors' weights into a run folder (reference layout)."""

from __future__ import annotations

import argparse
from pathlib import Path

from naslung.pipeline.training.reference_import import import_reference

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``naslung import-reference``."""
    parser = subparsers.add_parser(
        "import-reference",
        help="convert the NAS-Lung authors' weights (ConvRes) into a run folder of the reference layout",
        description=(
            "Convert a state_dict with the authors' key names (conv1.0.weight, layers.3.ch_Linear1.weight, "
            "fc.weight, ...) into naslung's reference layout (build_network(spec, layout='reference')). Writes "
            "OUT/checkpoints/best_model.pt (a plain state_dict), OUT/config.json and OUT/reference_import.json. "
            "With OUT = RUN/train/SLUG/all, `naslung export-bundle --run RUN --member SLUG` ships it. Unknown, "
            "missing or mis-shaped keys are errors naming the key."
        ),
    )
    parser.add_argument(
        "--weights", required=True, help="the authors' state_dict (.pt/.pth), or ckpt.t7 with --allow-pickle"
    )
    parser.add_argument(
        "--arch",
        required=True,
        help="the spec the weights were trained with, e.g. '[4,4,[4,4],[4,8],[8,8]]' (the authors' config is its "
        "stages 3-5)",
    )
    parser.add_argument("--out", required=True, help="fold folder to write, e.g. RUN/train/model1-reference/all")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept a full NAS-Lung ckpt.t7 (a pickled module under 'net'). UNPICKLING RUNS CODE FROM THE FILE: "
        "use it only for files you trust. Needs the authors' code (models/cnn_res.py) on PYTHONPATH",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = import_reference(args.weights, args.arch, args.out, allow_pickle=args.allow_pickle)
    print(f"imported {result.spec} ({result.parameters:,} parameters, {result.source_format}) into {result.fold_dir}")
    print(f"  weights: {result.weights}")
    fold_dir = Path(result.fold_dir)
    if fold_dir.parent.parent.name == "train":
        run_dir, slug = fold_dir.parent.parent.parent, fold_dir.parent.name
        print(f"  bundle: naslung export-bundle --run {run_dir} --member {slug} --out {run_dir / 'bundles' / slug}")
    return 0
