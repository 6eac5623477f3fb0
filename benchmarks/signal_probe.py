"""Probe of the malignancy signal in the rendered 32³ cubes, beside the diameter rule and the readers' ratings ceiling.

Run ``python benchmarks/signal_probe.py [--data DIR]``. It prepares the embedded cubes of the whole packaged cohort
into ``DIR`` (``naslung prepare embedded --scans 0``; a folder that already holds a complete data set is reused as it
is, whatever renderer made it), computes cheap hand-made features of every cube (the blob at the centre: its volume,
HU statistics, solid / ground-glass / calcified fractions, edge sharpness, surface-to-volume ratio, sphericity,
radial irregularity, thin protrusions; the median HU of spherical shells around the centre and its half-maximum
radius, a size robust to attached vessels) and, over the cohort's 10 folds (fitted on the training folds only), reports:

- (a) logistic regression and gradient boosting on the cube features (and on the cube's size features alone);
- (b) the diameter rule "malignant if diameter > t" (t fitted on the training folds);
- (c) the ratings ceiling: logistic regression on the readers' 8 non-malignancy ratings (mean over readers) plus the
  diameter, on the ratings the probed renderer version draws plus the diameter, and on the diameter plus the share
  of readers who saw calcification;
- (d) per rating: Spearman's rho between the rating (reader mean) and a cross-validated regression of it on the cube
  features, beside the same regression on the cube's size features alone; the difference is the part of the rating
  that the cube shows beyond the nodule's size.

Results go to ``benchmarks/results/signal_probe.json`` under a key naming the renderer version that made the cubes
(``render_v<N>``), so probes of several renderer versions stay side by side in one file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, stats

from naslung.pipeline.ensemble.reference_models import CEILING_RATINGS

__all__ = [
    "RATINGS",
    "RENDERED_RATINGS",
    "cube_features",
    "ensure_cubes",
    "classify_cv",
    "diameter_rule_cv",
    "rating_recovery_cv",
    "probe",
    "main",
]

#: The eight LIDC characteristics other than malignancy, in pylidc's order: the ratings ceiling's inputs.
RATINGS = CEILING_RATINGS
#: The ratings that drive each version of the synthetic renderer
#: (``naslung.pipeline.data.synthetic_ct.RENDER_VERSION``; sphericity is drawn by the readers' contours in every
#: version).
RENDERED_RATINGS: dict[int, tuple[str, ...]] = {
    1: ("calcification", "margin", "lobulation", "spiculation", "texture"),
    2: ("calcification", "margin", "lobulation", "spiculation", "texture", "subtlety", "internalStructure"),
}

HU_LOW, HU_HIGH = -1200.0, 600.0  # the cubes' window (transforms.nodule_cube.HU_WINDOW): 0 -> low, 1 -> high
BLOB_HU = -650.0  # nodule blob threshold: above lung parenchyma (~-850) and below ground glass (~-620)
SOLID_HU = -300.0
BACKGROUND_HU = -850.0  # lung parenchyma
CALCIFIED_HU = 250.0
SIZE_FEATURES = ("volume_mm3", "equiv_diameter_mm", "extent_mm", "profile_radius_mm")


def _hu(cube_unit: np.ndarray) -> np.ndarray:
    return HU_LOW + (HU_HIGH - HU_LOW) * np.asarray(cube_unit, dtype=np.float64)


def _centre_blob(hu: np.ndarray, threshold: float) -> np.ndarray:
    """The connected component of ``hu > threshold`` at (or nearest to) the cube centre; empty when there is none."""
    above = hu > threshold
    labels, n = ndimage.label(above)
    if n == 0:
        return np.zeros_like(above)
    centre = np.array(hu.shape) // 2
    # the component that holds most voxels of the central 5³ box, else the one nearest to the centre
    box = labels[tuple(slice(c - 2, c + 3) for c in centre)]
    ids, counts = np.unique(box[box > 0], return_counts=True)
    if len(ids):
        keep = ids[np.argmax(counts)]
    else:
        idx = np.argwhere(above)
        d = np.sum((idx - centre) ** 2, axis=1)
        keep = labels[tuple(idx[np.argmin(d)])]
        if np.min(d) > 6**2:
            return np.zeros_like(above)
    return labels == keep


def _radial_profile(hu: np.ndarray, r_centre: np.ndarray) -> dict[str, float]:
    """Median HU of 1 mm spherical shells around the centre (robust to thin vessels) and its half-maximum radius."""
    shells = np.floor(r_centre).astype(int)
    n = hu.shape[0] // 2
    profile = np.array([np.median(hu[shells == k]) for k in range(n)])
    background = float(np.median(hu[(r_centre >= n - 3) & (r_centre < n)]))
    half = background + 0.5 * (float(profile[:2].max()) - background)
    below = np.flatnonzero(profile < half)
    if not len(below):
        radius = float(n)
    elif below[0] == 0:
        radius = 0.0
    else:
        k = int(below[0])
        radius = k - 1 + float(profile[k - 1] - half) / max(float(profile[k - 1] - profile[k]), 1e-6)
    feats = {"profile_radius_mm": radius}
    feats.update({f"shell{k}_median_hu": float(profile[k]) for k in range(0, n, 2)})
    return feats


def _margin_shape(smooth: np.ndarray, r_centre: np.ndarray, radius: float, centre_hu: float) -> dict[str, float]:
    """Spicules and lobes: dense voxels in a halo outside the nodule, and the in-plane boundary radius per azimuth.

    ``halo_fraction``: share of the voxels 1.5-7 mm outside the half-maximum radius that are denser than -700 HU
    (strands out in the lung; vessels add the same on average at every rating). ``azimuth_radius_cv`` /
    ``azimuth_radius_range``: over 48 in-plane rays of the three central slices, where the smoothed HU first falls
    below halfway between the centre and the lung; their spread (IQR / median, and 90th - 10th percentile in mm)
    measures a scalloped or irregular margin.
    """
    halo = (r_centre >= radius + 1.5) & (r_centre <= radius + 7.0)
    feats = {"halo_fraction": float(np.mean(smooth[halo] > -700.0)) if halo.any() else float("nan")}
    c = smooth.shape[0] // 2
    level = 0.5 * (centre_hu + BACKGROUND_HU)
    angles = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
    steps = np.arange(0.0, c - 1.0, 0.25)
    radii = []
    for z in (c - 1, c, c + 1):
        xs = c + np.cos(angles)[:, None] * steps[None, :]
        ys = c + np.sin(angles)[:, None] * steps[None, :]
        values = ndimage.map_coordinates(smooth[:, :, z], [xs.ravel(), ys.ravel()], order=1).reshape(xs.shape)
        below = values < level
        first = np.where(below.any(axis=1), np.argmax(below, axis=1), len(steps) - 1)
        radii.append(steps[first])
    r = np.concatenate(radii)
    q10, q25, q50, q75, q90 = np.percentile(r, [10, 25, 50, 75, 90])
    feats["azimuth_radius_cv"] = float((q75 - q25) / max(q50, 0.5))
    feats["azimuth_radius_range"] = float(q90 - q10)
    return feats


def cube_features(cube_unit: np.ndarray) -> dict[str, float]:
    """Hand-made features of one cube.

    Args:
        cube_unit: (32, 32, 32) float cube in [0, 1] (HU window -1200..600 HU), 1 mm voxels.

    Returns:
        feature name -> value; sizes in mm / mm³, intensities in HU, gradients in HU/mm.
    """
    hu = _hu(cube_unit)
    smooth = ndimage.gaussian_filter(hu, 0.7)
    blob = _centre_blob(smooth, BLOB_HU)
    centre = np.array(hu.shape) // 2
    grid = np.indices(hu.shape).reshape(3, -1).T
    r_centre = np.sqrt(np.sum((grid - centre) ** 2, axis=1)).reshape(hu.shape)
    feats: dict[str, float] = {}
    for radius in (2, 4, 8):
        feats[f"ball{radius}_mean_hu"] = float(hu[r_centre <= radius].mean())
    feats["ball4_std_hu"] = float(hu[r_centre <= 4].std())
    feats.update(_radial_profile(hu, r_centre))
    feats.update(_margin_shape(smooth, r_centre, feats["profile_radius_mm"], feats["shell0_median_hu"]))
    volume = float(blob.sum())
    feats["volume_mm3"] = volume
    feats["equiv_diameter_mm"] = float((6.0 * volume / np.pi) ** (1.0 / 3.0))
    if volume < 4:
        nan = float("nan")
        names = (
            "extent_mm mean_hu std_hu p10_hu p50_hu p90_hu max_hu solid_fraction ggo_fraction calcified_mm3 "
            "calcified_fraction edge_gradient edge_width_mm shell_hu surface_to_volume sphericity radial_cv "
            "radial_max_ratio protrusion_fraction n_protrusions opened_fraction"
        ).split()
        feats.update(dict.fromkeys(names, nan))
        return feats
    values = hu[blob]
    idx = np.argwhere(blob)
    feats["extent_mm"] = float(np.max(idx.max(axis=0) - idx.min(axis=0) + 1))
    feats["mean_hu"] = float(values.mean())
    feats["std_hu"] = float(values.std())
    for q in (10, 50, 90):
        feats[f"p{q}_hu"] = float(np.percentile(values, q))
    feats["max_hu"] = float(values.max())
    feats["solid_fraction"] = float(np.mean(values > SOLID_HU))
    feats["ggo_fraction"] = float(np.mean((values > -750.0) & (values <= SOLID_HU)))
    calcified = hu > CALCIFIED_HU
    feats["calcified_mm3"] = float(np.sum(calcified & ndimage.binary_dilation(blob, iterations=1)))
    feats["calcified_fraction"] = feats["calcified_mm3"] / volume
    # edge: gradient magnitude on the blob's boundary, and the contrast over it (edge width = contrast / gradient)
    gradient = np.sqrt(sum(g**2 for g in np.gradient(smooth)))
    boundary = blob & ~ndimage.binary_erosion(blob)
    shell = ndimage.binary_dilation(blob, iterations=3) & ~ndimage.binary_dilation(blob, iterations=1)
    feats["edge_gradient"] = float(gradient[boundary].mean())
    feats["shell_hu"] = float(hu[shell].mean()) if shell.any() else float("nan")
    inner = blob & ~boundary
    contrast = (float(hu[inner].mean()) if inner.any() else feats["mean_hu"]) - feats["shell_hu"]
    feats["edge_width_mm"] = float(contrast / max(feats["edge_gradient"], 1e-3))
    # shape: surface area of the blob (marching cubes), sphericity, radial irregularity of the boundary
    try:
        from skimage.measure import marching_cubes, mesh_surface_area

        verts, faces, _, _ = marching_cubes(np.pad(blob, 1).astype(np.float32), 0.5)
        area = float(mesh_surface_area(verts, faces))
    except (ImportError, RuntimeError, ValueError):
        area = float(boundary.sum())
    feats["surface_to_volume"] = area / volume
    feats["sphericity"] = float(np.pi ** (1.0 / 3.0) * (6.0 * volume) ** (2.0 / 3.0) / max(area, 1e-6))
    centroid = idx.mean(axis=0)
    radii = np.sqrt(np.sum((np.argwhere(boundary) - centroid) ** 2, axis=1))
    feats["radial_cv"] = float(radii.std() / max(radii.mean(), 1e-6))
    feats["radial_max_ratio"] = float(radii.max() / max(np.median(radii), 1e-6))
    # thin protrusions (spicules): what an opening with a small ball removes from the blob
    ball = ndimage.generate_binary_structure(3, 1)
    opened = ndimage.binary_opening(blob, structure=ball, iterations=1)
    opened = _centre_blob(np.where(opened, 1.0, 0.0), 0.5) if opened.any() else opened
    thin = blob & ~opened
    feats["protrusion_fraction"] = float(thin.sum() / volume)
    feats["n_protrusions"] = float(ndimage.label(thin & ~ndimage.binary_dilation(opened, iterations=1))[1])
    feats["opened_fraction"] = float(opened.sum() / volume)
    return feats


def ensure_cubes(data_dir: Path, workers: int) -> dict[str, Any]:
    """Reuse the complete embedded data set in ``data_dir`` as it is, or prepare it there with the current renderer.

    Returns:
        the ``params`` of its ``embedded.json`` (seed, cube size, ``render_version``).
    """
    summary = data_dir / "embedded.json"
    record = json.loads(summary.read_text(encoding="utf-8")) if summary.exists() else {}
    if not (record.get("complete") and (data_dir / "manifest.csv").exists()):
        from naslung.pipeline.data.embedded import render_embedded

        start = time.perf_counter()
        render_embedded(data_dir, n_scans=0, workers=workers)
        print(f"prepared {data_dir} in {time.perf_counter() - start:.0f} s", flush=True)
        record = json.loads(summary.read_text(encoding="utf-8"))
    return dict(record.get("params", {}))


def _reader_mean(value: Any) -> float:
    values = [float(v) for v in str(value).replace(",", ";").split(";") if v.strip()]
    return float(np.mean(values)) if values else float("nan")


def _cohort_digest(rows: Sequence[Mapping[str, Any]]) -> str:
    """sha256 (first 16 hex digits) of the cohort's ids, labels, folds and annotation ids: which cohort was probed."""
    import hashlib

    keys = ("nodule_id", "label", "fold", "annotation_ids")
    text = "\n".join(";".join(str(r.get(k, "")) for k in keys) for r in sorted(rows, key=lambda r: str(r["nodule_id"])))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _share_calcified(value: Any) -> float:
    """Fraction of the readers who saw calcification (LIDC code 1..5; 6 = absent)."""
    codes = [int(float(v)) for v in str(value).replace(",", ";").split(";") if v.strip()]
    return float(np.mean([c != 6 for c in codes])) if codes else 0.0


