"""How far averaging networks of one recipe goes on validation folds, beside what the cube's hand-made features reach.

Run: ``python benchmarks/experiments/seed_ensembles.py --data DIR GROUP=GLOB [GROUP=GLOB ...] [--out FILE]``, each
``GLOB`` naming ``benchmarks/results/recipe/`` files of :mod:`recipe` runs that differ only in their seed and share
their validation folds (e.g. ``s10_lam025=s10_lam025_s*.json``), or in their network (same seed; several globs joined
by ``+``); ``DIR`` is the prepared data set they trained on.

For each group, on its validation folds (never a test fold of the quick or standard profile when the runs used folds
5-9): the mean AUC and accuracy of one network, and of the mean probability of every ``k`` of them (all subsets,
``k`` = 2, 3, 4, 5 and all; also the least and greatest AUC, the majority vote's accuracy and the share of subsets
above the diameter rule's AUC); beside them, fitted on the same training folds, the diameter rule and a logistic
regression on the cube features of :mod:`signal_probe` (the cube's own information as hand-made features see it; no
annotation goes in). Also, per run, whether training collapsed onto one class: at some epoch from the third on, at most
10% of the validation nodules called malignant while about 45% are.

Written to ``--out`` (default ``benchmarks/results/recipe/seed_ensembles.json``) and printed.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for signal_probe
from signal_probe import cube_features  # noqa: E402

from naslung.pipeline.atomic_io import write_json  # noqa: E402
from naslung.pipeline.data.datalists import read_manifest  # noqa: E402
from naslung.pipeline.ensemble.reference_models import fit_diameter_threshold  # noqa: E402
from naslung.pipeline.ensemble.voting import majority_vote  # noqa: E402

RECIPE_DIR = Path(__file__).resolve().parents[1] / "results" / "recipe"
RESULTS_FILE = RECIPE_DIR / "seed_ensembles.json"
#: A run "collapsed" when, from epoch 3 on, some epoch called at most this share of validation nodules malignant.
COLLAPSE_POSITIVE_RATE = 0.10


def _subset_means(probabilities: list[np.ndarray], labels: np.ndarray, k: int, rule_auc: float) -> dict[str, float]:
    """Over every k-subset: mean, least and greatest AUC of its mean probability, mean accuracy of that mean at 0.5
    and of the members' majority vote (the pipeline's :func:`majority_vote` at 0.5: a tie is benign), the share
    of subsets whose AUC is above ``rule_auc``, the diameter rule's on the same nodules, and the mean AUC of the
    members' mean log-odds (``logit_auc``; probabilities clipped to [1e-6, 1 - 1e-6])."""
    aucs, accs, votes, logit_aucs = [], [], [], []
    for subset in itertools.combinations(range(len(probabilities)), k):
        members = np.stack([probabilities[i] for i in subset])
        mean = members.mean(axis=0)
        aucs.append(roc_auc_score(labels, mean))
        clipped = np.clip(members, 1e-6, 1 - 1e-6)
        logit_aucs.append(roc_auc_score(labels, np.log(clipped / (1 - clipped)).mean(axis=0)))
        accs.append(float(((mean > 0.5) == labels).mean()))
        votes.append(float((majority_vote(members, 0.5)["prediction"] == labels).mean()))
    return {
        "auc": float(np.mean(aucs)),
        "auc_min": float(np.min(aucs)),
        "auc_max": float(np.max(aucs)),
        "accuracy": float(np.mean(accs)),
        "vote_accuracy": float(np.mean(votes)),
        "subsets": len(aucs),
        "share_above_diameter_rule": float(np.mean(np.asarray(aucs) > rule_auc)),
        "logit_auc": float(np.mean(logit_aucs)),
    }


def reference_models(features: np.ndarray, diameter: np.ndarray, labels: np.ndarray, train: np.ndarray) -> dict:
    """The diameter rule (the pipeline's threshold of best training accuracy) and the cube-feature logistic
    regression, fitted on ``train`` (a boolean mask) and scored on the rest."""
    test = ~train
    t, _ = fit_diameter_threshold(diameter[train], labels[train])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(features[train], labels[train])
    p = model.predict_proba(features[test])[:, 1]
    return {
        "diameter_rule": {
            "auc": float(roc_auc_score(labels[test], diameter[test])),
            "accuracy": float(((diameter[test] > t) == labels[test]).mean()),
            "threshold_mm": t,
        },
        "cube_features_lr": {
            "auc": float(roc_auc_score(labels[test], p)),
            "accuracy": float(((p > 0.5) == labels[test]).mean()),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared data set the runs trained on")
    parser.add_argument("groups", nargs="+", help="GROUP=GLOB of recipe result files (seeds of one recipe)")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    rows = read_manifest(args.data / "manifest.csv")
    labels = np.array([r["label"] for r in rows])
    folds = np.array([r["fold"] for r in rows])
    diameter = np.array([float(r["diameter_mm"]) for r in rows])
    features = np.nan_to_num(np.array([list(cube_features(np.load(r["image"])).values()) for r in rows], dtype=float))
    results: dict[str, dict] = {}
    for group in args.groups:
        name, _, pattern = group.partition("=")
        files = sorted({f for part in pattern.split("+") for f in glob.glob(str(RECIPE_DIR / part))})
        if not files:
            raise SystemExit(f"{group}: no file matches {RECIPE_DIR / pattern}")
        runs = [json.loads(Path(f).read_text(encoding="utf-8")) for f in files]
        val_folds = {r["args"]["val_folds"] for r in runs}
        if len(val_folds) != 1:
            raise SystemExit(f"{group}: the runs validate on different folds {sorted(val_folds)}")
        validation = np.isin(folds, [int(f) for f in val_folds.pop().split(",")])
        y = labels[validation]
        probabilities = [np.asarray(r["val_probabilities"], dtype=float) for r in runs]
        if any(len(p) != len(y) for p in probabilities):
            raise SystemExit(f"{group}: a run's validation probabilities do not match {args.data}'s folds")
        references = reference_models(features, diameter, labels, ~validation)
        entry = {
            "files": [Path(f).name for f in files],
            "val_folds": runs[0]["args"]["val_folds"],
            "n_validation": int(validation.sum()),
            "collapsed": [
                Path(f).stem
                for f, r in zip(files, runs, strict=True)
                if min(h["val_pos_rate"] for h in r["history"][2:]) <= COLLAPSE_POSITIVE_RATE
            ],
            **references,
        }
        entry["ensembles"] = {
            str(k): _subset_means(probabilities, y, k, references["diameter_rule"]["auc"])
            for k in sorted({1, 2, 3, 4, 5, len(runs)})
            if k <= len(runs)
        }
        results[name] = entry
        line = ", ".join(f"{k}: {v['auc']:.3f}" for k, v in entry["ensembles"].items())
        print(
            f"{name} (folds {entry['val_folds']}, {len(runs)} runs, collapsed {len(entry['collapsed'])}): "
            f"AUC of k averaged {line}; cube-feature LR {entry['cube_features_lr']['auc']:.3f}, "
            f"diameter rule {entry['diameter_rule']['auc']:.3f}"
        )
    previous = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    write_json(args.out, {**previous, **results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
