"""Averaging within and across recipe runs on validation folds: the last epochs of one run, and members that share a
seed or not.

Run: ``python benchmarks/experiments/averaging.py --data DIR [--out FILE]`` after the session-12 :mod:`recipe` runs
(``benchmarks/results/recipe/s12_swa_s*.json``, ``s12_div*.json``), ``DIR`` the prepared data set they trained on.

- **Snapshots**: for each ``s12_swa_s*`` run (Model-1, seeds 0-3, folds 8-9), the validation AUC of the mean
  probability of its last k epochs (k = 2..5) minus its last epoch's.
- **Lambda floor**: each pair of runs that differ only in A-Softmax's floor (5 against ``--lam_min 10``, seeds 0-3 on
  validation folds 8-9, 6-7 and 5; 10 against 20 on all three), paired by :func:`paired.compare`: the final
  validation AUC and accuracy of each, their differences, and the means.
- **Member seeds**: the pipeline trains every member of an ensemble with the run's seed. Over the runs of different
  networks among ``s12_div*`` and ``s12_swa_s*`` (seed in the name's last digit), pairs that share the seed against
  pairs that do not: the Spearman correlation of the two networks' validation probabilities, and the AUC of their
  mean minus the mean of their AUCs.

Written to ``--out`` (default ``benchmarks/results/recipe/s12_averaging.json``) and printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from paired import compare  # this folder's script, on sys.path
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.data.datalists import read_manifest

RECIPE_DIR = Path(__file__).resolve().parents[1] / "results" / "recipe"
RESULTS_FILE = RECIPE_DIR / "s12_averaging.json"
#: Session-12 runs that differ only in A-Softmax's lambda floor, as (base globs, arm globs) of :func:`paired.compare`.
FLOOR_PAIRS = {
    "lambda_floor_10_minus_5": (
        ["s12_swa_s?.json", "s12_v67_s?.json", "s12_v5_s?.json"],
        ["s12_lmin10_s?.json", "s12_v67lmin10_s?.json", "s12_v5lmin10_s?.json"],
    ),
    "lambda_floor_20_minus_10": (
        ["s12_lmin10_s?.json", "s12_v67lmin10_s?.json", "s12_v5lmin10_s?.json"],
        ["s12_lmin20_s?.json", "s12_v67lmin20_s?.json", "s12_v5lmin20_s?.json"],
    ),
}
#: Runs of four networks (name -> network): three the quick profile's search selected in session 10, and Model-1.
MEMBER_RUNS = {
    "s12_divA_s0": "[4,4,[4,8],[8],[8]]",
    "s12_divB_s0": "[4,4,[4,4],[4],[8]]",
    "s12_divB_s1": "[4,4,[4,4],[4],[8]]",
    "s12_divC_s0": "[4,4,[4],[8,8],[8]]",
    "s12_divC_s2": "[4,4,[4],[8,8],[8]]",
    **{f"s12_swa_s{seed}": "[4,4,[4,4],[4,8],[8,8]]" for seed in range(4)},
}


def _validation_labels(data: Path, val_folds: str) -> np.ndarray:
    wanted = {int(f) for f in val_folds.split(",")}
    return np.array([r["label"] for r in read_manifest(data / "manifest.csv") if r["fold"] in wanted])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared data set the runs trained on")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    runs = {name: json.loads((RECIPE_DIR / f"{name}.json").read_text(encoding="utf-8")) for name in MEMBER_RUNS}
    labels = _validation_labels(args.data, "8,9")
    snapshots = {}
    for name in (f"s12_swa_s{seed}" for seed in range(4)):
        epochs = np.asarray(runs[name]["val_probabilities_by_epoch"], dtype=float)
        last = roc_auc_score(labels, epochs[-1])
        snapshots[name] = {
            f"last_{k}_minus_last": float(roc_auc_score(labels, epochs[-k:].mean(0)) - last) for k in (2, 3, 4, 5)
        }
    pairs: dict[str, list[dict]] = {"same_seed": [], "different_seeds": []}
    for a, b in itertools.combinations(MEMBER_RUNS, 2):
        if MEMBER_RUNS[a] == MEMBER_RUNS[b]:
            continue  # the pipeline's members are different networks
        pa, pb = (np.asarray(runs[n]["val_probabilities"], dtype=float) for n in (a, b))
        gain = roc_auc_score(labels, (pa + pb) / 2) - (roc_auc_score(labels, pa) + roc_auc_score(labels, pb)) / 2
        kind = "same_seed" if a[-1] == b[-1] else "different_seeds"
        pairs[kind].append(
            {"runs": [a, b], "spearman": float(spearmanr(pa, pb).statistic), "pair_gain_auc": float(gain)}
        )
    summary = {
        kind: {
            "pairs": len(rows),
            "mean_spearman": float(np.mean([r["spearman"] for r in rows])),
            "mean_pair_gain_auc": float(np.mean([r["pair_gain_auc"] for r in rows])),
        }
        for kind, rows in pairs.items()
    }
    for name, row in snapshots.items():
        print(name, {k: round(v, 4) for k, v in row.items()})
    for kind, row in summary.items():
        print(kind, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    floors = {name: compare(*globs) for name, globs in FLOOR_PAIRS.items()}
    for name, result in floors.items():
        print(name, {k: v for k, v in result.items() if k != "pairs"})
    write_json(args.out, {**floors, "snapshots": snapshots, "member_seeds": summary, "pairs": pairs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
