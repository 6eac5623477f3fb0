"""How far the fixed cube descriptors of ``recipe.py --descriptors 1`` go without a network (session 20, rule D3).

Run: ``python benchmarks/experiments/descriptor_probe.py --data DIR`` on a prepared data set (``naslung prepare
embedded --out DIR --scans 0``). For each validation set of the recipe experiments (folds 8-9, 6-7 and 5) a logistic
regression on :class:`descriptors.CubeDescriptors` of the un-augmented cubes (standardised, C = 1, as
``benchmarks/signal_probe.py`` fits its cube features) is fitted on all the other folds and scored on the validation
folds, beside the diameter rule fitted the same way (the pipeline's ``fit_diameter_threshold``). Written to
``benchmarks/results/recipe/descriptor_probe.json``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from descriptors import CubeDescriptors  # this folder's script, on sys.path
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.ensemble.reference_models import fit_diameter_threshold

OUT = Path(__file__).resolve().parents[1] / "results" / "recipe" / "descriptor_probe.json"
VALIDATION_SETS = ((8, 9), (6, 7), (5,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    args = parser.parse_args()
    rows = list(csv.DictReader(open(args.data / "manifest.csv", encoding="utf-8")))
    cubes = torch.from_numpy(np.stack([np.load(args.data / r["image"]) for r in rows]).astype(np.float32))[:, None]
    describe = CubeDescriptors()
    x = torch.cat([describe(cubes[s : s + 64]) for s in range(0, len(cubes), 64)]).numpy()
    y = np.array([int(r["label"]) for r in rows])
    folds = np.array([int(r["fold"]) for r in rows])
    diameter = np.array([float(r["diameter_mm"]) for r in rows])
    results = {}
    for held in VALIDATION_SETS:
        val = np.isin(folds, held)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(x[~val], y[~val])
        p = model.predict_proba(x[val])[:, 1]
        t, _ = fit_diameter_threshold(diameter[~val], y[~val])
        results[",".join(map(str, held))] = {
            "n_val": int(val.sum()),
            "descriptor_lr_auc": float(roc_auc_score(y[val], p)),
            "descriptor_lr_accuracy": float(np.mean((p >= 0.5) == y[val])),
            "diameter_rule_auc": float(roc_auc_score(y[val], diameter[val])),
            "diameter_rule_accuracy": float(np.mean((diameter[val] > t) == y[val])),
        }
        print(held, results[",".join(map(str, held))])
    write_json(OUT, {"n_descriptors": int(x.shape[1]), "data": str(args.data), "validation_sets": results})


if __name__ == "__main__":
    main()
