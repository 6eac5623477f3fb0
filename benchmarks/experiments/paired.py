"""Paired differences between two recipe arms: each arm run against the base run of the same seed and validation folds.

Run: ``python benchmarks/experiments/paired.py NAME=BASE_GLOB,ARM_GLOB [NAME=...] [--arm_auc KEY] [--out FILE]``,
each glob naming :mod:`recipe` result files in ``benchmarks/results/recipe/`` (e.g.
``e13=s12_*lmin10_s*.json,s13_*e13_s*.json``). ``--arm_auc KEY`` reads the arm's AUC from its result's top-level
``KEY`` instead of its last epoch's ``val_auc``: a second score of the same network (``recipe.py --angle 1`` writes
``angle_val_auc``), so both globs may name the same runs.

Runs pair when their ``args`` share ``seed`` and ``val_folds``; every other argument that differs within a pair is
listed (``differs``), so a comparison that changes more than it says shows it; an argument added to :mod:`recipe` after
one of the runs counts as the same when the other run left it off. Same code and data give the same run
to the last digit (``s13_repro_s0`` repeats ``s12_lmin10_s0``), so a pair isolates its change from the seeds' spread.
For each comparison: per pair the final (last-epoch) validation AUC and accuracy of both runs and their differences,
then the mean differences and how many pairs the arm is ahead in.

Written to ``--out`` (default ``benchmarks/results/recipe/paired.json``; comparisons already there and not named
again are kept) and printed.
"""

from __future__ import annotations

import argparse
import glob
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from naslung.pipeline.atomic_io import write_json

RECIPE_DIR = Path(__file__).resolve().parents[1] / "results" / "recipe"
RESULTS_FILE = RECIPE_DIR / "paired.json"
#: Arguments that name a run or set what a pair shares, never a difference of recipe.
_IDENTITY = {"name", "seed", "val_folds"}


_MISSING = object()


def _differs(base: object, arm: object) -> bool:
    """Whether two values of one argument differ; an argument that one run predates (added to :mod:`recipe` later)
    equals a false value (0, 0.0, "", False: every such option's off state) in the other."""
    if base is _MISSING or arm is _MISSING:
        present = arm if base is _MISSING else base
        return present is not _MISSING and bool(present)
    return base != arm


def _runs(patterns: str | Sequence[str]) -> dict[tuple[int, str], dict]:
    """Recipe results matching ``patterns`` (one glob or several) in :data:`RECIPE_DIR`, keyed by (seed, validation
    folds)."""
    globs = [patterns] if isinstance(patterns, str) else list(patterns)
    pattern = " or ".join(globs)  # for messages
    runs: dict[tuple[int, str], dict] = {}
    for path in sorted({p for glob_ in globs for p in glob.glob(str(RECIPE_DIR / glob_))}):
        result = json.loads(Path(path).read_text(encoding="utf-8"))
        if "final" not in result or "args" not in result:
            raise SystemExit(f"{path}: not a finished recipe run (no 'final' or 'args')")
        key = (int(result["args"]["seed"]), str(result["args"]["val_folds"]))
        if key in runs:
            raise SystemExit(f"{path}: a second run for seed {key[0]}, validation folds {key[1]} in {pattern!r}")
        runs[key] = result
    return runs


def compare(base_glob: str | Sequence[str], arm_glob: str | Sequence[str], arm_auc_key: str | None = None) -> dict:
    """Every pair of ``arm_glob`` and ``base_glob`` runs (each one glob or several) with the same seed and validation
    folds, and the means. ``arm_auc_key``: the arm's AUC is its result's top-level value of this key (default: the
    last epoch's ``val_auc``)."""
    base, arm = _runs(base_glob), _runs(arm_glob)
    pairs = []
    for key in sorted(set(base) & set(arm), key=lambda k: (k[1], k[0])):
        b, a = base[key], arm[key]
        if arm_auc_key is not None and arm_auc_key not in a:
            raise SystemExit(f"{a['args']['name']}.json: no {arm_auc_key!r} (the --arm_auc key)")
        arm_auc = a["final"]["val_auc"] if arm_auc_key is None else float(a[arm_auc_key])
        names = (set(b["args"]) | set(a["args"])) - _IDENTITY
        differs = sorted(k for k in names if _differs(b["args"].get(k, _MISSING), a["args"].get(k, _MISSING)))
        pairs.append(
            {
                "seed": key[0],
                "val_folds": key[1],
                "base": b["args"]["name"],
                "arm": a["args"]["name"],
                "differs": {k: [b["args"].get(k), a["args"].get(k)] for k in differs},
                "base_auc": b["final"]["val_auc"],
                "arm_auc": arm_auc,
                "d_auc": arm_auc - b["final"]["val_auc"],
                "base_accuracy": b["final"]["val_acc"],
                "arm_accuracy": a["final"]["val_acc"],
                "d_accuracy": a["final"]["val_acc"] - b["final"]["val_acc"],
            }
        )
    if not pairs:
        raise SystemExit(f"no pairs between {base_glob!r} and {arm_glob!r} (same seed and validation folds)")
    d_auc = np.array([p["d_auc"] for p in pairs])
    d_acc = np.array([p["d_accuracy"] for p in pairs])
    return {
        "base_glob": base_glob,
        "arm_glob": arm_glob,
        **({"arm_auc_key": arm_auc_key} if arm_auc_key is not None else {}),
        "n_pairs": len(pairs),
        "mean_d_auc": float(d_auc.mean()),
        "auc_ahead": int((d_auc > 0).sum()),
        "mean_d_accuracy": float(d_acc.mean()),
        "accuracy_ahead": int((d_acc > 0).sum()),
        "pairs": pairs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("comparisons", nargs="+", help="NAME=BASE_GLOB,ARM_GLOB")
    parser.add_argument("--arm_auc", default=None, help="the arm's AUC key in its result (default: final val_auc)")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    for item in args.comparisons:
        name, _, globs = item.partition("=")
        base_glob, _, arm_glob = globs.partition(",")
        if not (name and base_glob and arm_glob):
            raise SystemExit(f"{item!r}: expected NAME=BASE_GLOB,ARM_GLOB")
        results[name] = result = compare(base_glob, arm_glob, args.arm_auc)
        for p in result["pairs"]:
            print(
                f"{name} folds {p['val_folds']} seed {p['seed']}: AUC {p['base_auc']:.4f} -> {p['arm_auc']:.4f} "
                f"({p['d_auc']:+.4f}), accuracy {p['d_accuracy']:+.3f}, differs {p['differs']}"
            )
        print(
            f"{name}: {result['n_pairs']} pairs, AUC {result['mean_d_auc']:+.4f} (ahead {result['auc_ahead']}), "
            f"accuracy {result['mean_d_accuracy']:+.4f} (ahead {result['accuracy_ahead']})"
        )
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