def _folds_of(folds: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    return [(int(k), np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in np.unique(folds)]


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")


def _summary(per_fold: Sequence[Mapping[str, float]], y: np.ndarray, pooled: np.ndarray) -> dict[str, Any]:
    acc = np.array([f["accuracy"] for f in per_fold])
    auc = np.array([f["auc"] for f in per_fold])
    return {
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": float(acc.std()),
        "auc_mean": float(np.nanmean(auc)),
        "auc_std": float(np.nanstd(auc)),
        "auc_pooled": _auc(y, pooled),
        "per_fold": list(per_fold),
    }


def _model(kind: str, regression: bool = False) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "gb":
        cls = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
        return cls(max_iter=200, learning_rate=0.05, max_depth=3, min_samples_leaf=20, random_state=0)
    head = RidgeCV(alphas=np.logspace(-2, 3, 12)) if regression else LogisticRegression(C=1.0, max_iter=5000)
    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), head)


def classify_cv(x: np.ndarray, y: np.ndarray, folds: np.ndarray, kind: str) -> dict[str, Any]:
    """Accuracy (threshold 0.5) and AUC of a classifier (``"lr"`` or ``"gb"``) fitted on the training folds only."""
    pooled = np.zeros(len(y))
    per_fold = []
    for k, train, test in _folds_of(folds):
        model = _model(kind).fit(x[train], y[train])
        p = model.predict_proba(x[test])[:, 1]
        pooled[test] = p
        per_fold.append({"fold": k, "accuracy": float(np.mean((p >= 0.5) == y[test])), "auc": _auc(y[test], p)})
    return _summary(per_fold, y, pooled)


