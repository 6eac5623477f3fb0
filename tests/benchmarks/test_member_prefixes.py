"""``benchmarks/experiments/member_prefixes.py``: the first k members of a run's selection, k = 1 .. all, against the
diameter rule, read from a run folder's own files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from naslung.pipeline.errors import DataError


@pytest.fixture
def member_prefixes(load_benchmark):
    return load_benchmark("experiments/member_prefixes")


def _write_member(run, slug, fold, labels, probabilities, spec=None):
    folder = run / "train" / slug / f"fold_{fold}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"arch": spec or slug}), encoding="utf-8")
    with open(folder / "test_predictions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["nodule_id", "label", "probability"])
        for i, (label, p) in enumerate(zip(labels, probabilities, strict=True)):
            writer.writerow([f"n{i}", label, p])


def test_prefixes_follow_the_selection_order_and_score_the_vote(member_prefixes, tmp_path):
    """Members in selected.json's order (not the folders' alphabetical one): the first alone ranks perfectly, the
    second reverses it, so the pair's mean ties and the full three recover; the 2-member vote ties to benign."""
    labels = [1, 1, 0, 0]
    run = tmp_path / "run"
    (run / "search").mkdir(parents=True)
    (run / "ensemble").mkdir()
    specs = ["[4,4,[8],[8],[8]]", "[4,4,[4],[4],[4]]", "[4,4,[4],[4],[8]]"]
    (run / "search" / "selected.json").write_text(json.dumps({"specs": specs}), encoding="utf-8")
    _write_member(run, "4-4_8_8_8", 8, labels, [0.9, 0.8, 0.2, 0.1], specs[0])
    _write_member(run, "4-4_4_4_4", 8, labels, [0.1, 0.2, 0.8, 0.9], specs[1])
    _write_member(run, "4-4_4_4_8", 8, labels, [0.7, 0.6, 0.4, 0.3], specs[2])
    rule = {"fold": 8, "diameter_rule_auc": 0.75, "diameter_rule_accuracy": 0.5}
    (run / "ensemble" / "metrics.json").write_text(json.dumps({"per_fold": [rule]}), encoding="utf-8")

    result = member_prefixes.run_prefixes(run)
    assert result["members"] == specs
    (fold,) = result["folds"]
    assert (fold["fold"], fold["n"]) == (8, 4)
    assert [p["auc"] for p in fold["prefixes"]] == [1.0, 0.5, 1.0]
    assert [p["vote_accuracy"] for p in fold["prefixes"]] == [1.0, 0.5, 1.0]
    assert fold["all_minus_all_but_last_auc"] == 0.5
    assert fold["diameter_rule"] == {"auc": 0.75, "accuracy": 0.5}

    summary = member_prefixes.summarise({"run": result})
    assert (summary["folds"], summary["all_below_all_but_last"]) == (1, 0)
    assert summary["auc_minus_diameter_rule"] == [0.25]
    assert summary["vote_accuracy_minus_diameter_rule"] == [0.5]


def test_a_run_without_ensemble_metrics_names_the_file(member_prefixes, tmp_path):
    run = tmp_path / "run"
    _write_member(run, "4-4_8_8_8", 8, [1, 0], [0.9, 0.1])
    with pytest.raises(DataError, match=r"ensemble.metrics\.json"):
        member_prefixes.run_prefixes(run)


def test_prefix_scores_of_one_member(member_prefixes):
    scores = member_prefixes.prefix_scores(np.array([1, 0]), np.array([[0.4, 0.6]]))
    assert scores == [{"k": 1, "auc": 0.0, "mean_accuracy": 0.0, "vote_accuracy": 0.0}]
