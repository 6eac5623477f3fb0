"""Discriminability of penultimate-layer features: the paper's S0, S1, M01 and DBI (Table 4) and t-SNE (Fig. 6)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.atomic_io import atomic_open, write_csv
from naslung.pipeline.ensemble.published import TABLE4
from naslung.pipeline.errors import DataError
from naslung.pipeline.metrics import summarise_folds

__all__ = [
    "l2_normalise",
    "class_separation",
    "tsne_embedding",
    "DISCRIMINABILITY_FIELDS",
    "discriminability_rows",
    "write_discriminability",
]

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


def _sig(mean: Any, std: Any) -> str:
    """``mean ± std`` with 4 significant digits (feature distances span orders of magnitude)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{float(mean):.4g}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {float(std):.2g}"
    return text


# ----------------------------------------------------------------------------------------- discriminability
DISCRIMINABILITY_FIELDS: tuple[str, ...] = (
    "source",
    "loss",
    "variant",
    "features",
    "n",
    *(f"{k}_{s}" for k in ("S0", "S1", "M01", "DBI") for s in ("mean", "std")),
)


def discriminability_rows(
    features: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    variants: Mapping[str, str],
    normalisations: Sequence[str] = ("raw", "l2"),
) -> list[dict[str, Any]]:
    """Table 4 rows: S0, S1, M01 and DBI (eq. 12-14) per loss and feature normalisation, mean ± std over networks.

    Args:
        features: loss name -> one ``(features (N, C), labels (N,))`` pair per network (spec and held-out fold),
            the features of that fold's test cubes.
        variants: loss name -> variant key (for the ``variant`` column).
        normalisations: ``"raw"`` features and/or ``"l2"`` (each vector scaled to unit length first).
    """
    rows = []
    for loss, pairs in features.items():
        for norm in normalisations:
            values = [class_separation(f, y, l2_normalize=norm == "l2") for f, y in pairs]
            summary = summarise_folds(values, keys=("S0", "S1", "M01", "DBI"))
            row = {"source": "ours", "loss": loss, "variant": variants.get(loss, ""), "features": norm}
            row.update({k: v for k, v in summary.items() if k != "n_folds"}, n=len(values))
            rows.append(row)
    return rows


def write_discriminability(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``discriminability.csv`` and ``.md``: our rows, then the paper's Table 4 (marked published)."""
    out = Path(out_dir)
    keys = ("S0", "S1", "M01", "DBI")
    published = [
        {"source": "published", "loss": r["loss"], "features": "unknown", "n": "", **{f"{k}_mean": r[k] for k in keys}}
        for r in TABLE4
    ]
    write_csv(out / "discriminability.csv", [*rows, *published], DISCRIMINABILITY_FIELDS)
    n_networks = rows[0]["n"] if rows else 0
    lines = [
        "Penultimate-layer features of the held-out test cubes (each fold's own network): mean intra-class "
        "distance S0 (benign) and S1 (malignant), distance of the class centres M01, and Davies-Bouldin index "
        f"DBI = (S0 + S1) / M01 (lower = more separable); mean ± std over {n_networks} network(s) "
        "(specs × held-out folds). `l2`: each feature vector scaled to unit length first (the paper does not say "
        "which it used; DBI is unchanged by one global scale, S and M are not).",
        "",
        "| Loss | Features | Source | S0 | S1 | M01 | DBI |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [_sig(row[f"{k}_mean"], row[f"{k}_std"]) for k in ("S0", "S1", "M01", "DBI")]
        lines.append(f"| {row['loss']} | {row['features']} | ours | " + " | ".join(cells) + " |")
    for row in published:
        cells = [f"{row[f'{k}_mean']:.3f}" for k in ("S0", "S1", "M01", "DBI")]
        lines.append(f"| {row['loss']} | – | published (Table 4) | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("The paper's A-Softmax row prints DBI 1.453 where (S0 + S1) / M01 of its own numbers is 1.379.")
    with atomic_open(out / "discriminability.md", "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return out / "discriminability.md", out / "discriminability.csv"