def diameter_rule_cv(diameter: np.ndarray, y: np.ndarray, folds: np.ndarray) -> dict[str, Any]:
    """ "Malignant if diameter > t", t maximising accuracy on the training folds; AUC of the diameter itself."""
    per_fold = []
    for k, train, test in _folds_of(folds):
        d, lab = diameter[train], y[train]
        candidates = np.unique(d)
        accs = [np.mean((d > t) == lab) for t in candidates]
        t = float(candidates[int(np.argmax(accs))])
        per_fold.append(
            {
                "fold": k,
                "threshold_mm": t,
                "accuracy": float(np.mean((diameter[test] > t) == y[test])),
                "auc": _auc(y[test], diameter[test]),
            }
        )
    return _summary(per_fold, y, diameter)


def rating_recovery_cv(x: np.ndarray, rating: np.ndarray, folds: np.ndarray, kind: str = "gb") -> float:
    """Spearman's rho between a rating and its cross-validated regression on ``x`` (fitted on training folds)."""
    pred = np.zeros(len(rating))
    for _, train, test in _folds_of(folds):
        pred[test] = _model(kind, regression=True).fit(x[train], rating[train]).predict(x[test])
    return float(stats.spearmanr(pred, rating).statistic)


def probe(data_dir: Path, rows: Sequence[Mapping[str, Any]], render_version: int) -> dict[str, Any]:
    """All measurements on the cubes in ``data_dir`` (made by ``render_version``) for the cohort ``rows``."""
    rendered_names = RENDERED_RATINGS.get(render_version, RENDERED_RATINGS[max(RENDERED_RATINGS)])
    start = time.perf_counter()
    feats = [cube_features(np.load(data_dir / "cubes" / f"{r['nodule_id']}.npy")) for r in rows]
    names = list(feats[0])
    x = np.array([[f[n] for n in names] for f in feats], dtype=np.float64)
    size_cols = [names.index(n) for n in SIZE_FEATURES]
    y = np.array([int(r["label"]) for r in rows])
    folds = np.array([int(r["fold"]) for r in rows])
    diameter = np.array([float(r["diameter_mm"]) for r in rows])
    ratings = {name: np.array([_reader_mean(r[name]) for r in rows]) for name in RATINGS}
    feature_seconds = time.perf_counter() - start

    results: dict[str, Any] = {"n_nodules": len(rows), "n_malignant": int(y.sum()), "features": names}
    results["cohort_digest"] = _cohort_digest(rows)
    results["feature_seconds"] = round(feature_seconds, 1)
    models: dict[str, Any] = {}
    models["cube_features_lr"] = classify_cv(x, y, folds, "lr")
    models["cube_features_gb"] = classify_cv(x, y, folds, "gb")
    models["cube_size_only_lr"] = classify_cv(x[:, size_cols], y, folds, "lr")
    models["diameter_rule"] = diameter_rule_cv(diameter, y, folds)
    ceiling = np.column_stack([*(ratings[n] for n in RATINGS), diameter])
    models["ratings_ceiling_lr"] = classify_cv(ceiling, y, folds, "lr")
    rendered = np.column_stack([*(ratings[n] for n in rendered_names), diameter])
    models["rendered_ratings_ceiling_lr"] = classify_cv(rendered, y, folds, "lr")
    models["rendered_ratings_ceiling_lr"]["ratings"] = list(rendered_names)
    calcified = np.array([_share_calcified(r["calcification"]) for r in rows])
    models["diameter_calcification_lr"] = classify_cv(np.column_stack([diameter, calcified]), y, folds, "lr")
    results["models"] = models

    per_rating = {}
    for name in RATINGS:
        r = ratings[name]
        per_rating[name] = {
            "rho_cube_features": rating_recovery_cv(x, r, folds),
            "rho_cube_size_only": rating_recovery_cv(x[:, size_cols], r, folds),
            "rho_diameter_mm": float(stats.spearmanr(diameter, r).statistic),
            "rendered": name in rendered_names,
        }
        per_rating[name]["rho_beyond_size"] = (
            per_rating[name]["rho_cube_features"] - per_rating[name]["rho_cube_size_only"]
        )
    results["per_rating"] = per_rating
    # which single feature tracks each rendered rating best (Spearman over the cohort), to see where a cue lives
    best = {}
    for name in rendered_names:
        rhos = {n: stats.spearmanr(x[:, i], ratings[name], nan_policy="omit").statistic for i, n in enumerate(names)}
        top = sorted(rhos.items(), key=lambda kv: -abs(kv[1]))[:3]
        best[name] = [{"feature": n, "rho": float(v)} for n, v in top]
    results["best_single_feature"] = best
    return results


