"""Two held-out folds trained apart or together: per-fold validation AUC of the two protocols, paired by seed.

Run: ``python benchmarks/experiments/shared_holdout.py --data DIR NAME=SHARED_GLOB,SEPARATE_GLOB [...] [--out FILE]``.

The quick profile holds out two folds. Today each held-out fold gets its own model, trained on the nine other folds
("separate"); the alternative trains one model on the eight folds outside both and tests it on each ("shared"), which
halves the training jobs, so the same time buys twice the epochs. This compares the two on validation folds only:

- ``SHARED_GLOB`` names :mod:`recipe` result files validated on a pair of folds at once (``--val_folds 8,9``);
- ``SEPARATE_GLOB`` names files validated on one fold each (``--val_folds 8`` and ``--val_folds 9``), so each was
  trained on the other nine folds.

A shared run pairs with the two separate runs of the same seed whose folds make up its pair. Each side's score is the
mean over the two folds of that fold's AUC (and accuracy), as a run reports its held-out folds. ``DIR`` is the prepared
data set the runs used (its ``manifest.csv`` gives each validation nodule's fold and label). Every argument other than
``name``, ``val_folds`` and the arguments listed in ``--allow`` must agree within a pair, or the script stops.

Written to ``--out`` (default ``benchmarks/results/recipe/shared_holdout.json``; comparisons already there and not named
again are kept) and printed.
"""

from __future__ import annotations

import argparse
import glob
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.data.datalists import read_manifest

RECIPE_DIR = Path(__file__).resolve().parents[1] / "results" / "recipe"
RESULTS_FILE = RECIPE_DIR / "shared_holdout.json"


def _folds(run: dict) -> tuple[int, ...]:
    return tuple(int(f) for f in str(run["args"]["val_folds"]).split(","))


def _per_fold(run: dict, labels: np.ndarray, folds: np.ndarray) -> dict[int, dict[str, float]]:
    """Each validation fold's AUC and accuracy (threshold 0.5) of ``run``'s last-epoch probabilities."""
    chosen = _folds(run)
    mask = np.isin(folds, chosen)
    probabilities = np.asarray(run["val_probabilities"], dtype=float)
    if len(probabilities) != int(mask.sum()):
        raise SystemExit(f"{run['args']['name']}: {len(probabilities)} probabilities, {int(mask.sum())} nodules")
    y, f = labels[mask], folds[mask]
    return {
        k: {
            "auc": float(roc_auc_score(y[f == k], probabilities[f == k])),
            "accuracy": float(((probabilities[f == k] > 0.5) == y[f == k]).mean()),
        }
        for k in chosen
    }


def _check_same(runs: Sequence[dict], allow: set[str]) -> None:
    keys = set().union(*(r["args"] for r in runs)) - {"name", "val_folds"} - allow
    for key in sorted(keys):
        # an argument added to recipe.py after a run was made counts as off (0, "", False) in that run
        values = {json.dumps(r["args"].get(key) or None) for r in runs}
        if len(values) > 1:
            names = [r["args"]["name"] for r in runs]
            raise SystemExit(f"{names}: argument {key!r} differs ({sorted(values)}); list it in --allow if intended")


def compare(
    shared: Sequence[dict], separate: Sequence[dict], labels: np.ndarray, folds: np.ndarray, allow: set[str]
) -> dict:
    """Pairs of (shared run, its two separate runs) and the differences of their fold-mean AUC and accuracy."""
    by_key = {(r["args"]["seed"], _folds(r)): r for r in separate}
    pairs = []
    for run in sorted(shared, key=lambda r: (r["args"]["val_folds"], r["args"]["seed"])):
        seed, pair = run["args"]["seed"], _folds(run)
        parts = [by_key.get((seed, (k,))) for k in pair]
        if any(p is None for p in parts):
            continue
        _check_same([run, *parts], allow)
        together = _per_fold(run, labels, folds)
        apart = {k: _per_fold(p, labels, folds)[k] for k, p in zip(pair, parts, strict=True)}
        row = {"seed": seed, "folds": list(pair), "shared": run["args"]["name"]}
        row["separate"] = [p["args"]["name"] for p in parts]
        for metric in ("auc", "accuracy"):
            row[f"shared_{metric}"] = float(np.mean([together[k][metric] for k in pair]))
            row[f"separate_{metric}"] = float(np.mean([apart[k][metric] for k in pair]))
            row[f"d_{metric}"] = row[f"shared_{metric}"] - row[f"separate_{metric}"]
        row["per_fold"] = {str(k): {"shared": together[k], "separate": apart[k]} for k in pair}
        pairs.append(row)
    if not pairs:
        raise SystemExit("no shared run has both of its folds' separate runs at the same seed")
    d_auc = [p["d_auc"] for p in pairs]
    d_acc = [p["d_accuracy"] for p in pairs]
    return {
        "n_pairs": len(pairs),
        "mean_d_auc": float(np.mean(d_auc)),
        "shared_auc_ahead": int(sum(d > 0 for d in d_auc)),
        "mean_d_accuracy": float(np.mean(d_acc)),
        "shared_accuracy_ahead": int(sum(d > 0 for d in d_acc)),
        "pairs": pairs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared data set the runs trained on")
    parser.add_argument("comparisons", nargs="+", help="NAME=SHARED_GLOB,SEPARATE_GLOB (recipe result files)")
    parser.add_argument("--allow", default="", help="comma-separated arguments allowed to differ, e.g. epochs")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    rows = read_manifest(args.data / "manifest.csv")  # a missing or malformed manifest is a DataError naming it
    labels = np.array([r["label"] for r in rows])
    folds = np.array([r["fold"] for r in rows])
    allow = {a for a in args.allow.split(",") if a}
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    for comparison in args.comparisons:
        name, _, globs = comparison.partition("=")
        shared_glob, _, separate_glob = globs.partition(",")
        loaded = []
        for pattern in (shared_glob, separate_glob):
            files = sorted(glob.glob(str(RECIPE_DIR / pattern)))
            if not files:
                raise SystemExit(f"{name}: no file matches {RECIPE_DIR / pattern}")
            loaded.append([json.loads(Path(f).read_text(encoding="utf-8")) for f in files])
        result = compare(loaded[0], loaded[1], labels, folds, allow)
        results[name] = {"shared_glob": shared_glob, "separate_glob": separate_glob, "allowed": sorted(allow)}
        results[name].update(result)
        print(
            f"{name}: {result['n_pairs']} pairs, fold-mean AUC shared - separate {result['mean_d_auc']:+.4f} "
            f"(shared ahead in {result['shared_auc_ahead']}), accuracy {result['mean_d_accuracy']:+.4f} "
            f"(ahead in {result['shared_accuracy_ahead']})"
        )
        for p in result["pairs"]:
            print(f"  seed {p['seed']} folds {p['folds']}: AUC {p['shared_auc']:.4f} vs {p['separate_auc']:.4f}")
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
