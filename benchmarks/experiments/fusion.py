"""How should an ensemble fuse its members' probabilities for its AUC? Paired, on validation predictions only.

Run: ``python benchmarks/experiments/fusion.py RUN [RUN ...] [--out FILE]``.

For every fold of each run folder whose networks (``RUN/train/<network>/fold_<k>/val_predictions.csv``) share one
validation split (carved from the training folds; the held-out test fold is never read), the members' validation
probabilities are fused five ways and scored by ROC AUC: the mean probability (what ``naslung ensemble`` reports), the
mean log-odds, the median probability, the mean within-split rank, and the mean of log-odds standardised per member.
Printed and written to ``--out`` (default ``benchmarks/results/recipe/fusion.json``): per fold, each way's AUC and the
members' own, and each way's paired difference to the mean probability. The members' validation AUC is that of the
checkpoint chosen on the same split, so "best member" is optimistic.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from naslung.pipeline.atomic_io import write_json

RESULTS_FILE = Path(__file__).resolve().parents[1] / "results" / "recipe" / "fusion.json"
WAYS = ("mean_prob", "mean_logit", "median", "mean_rank", "standardised_logit")


def fused_scores(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """Each way's ensemble score of ``probabilities`` ``(members, nodules)``."""
    p = np.clip(probabilities, 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))
    ranks = np.argsort(np.argsort(p, axis=1), axis=1)
    standardised = (logit - logit.mean(1, keepdims=True)) / logit.std(1, keepdims=True)
    return {
        "mean_prob": p.mean(0),
        "mean_logit": logit.mean(0),
        "median": np.median(p, 0),
        "mean_rank": ranks.mean(0),
        "standardised_logit": standardised.mean(0),
    }


def _read(path: Path) -> dict[str, tuple[int, float]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {r["nodule_id"]: (int(r["label"]), float(r["probability"])) for r in csv.DictReader(handle)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        networks = sorted(p for p in (run / "train").iterdir() if p.is_dir())
        folds = sorted({f.name for n in networks for f in n.glob("fold_*")})
        for fold in folds:
            files = [n / fold / "val_predictions.csv" for n in networks]
            if len(files) < 2 or not all(f.is_file() for f in files):
                continue
            members = [_read(f) for f in files]
            ids = sorted(members[0])
            if any(sorted(m) != ids for m in members):
                print(f"{run} {fold}: the members' validation splits differ; skipped")
                continue
            labels = np.array([members[0][i][0] for i in ids])
            probabilities = np.array([[m[i][1] for i in ids] for m in members])
            row = {"run": str(run), "fold": fold, "n_val": len(ids)}
            row["members"] = [float(roc_auc_score(labels, p)) for p in probabilities]
            row.update({w: float(roc_auc_score(labels, s)) for w, s in fused_scores(probabilities).items()})
            rows.append(row)
            print(f"{run.name} {fold}: " + " ".join(f"{w} {row[w]:.3f}" for w in WAYS))
    summary = {}
    for way in WAYS[1:]:
        diffs = np.array([r[way] - r["mean_prob"] for r in rows])
        summary[f"{way}_minus_mean_prob"] = {
            "mean": float(diffs.mean()),
            "gains": int((diffs > 0).sum()),
            "losses": int((diffs < 0).sum()),
            "folds": len(diffs),
        }
    for name, reference in (("best", max), ("average", np.mean)):
        diffs = np.array([r["mean_prob"] - reference(r["members"]) for r in rows])
        summary[f"mean_prob_minus_{name}_member"] = {"mean": float(diffs.mean()), "gains": int((diffs > 0).sum())}
    for key, value in summary.items():
        print(key, value)
    write_json(args.out, {"summary": summary, "folds": rows})


if __name__ == "__main__":
    main()
