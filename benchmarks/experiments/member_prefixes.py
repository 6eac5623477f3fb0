"""What each selected member adds to a run's ensemble: the first k of ``RUN/search/selected.json``, k = 1 .. all.

Run: ``python benchmarks/experiments/member_prefixes.py NAME=RUN [NAME=RUN ...] [--out FILE]``, each ``RUN`` a
``naslung run`` folder whose ensemble step has run. Meant for runs whose held-out folds are validation folds
(``--config`` with ``{"train": {"folds": [8, 9]}}``): the quick profile's own search and selection, scored where
choosing a profile from them looks at no test fold.

For each run and held-out fold: the AUC of the mean probability of the first k members in the search's selection
order (the Pareto fronts in turn, by score within each: so the first k are what ``select_top_n: k`` would keep of
the same candidates), for every k, the majority vote's accuracy (the pipeline's :func:`majority_vote` at 0.5: a tie
is benign), and the diameter rule's AUC and accuracy from the run's ``ensemble/metrics.json``; then, over all folds,
how many the full ensemble is below the first ``n - 1`` in, and the mean of that difference.

Written to ``--out`` (default ``benchmarks/results/recipe/member_prefixes.json``; runs already there and not named
again are kept) and printed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.ensemble.step import find_members, fold_probabilities
from naslung.pipeline.ensemble.voting import majority_vote
from naslung.pipeline.errors import DataError

RESULTS_FILE = Path(__file__).resolve().parents[1] / "results" / "recipe" / "member_prefixes.json"


def _rule_by_fold(run: Path) -> dict[int, dict[str, float]]:
    """The diameter rule's AUC and accuracy per held-out fold, from ``RUN/ensemble/metrics.json``."""
    path = run / "ensemble" / "metrics.json"
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["per_fold"]
        return {
            int(r["fold"]): {"auc": float(r["diameter_rule_auc"]), "accuracy": float(r["diameter_rule_accuracy"])}
            for r in rows
        }
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise DataError(
            f"cannot read the diameter rule per fold ({err}); run the ensemble step", path=str(path)
        ) from err


def prefix_scores(labels: np.ndarray, probabilities: np.ndarray) -> list[dict[str, float]]:
    """For k = 1 .. n: the AUC and the accuracy at 0.5 of the mean of the first k rows of ``probabilities``
    ``(n_members, n_nodules)``, and the accuracy of their majority vote."""
    out = []
    for k in range(1, len(probabilities) + 1):
        first = probabilities[:k]
        mean = first.mean(axis=0)
        votes = majority_vote(first, threshold=0.5)["prediction"]
        out.append(
            {
                "k": k,
                "auc": float(roc_auc_score(labels, mean)),
                "mean_accuracy": float(((mean > 0.5) == labels).mean()),
                "vote_accuracy": float((votes == labels).mean()),
            }
        )
    return out


def run_prefixes(run: Path) -> dict[str, Any]:
    """Every held-out fold of ``run``: the members in selection order, their prefixes' scores and the rule's."""
    members = find_members(run)
    rule = _rule_by_fold(run)
    folds = []
    for fold in members[0].folds:
        _, labels, probabilities = fold_probabilities(members, fold)
        prefixes = prefix_scores(labels, probabilities)
        folds.append(
            {
                "fold": fold,
                "n": int(len(labels)),
                "prefixes": prefixes,
                "diameter_rule": rule.get(fold),
                "all_minus_all_but_last_auc": prefixes[-1]["auc"] - prefixes[-2]["auc"] if len(prefixes) > 1 else None,
            }
        )
    return {"members": [m.spec for m in members], "folds": folds}


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Over every fold of ``runs``: how often all members score below all but the last, and the mean difference;
    the full ensemble's AUC and vote accuracy minus the diameter rule's."""
    diffs = [f["all_minus_all_but_last_auc"] for r in runs.values() for f in r["folds"]]
    diffs = [d for d in diffs if d is not None]
    finals = [(f["prefixes"][-1], f["diameter_rule"]) for r in runs.values() for f in r["folds"] if f["diameter_rule"]]
    leads = [(last["auc"] - rule["auc"], last["vote_accuracy"] - rule["accuracy"]) for last, rule in finals]
    return {
        "folds": len(diffs),
        "all_below_all_but_last": int(sum(d < 0 for d in diffs)),
        "mean_all_minus_all_but_last_auc": float(np.mean(diffs)) if diffs else None,
        "auc_minus_diameter_rule": [round(a, 4) for a, _ in leads],
        "vote_accuracy_minus_diameter_rule": [round(b, 4) for _, b in leads],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=RUN folder")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    named = {}
    for item in args.runs:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            parser.error(f"expected NAME=RUN, got {item!r}")
        named[name] = Path(folder)
    previous = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    runs = {k: v for k, v in previous.get("runs", {}).items() if k not in named}
    for name, folder in named.items():
        runs[name] = run_prefixes(folder)
        for fold in runs[name]["folds"]:
            aucs = ", ".join(f"{p['k']}: {p['auc']:.4f}" for p in fold["prefixes"])
            rule = fold["diameter_rule"] or {}
            print(f"{name} fold {fold['fold']}: AUC of the first k members {aucs}; diameter rule {rule.get('auc')}")
    result = {"runs": runs, "summary": summarise(runs)}
    write_json(args.out, result)
    print(json.dumps(result["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
