"""Tests of naslung.pipeline.ensemble: the majority-vote rule, the ensemble-size study and the per-nodule table."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from naslung.pipeline.ensemble.voting import ensemble_metrics, ensemble_size_study, majority_vote, write_ensemble_table
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.metrics import binary_metrics

# [probabilities (n_models, n_nodules), expected prediction, expected votes]
VOTE_CASES = [
    # n = 1: the member's own decision; exactly 0.5 is benign
    [[[0.2, 0.5, 0.51]], [0, 0, 1], [0, 0, 1]],
    # n = 2: one vote each is a tie -> benign; both -> malignant
    [[[0.9, 0.9, 0.1], [0.1, 0.8, 0.2]], [0, 1, 0], [1, 2, 0]],
    # n = 3: two of three
    [[[0.9, 0.9, 0.1], [0.1, 0.8, 0.2], [0.6, 0.1, 0.7]], [1, 1, 0], [2, 2, 1]],
    # n = 4: 2 votes tie -> benign, 3 -> malignant
    [[[0.9, 0.9, 0.9], [0.9, 0.9, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.1]], [0, 1, 0], [2, 3, 1]],
]


@pytest.mark.parametrize("probabilities, prediction, votes", VOTE_CASES)
def test_majority_vote(probabilities, prediction, votes):
    result = majority_vote(probabilities)
    n_models = len(probabilities)
    np.testing.assert_array_equal(result["prediction"], prediction)
    np.testing.assert_array_equal(result["votes"], votes)
    np.testing.assert_allclose(result["vote_fraction"], np.array(votes) / n_models)
    np.testing.assert_allclose(result["mean_probability"], np.mean(probabilities, axis=0))
    np.testing.assert_array_equal(result["disagreement"], [0 < v < n_models for v in votes])


def test_majority_vote_rule_on_random_members():
    rng = np.random.default_rng(3)
    for n_models in range(1, 8):
        probabilities = rng.uniform(size=(n_models, 50))
        votes = (probabilities > 0.5).sum(axis=0)
        expected = (votes > n_models // 2).astype(int)
        np.testing.assert_array_equal(majority_vote(probabilities)["prediction"], expected)


@pytest.mark.parametrize("probabilities", [[], [[0.2, 1.2]], [[0.2, np.nan]], np.zeros((2, 2, 2))])
def test_majority_vote_rejects_bad_input(probabilities):
    with pytest.raises(DataError):
        majority_vote(probabilities)


def _members(seed=0, n_models=9, n_nodules=80):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n_nodules)
    labels[:2] = [0, 1]
    probabilities = np.clip(0.25 * labels + 0.375 + rng.normal(0, 0.2, (n_models, n_nodules)), 0, 1)
    return probabilities, labels


def test_ensemble_metrics_single_member_equals_binary_metrics():
    probabilities, labels = _members(n_models=1)
    result = ensemble_metrics(probabilities, labels)
    reference = binary_metrics(labels, probabilities[0])
    for key, value in result.items():
        assert value == pytest.approx(reference[key])


def test_ensemble_metrics_per_fold_mean():
    probabilities, labels = _members(n_models=3)
    folds = np.arange(labels.size) % 2
    result = ensemble_metrics(probabilities, labels, folds=folds)
    vote = majority_vote(probabilities)
    per_fold = [
        binary_metrics(labels[folds == k], vote["mean_probability"][folds == k], y_pred=vote["prediction"][folds == k])
        for k in (0, 1)
    ]
    assert result["f1"] == pytest.approx(np.mean([m["f1"] for m in per_fold]))


def test_ensemble_size_study_statistics():
    probabilities, labels = _members()
    rows = ensemble_size_study(probabilities, labels, sizes=(1, 3, 9), draws=10, seed=0)
    assert [row["size"] for row in rows] == [1, 3, 9] and all(row["draws"] == 10 for row in rows)
    full = rows[-1]  # every draw is the whole ensemble
    assert all(full[f"{m}_std"] == 0.0 for m in ("accuracy", "sensitivity", "specificity", "f1", "auc"))
    assert full["f1_mean"] == pytest.approx(ensemble_metrics(probabilities, labels)["f1"])
    # size 1: the draws are single members, so the mean lies within the members' range
    member_f1 = [binary_metrics(labels, p)["f1"] for p in probabilities]
    assert min(member_f1) <= rows[0]["f1_mean"] <= max(member_f1)
    assert rows[0]["f1_std"] > 0
    # noisy independent members: a bigger ensemble is better
    assert rows[-1]["accuracy_mean"] > rows[0]["accuracy_mean"]
    # same seed, same rows; another seed, other draws
    assert ensemble_size_study(probabilities, labels, sizes=(1, 3, 9), seed=0) == rows
    assert ensemble_size_study(probabilities, labels, sizes=(3,), seed=1)[0] != rows[1]


def test_ensemble_size_study_identical_members_has_zero_std():
    probabilities, labels = _members(n_models=1)
    rows = ensemble_size_study(np.repeat(probabilities, 5, axis=0), labels, sizes=(1, 2, 3, 5), draws=4)
    reference = binary_metrics(labels, probabilities[0])
    for row in rows:
        assert row["f1_std"] == 0.0 and row["accuracy_std"] == 0.0
        if row["size"] % 2:  # even sizes differ: a tie is benign, but identical members never tie
            assert row["accuracy_mean"] == pytest.approx(reference["accuracy"])


@pytest.mark.parametrize("kwargs", [{"sizes": (0,)}, {"sizes": (11,)}, {"draws": 0}])
def test_ensemble_size_study_config_errors(kwargs):
    probabilities, labels = _members()
    with pytest.raises(ConfigError):
        ensemble_size_study(probabilities, labels, **kwargs)


def test_write_ensemble_table(tmp_path):
    probabilities = [[0.9, 0.2, 0.6], [0.7, 0.4, 0.3]]
    path = write_ensemble_table(tmp_path / "ens" / "table.csv", ["a", "b", "c"], [1, 0, 1], probabilities, ["m1", "m2"])
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "nodule_id",
        "label",
        "prob_m1",
        "prob_m2",
        "votes",
        "vote_fraction",
        "mean_probability",
        "prediction",
        "correct",
        "disagreement",
    ]
    assert [r["prediction"] for r in rows] == ["1", "0", "0"]  # nodule c: a 1-1 tie is benign
    assert [r["votes"] for r in rows] == ["2", "0", "1"]
    assert [r["disagreement"] for r in rows] == ["0", "0", "1"]
    assert [r["correct"] for r in rows] == ["1", "1", "0"]
    assert float(rows[2]["mean_probability"]) == pytest.approx(0.45)
    assert not list(path.parent.glob(".*tmp*"))  # no temporary file left behind
    with pytest.raises(DataError):
        write_ensemble_table(tmp_path / "bad.csv", ["a"], [1, 0, 1], probabilities)
    with pytest.raises(DataError):
        write_ensemble_table(tmp_path / "bad.csv", ["a", "b", "c"], [1, 0, 1], probabilities, ["m", "m"])
