"""Tests of naslung.pipeline.discriminability: S0, S1, M01, DBI (paper eq. 12-14) and the t-SNE embedding."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import davies_bouldin_score

from naslung.pipeline.analysis.discriminability import class_separation, l2_normalise, tsne_embedding
from naslung.pipeline.errors import DataError


def test_class_separation_hand_made():
    # benign at distance 1 from (0, 0); malignant at distance 2 from (6, 8)
    features = [[1, 0], [-1, 0], [0, 1], [0, -1], [8, 8], [4, 8]]
    labels = [0, 0, 0, 0, 1, 1]
    result = class_separation(features, labels)
    assert result["S0"] == pytest.approx(1.0)
    assert result["S1"] == pytest.approx(2.0)
    assert result["M01"] == pytest.approx(10.0)
    assert result["DBI"] == pytest.approx(0.3)
    assert (result["T0"], result["T1"]) == (4, 2)


# [seed, n_benign, n_malignant, n_features, separation]
SKLEARN_CASES = [[0, 20, 15, 8, 1.0], [1, 50, 50, 64, 0.3], [2, 7, 30, 3, 4.0]]


@pytest.mark.parametrize("seed, n0, n1, dim, shift", SKLEARN_CASES)
def test_dbi_equals_sklearn_for_two_classes(seed, n0, n1, dim, shift):
    rng = np.random.default_rng(seed)
    features = np.concatenate([rng.normal(size=(n0, dim)), rng.normal(size=(n1, dim)) * 1.5 + shift])
    labels = np.r_[np.zeros(n0, int), np.ones(n1, int)]
    order = rng.permutation(n0 + n1)
    result = class_separation(features[order], labels[order])
    assert result["DBI"] == pytest.approx(davies_bouldin_score(features[order], labels[order]))
    assert result["DBI"] == pytest.approx((result["S0"] + result["S1"]) / result["M01"])
    # DBI ignores a common scale, S and M scale with it
    scaled = class_separation(features[order] * 3.0, labels[order])
    assert scaled["DBI"] == pytest.approx(result["DBI"])
    assert scaled["M01"] == pytest.approx(3.0 * result["M01"])


def test_l2_normalised_variant():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(30, 5)) + 2.0
    labels = np.arange(30) % 2
    result = class_separation(features, labels, l2_normalize=True)
    unit = l2_normalise(features)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0)
    assert result["DBI"] == pytest.approx(davies_bouldin_score(unit, labels))
    assert result["M01"] <= 2.0


@pytest.mark.parametrize(
    "features, labels",
    [
        [[[0.0, 1.0], [1.0, 0.0]], [0, 0]],  # one class only
        [[[0.0, 1.0], [1.0, 0.0]], [0, 1, 1]],  # lengths differ
        [[0.0, 1.0], [0, 1]],  # not (N, C)
        [[[0.0, np.nan], [1.0, 0.0]], [0, 1]],
        [[[0.0, 1.0], [1.0, 0.0]], [0, 2]],
    ],
)
def test_class_separation_rejects_bad_input(features, labels):
    with pytest.raises(DataError):
        class_separation(features, labels)


def test_coinciding_centres_give_infinite_dbi():
    result = class_separation([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], [0, 0, 1, 1])
    assert result["M01"] == 0.0 and result["DBI"] == float("inf")


@pytest.mark.parametrize("n", [2, 5, 40])
def test_tsne_embedding_shape_and_determinism(n):
    rng = np.random.default_rng(n)
    features = rng.normal(size=(n, 6))
    embedding = tsne_embedding(features, seed=1, max_iter=250)
    assert embedding.shape == (n, 2) and np.isfinite(embedding).all()
    np.testing.assert_allclose(tsne_embedding(features, seed=1, max_iter=250), embedding)


def test_tsne_embedding_separates_separated_classes():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(size=(20, 10)), rng.normal(size=(20, 10)) + 8.0])
    labels = np.r_[np.zeros(20, int), np.ones(20, int)]
    embedding = tsne_embedding(features, seed=0, max_iter=300)
    assert class_separation(embedding, labels)["DBI"] < 0.5


def test_tsne_embedding_rejects_too_few():
    with pytest.raises(DataError):
        tsne_embedding(np.zeros((1, 4)))
