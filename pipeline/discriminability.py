"""Discriminability of penultimate-layer features: the paper's S0, S1, M01 and DBI (Table 4) and t-SNE (Fig. 6)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from naslung.pipeline.errors import DataError

__all__ = ["l2_normalise", "class_separation", "tsne_embedding"]

logger = logging.getLogger(__name__)


def _features_and_labels(features: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    matrix = np.asarray(features, dtype=np.float64)
    truth = np.asarray(labels)
    if matrix.ndim != 2:
        raise DataError(f"features must be an (N, C) array, got shape {matrix.shape}; flatten each nodule's features")
    if truth.shape != (matrix.shape[0],):
        raise DataError(f"{truth.size} labels for {matrix.shape[0]} feature vectors")
    if not np.isfinite(matrix).all():
        raise DataError("features contain NaN or infinity")
    if truth.size and not np.isin(truth, (0, 1)).all():
        raise DataError(f"labels must be 0 (benign) or 1 (malignant), got values {sorted(set(truth.tolist()))}")
    return matrix, truth.astype(np.int64)


def l2_normalise(features: Any, eps: float = 1e-12) -> np.ndarray:
    """Scale each ``(C,)`` feature vector of ``(N, C)`` features to unit Euclidean length."""
    matrix = np.asarray(features, dtype=np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), eps)


def class_separation(features: Any, labels: Any, l2_normalize: bool = False) -> dict[str, float | int]:
    """Intra-class scatter, inter-class distance and Davies-Bouldin index of two classes (paper eq. 12-14).

    With ``X_ij`` the feature vector of the j-th nodule of class i (0 benign, 1 malignant) and ``c_i`` the
    class mean:

    * ``S_i = (1 / T_i) * sum_j ||X_ij - c_i||_2`` (eq. 12; mean Euclidean distance to the centre, not
      squared, not RMS);
    * ``M01 = ||c_0 - c_1||_2`` (eq. 13);
    * ``DBI = (S_0 + S_1) / M01`` (eq. 14, misprinted "M01 =" in the paper).

    For two clusters this DBI is exactly :func:`sklearn.metrics.davies_bouldin_score` with the labels as
    clusters (the max over the other cluster has one term, and both clusters give the same ratio). The paper
    does not say whether features are normalised; ``l2_normalize=True`` first puts each vector on the unit
    sphere (the geometry A-Softmax optimises). DBI is invariant to scaling all features by one factor, S and
    M are not; the paper's S and M (about 0.5) hint at small-norm or normalised features.

    Args:
        features: ``(N, C)`` penultimate features (e.g. ``CBAMResNet3D.features(x)``).
        labels: ``(N,)`` labels, 1 = malignant.
        l2_normalize: normalise each feature vector to unit length first.

    Returns:
        ``{"S0", "S1", "M01", "DBI", "T0", "T1"}`` (``T_i`` = nodules in class i).

    Raises:
        DataError: when a class has no nodule, shapes disagree or features are not finite.
    """
    matrix, truth = _features_and_labels(features, labels)
    if l2_normalize:
        matrix = l2_normalise(matrix)
    counts = [int((truth == k).sum()) for k in (0, 1)]
    if min(counts) == 0:
        raise DataError(
            f"class separation needs both classes, got {counts[0]} benign and {counts[1]} malignant nodules"
        )
    centres = [matrix[truth == k].mean(axis=0) for k in (0, 1)]
    scatter = [float(np.linalg.norm(matrix[truth == k] - centres[k], axis=1).mean()) for k in (0, 1)]
    distance = float(np.linalg.norm(centres[0] - centres[1]))
    if distance == 0.0:
        logger.warning("the two class centres coincide (M01 = 0); DBI is infinite")
        dbi = float("inf")
    else:
        dbi = (scatter[0] + scatter[1]) / distance
    return {"S0": scatter[0], "S1": scatter[1], "M01": distance, "DBI": dbi, "T0": counts[0], "T1": counts[1]}


def tsne_embedding(
    features: Any, seed: int = 0, perplexity: float = 30.0, l2_normalize: bool = False, max_iter: int = 1000
) -> np.ndarray:
    """Two-dimensional t-SNE embedding of feature vectors (paper Fig. 6, scikit-learn as the paper).

    The perplexity is clipped to ``(N - 1) / 3`` (at least 1) so small sets of nodules embed too; the
    embedding is initialised by PCA and seeded, so it is deterministic for given inputs.

    Args:
        features: ``(N, C)`` feature vectors, ``N >= 2``.
        seed: ``random_state`` of :class:`sklearn.manifold.TSNE`.
        perplexity: requested perplexity.
        l2_normalize: normalise each vector to unit length first.
        max_iter: optimisation iterations (scikit-learn's minimum is 250).

    Returns:
        ``(N, 2)`` embedding.

    Raises:
        DataError: for fewer than two vectors or non-finite features.
    """
    from sklearn.manifold import TSNE

    matrix = np.asarray(features, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 2:
        raise DataError(f"t-SNE needs an (N, C) feature array with N >= 2, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise DataError("features contain NaN or infinity")
    if l2_normalize:
        matrix = l2_normalise(matrix)
    n = matrix.shape[0]
    used = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    if used < perplexity:
        logger.info("t-SNE perplexity clipped from %g to %g for %d vectors", perplexity, used, n)
    tsne = TSNE(
        n_components=2,
        perplexity=used,
        init="pca" if min(matrix.shape) >= 2 else "random",
        learning_rate="auto",
        random_state=seed,
        max_iter=max(250, int(max_iter)),
    )
    return tsne.fit_transform(matrix)
