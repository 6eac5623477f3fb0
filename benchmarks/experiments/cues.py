"""Which rendered cues a run's networks use: calcification and ground glass against the diameter, per test fold.

Run: ``python benchmarks/experiments/cues.py --run RUN --name NAME`` on a finished ``naslung run`` folder. Reads
``RUN/ensemble/fold_*/predictions.csv`` (each member's and the ensemble's test probabilities), ``RUN/data/cohort.csv``
(the readers' ratings of the rendered nodules) and ``RUN/data/manifest.csv`` with the cubes. For each test fold it
writes, beside the diameter rule's AUC:

- ``diameter_calcification_auc``: a logistic regression on log-diameter and "some reader saw calcification" (mean
  calcification rating < 5.5; LIDC code 6 is "absent"), fitted on the cohort's other folds;
- per member and for the ensemble: test AUC and ``calcification_weight``, the network's logit regressed (least squares)
  on log-diameter and calcification, the second weight over the first. The readers' own regression over the whole
  cohort gives ``readers_calcification_weight``; a network near 0 ignores the calcium;
- ``lowest_malignant_texture``: the mean texture rating (1 ground glass .. 5 solid) of the 10 malignant nodules the
  ensemble scores lowest, beside all malignant nodules' mean.

And over all cubes: the share of calcified and of other nodules with a voxel above 250 HU in the central 16³
(``cube_calcium``), and the median HU of the central 4³ of ground-glass nodules (mean texture rating <= 2.5) and of the
others beside the median 10th percentile of a cube, about the lung around a nodule (``ground_glass``).
Writes ``benchmarks/results/cues/NAME.json``. Reads only a finished run's outputs; trains nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.data.cohort_table import read_cohort_csv
from naslung.pipeline.ensemble.reference_models import mean_ratings
from naslung.transforms.nodule_cube import HU_WINDOW

CALCIFIED_HU = 250.0


def calcified(row: dict) -> bool:
    """Whether some reader saw calcification (LIDC calcification code 6 is 'absent')."""
    return float(mean_ratings(row, ("calcification",))[0]) < 5.5


def ground_glass(row: dict) -> bool:
    """Whether the readers' mean texture rating is at most 2.5 (1 ground glass .. 5 solid)."""
    return float(mean_ratings(row, ("texture",))[0]) <= 2.5


def calcification_weight(probability: np.ndarray, log_diameter: np.ndarray, calc: np.ndarray) -> float:
    """Weight of calcification over the weight of log-diameter when the logit is regressed on both."""
    p = np.clip(probability, 1e-6, 1 - 1e-6)
    design = np.column_stack([log_diameter, calc.astype(float), np.ones(len(p))])
    coef = np.linalg.lstsq(design, np.log(p / (1 - p)), rcond=None)[0]
    return float(coef[1] / coef[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    run: Path = args.run
    cohort = {r["nodule_id"]: r for r in read_cohort_csv(run / "data" / "cohort.csv")}
    rows = list(cohort.values())
    features = np.array([[np.log(float(r["diameter_mm"])), calcified(r)] for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    folds = np.array([int(r["fold"]) for r in rows])
    readers = LogisticRegression(C=100.0).fit(features, labels)
    result: dict = {
        "run": str(run),
        "readers_calcification_weight": float(readers.coef_[0, 1] / readers.coef_[0, 0]),
        "folds": [],
    }
    fold_dirs = sorted((run / "ensemble").glob("fold_*"))
    if not fold_dirs:
        raise SystemExit(f"{run / 'ensemble'}: no fold_*/predictions.csv; run the ensemble step first")
    for fold_dir in fold_dirs:
        fold = int(fold_dir.name.split("_")[-1])
        preds = list(csv.DictReader(open(fold_dir / "predictions.csv", encoding="utf-8")))
        ids = [p["nodule_id"] for p in preds]
        y = np.array([int(p["label"]) for p in preds])
        log_d = np.log([float(cohort[i]["diameter_mm"]) for i in ids])
        calc = np.array([calcified(cohort[i]) for i in ids])
        train = folds != fold
        fitted = LogisticRegression().fit(features[train], labels[train])
        entry = {
            "fold": fold,
            "n": len(y),
            "n_calcified": int(calc.sum()),
            "n_calcified_malignant": int(y[calc].sum()),
            "n_malignant": int(y.sum()),
            "n_malignant_ground_glass": int(sum(1 for k in np.where(y == 1)[0] if ground_glass(cohort[ids[k]]))),
            "diameter_auc": float(roc_auc_score(y, log_d)),
            "diameter_calcification_auc": float(
                roc_auc_score(y, fitted.predict_proba(np.column_stack([log_d, calc]))[:, 1])
            ),
            "networks": {},
        }
        columns = [c for c in preds[0] if c.startswith("prob_")] + ["mean_probability"]
        for column in columns:
            prob = np.array([float(p[column]) for p in preds])
            name = "ensemble" if column == "mean_probability" else column[len("prob_") :]
            entry["networks"][name] = {
                "auc": float(roc_auc_score(y, prob)),
                "calcification_weight": calcification_weight(prob, log_d, calc),
            }
        ensemble = np.array([float(p["mean_probability"]) for p in preds])
        malignant = np.where(y == 1)[0]
        lowest = malignant[np.argsort(ensemble[malignant])[:10]]
        texture = np.array([mean_ratings(cohort[i], ("texture",))[0] for i in ids])
        entry["lowest_malignant_texture"] = float(texture[lowest].mean())
        entry["malignant_texture"] = float(texture[malignant].mean())
        result["folds"].append(entry)
    low, high = HU_WINDOW
    threshold = (CALCIFIED_HU - low) / (high - low)
    manifest = list(csv.DictReader(open(run / "data" / "manifest.csv", encoding="utf-8")))
    bright = {True: [], False: []}
    core_hu = {True: [], False: []}
    background_hu = []
    for row in manifest:
        cube = np.load(run / "data" / row["image"])
        centre = cube[8:24, 8:24, 8:24]
        bright[calcified(cohort[row["nodule_id"]])].append(bool((centre > threshold).any()))
        core_hu[ground_glass(cohort[row["nodule_id"]])].append(
            low + (high - low) * float(cube[14:18, 14:18, 14:18].mean())
        )
        background_hu.append(low + (high - low) * float(np.percentile(cube, 10)))
    result["cube_calcium"] = {
        "threshold_hu": CALCIFIED_HU,
        "calcified_with_bright_voxel": float(np.mean(bright[True])),
        "n_calcified": len(bright[True]),
        "other_with_bright_voxel": float(np.mean(bright[False])),
        "n_other": len(bright[False]),
    }
    result["ground_glass"] = {
        "median_core_hu": float(np.median(core_hu[True])),
        "n": len(core_hu[True]),
        "other_median_core_hu": float(np.median(core_hu[False])),
        "median_cube_p10_hu": float(np.median(background_hu)),
    }
    out = Path(__file__).resolve().parents[1] / "results" / "cues" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result, indent=1)
    print(json.dumps(result["cube_calcium"]), json.dumps(result["ground_glass"]), "->", out)
    for entry in result["folds"]:
        nets = {k: (round(v["auc"], 3), round(v["calcification_weight"], 2)) for k, v in entry["networks"].items()}
        print(entry["fold"], round(entry["diameter_auc"], 3), round(entry["diameter_calcification_auc"], 3), nets)


if __name__ == "__main__":
    main()