def _print_table(results: Mapping[str, Any], title: str) -> None:
    print(f"\n== {title}: {results['n_nodules']} nodules, {results['n_malignant']} malignant, 10 folds ==")
    print(f"{'model':32s} {'accuracy':>16s} {'AUC (fold mean)':>17s} {'AUC pooled':>11s}")
    for name, m in results["models"].items():
        acc = f"{100 * m['accuracy_mean']:.1f}% ± {100 * m['accuracy_std']:.1f}"
        auc = f"{m['auc_mean']:.3f} ± {m['auc_std']:.3f}"
        print(f"{name:32s} {acc:>16s} {auc:>17s} {m['auc_pooled']:>11.3f}")
    print(f"\n{'rating (reader mean)':22s} {'rho cube':>9s} {'rho size':>9s} {'beyond':>7s} {'rho diam':>9s}  rendered")
    for name, m in results["per_rating"].items():
        print(
            f"{name:22s} {m['rho_cube_features']:9.3f} {m['rho_cube_size_only']:9.3f} {m['rho_beyond_size']:7.3f}"
            f" {m['rho_diameter_mm']:9.3f}  {'yes' if m['rendered'] else '-'}"
        )
    for name, top in results["best_single_feature"].items():
        print(f"  {name}: " + ", ".join(f"{t['feature']} {t['rho']:+.2f}" for t in top))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="embedded data folder to reuse or prepare (default: a temp folder)")
    parser.add_argument("--workers", type=int, default=2, help="render workers when preparing (default 2)")
    parser.add_argument("--label", help="key of this probe in the JSON (default: render_v<N> of the cubes)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "signal_probe.json")
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from naslung.pipeline.atomic_io import write_json
    from naslung.pipeline.data.cohort_table import load_default_cohort

    rows = load_default_cohort()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data or Path(tmp) / "embedded"
        params = ensure_cubes(data_dir, args.workers)
        # one thread for the boosting: on a shared 2-core machine OpenMP's spinning threads slow it many times over
        with threadpool_limits(limits=1):
            results = probe(data_dir, rows, int(params.get("render_version", 1)))
    label = args.label or f"render_v{params.get('render_version', '?')}"
    results["data_params"] = params
    results["data_dir"] = str(args.data) if args.data else None
    _print_table(results, label)

    stored: dict[str, Any] = {}
    if args.out.exists():
        stored = json.loads(args.out.read_text(encoding="utf-8"))
    stored.setdefault("probes", {})[label] = results
    stored["description"] = (__doc__ or "").split("\n\n")[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, stored)
    print(f"\nwrote {args.out} [{label}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
