"""The paired bootstrap of a model's lead over a reference: its AUC, its intervals and its errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from naslung.pipeline.ensemble.paired_bootstrap import auc_of_rows, paired_bootstrap
from naslung.pipeline.errors import DataError


def _fold(fold: int, labels, model_score, reference_score, threshold: float = 0.5) -> dict:
    labels = np.asarray(labels)
    model_score, reference_score = np.asarray(model_score, float), np.asarray(reference_score, float)
    return {
        "fold": fold,
        "labels": labels,
        "model_score": model_score,
        "model_prediction": (model_score > threshold).astype(int),
        "reference_score": reference_score,
        "reference_prediction": (reference_score > threshold).astype(int),
    }


def test_auc_of_rows_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=(5, 40))
    labels[:, :2] = [1, 0]  # both classes in every row
    scores = rng.integers(0, 6, size=(5, 40)).astype(float)  # many ties
    expected = [roc_auc_score(y, s) for y, s in zip(labels, scores, strict=True)]
    assert auc_of_rows(labels, scores) == pytest.approx(expected)
    with pytest.raises(DataError, match="both classes"):
        auc_of_rows(np.ones((1, 4)), np.arange(4.0)[None])


def test_a_model_equal_to_its_reference_has_no_lead():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    score = rng.random(40)
    result = paired_bootstrap([_fold(0, labels, score, score)], resamples=200)
    for metric in ("accuracy", "auc"):
        assert result[metric] == {"observed": 0.0, "low": 0.0, "high": 0.0, "ahead_fraction": 0.0}


def test_interval_of_a_clear_and_of_a_chance_lead():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 50)
    perfect = labels * 0.5 + 0.25 + rng.random(100) * 0.1
    noise = rng.random(100)
    folds = [_fold(0, labels, perfect, noise), _fold(1, labels, perfect, noise[::-1])]
    clear = paired_bootstrap(folds, resamples=500)
    observed_auc = np.mean([1.0 - roc_auc_score(labels, noise), 1.0 - roc_auc_score(labels, noise[::-1])])
    assert clear["auc"]["observed"] == pytest.approx(observed_auc)
    assert 0.0 < clear["auc"]["low"] <= clear["auc"]["observed"] <= clear["auc"]["high"]
    assert clear["auc"]["ahead_fraction"] == 1.0 and clear["accuracy"]["low"] > 0.0
    other = rng.random(100)
    chance = paired_bootstrap([_fold(0, labels, other, noise)], resamples=500)
    assert chance["auc"]["low"] < 0.0 < chance["auc"]["high"]
    assert 0.0 < chance["auc"]["ahead_fraction"] < 1.0
    assert paired_bootstrap(folds, resamples=500) == clear  # seeded: the same interval every time
    assert paired_bootstrap(folds, resamples=500, seed=1) != clear


def test_bad_folds_are_named():
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(DataError, match="at least one fold"):
        paired_bootstrap([])
    with pytest.raises(DataError, match="fold 3: labels must be 0/1 with both classes"):
        paired_bootstrap([_fold(3, [1, 1, 1, 1], np.ones(4), np.ones(4))])
    bad = _fold(2, labels, np.ones(4), np.ones(4))
    bad["reference_score"] = np.ones(3)
    with pytest.raises(DataError, match="fold 2: the per-nodule arrays differ in shape"):
        paired_bootstrap([bad])
    with pytest.raises(DataError, match="resamples"):
        paired_bootstrap([_fold(0, labels, np.ones(4), np.ones(4))], resamples=0)
