"""The synthetic chest around the nodules: body, lungs and vertebra, correlated lung texture, branching vessels.

An elliptical body (fat rim, vertebra), two superellipse lungs placed where LIDC-IDRI's nodule centroids lie
(~-850 HU with correlated noise, denser posteriorly) and per-scan branching vessel trees (+40 HU, thinner
distally), shared by the cube and whole-scan renders of a scan. World mm, (x, y, z) order.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from naslung.pipeline.data.synthetic_spec import LIDC_MATRIX, ScanGeometry, stable_seed

__all__ = [
    "Anatomy",
    "LUNG_POWER",
    "LatticeNoise",
    "anatomy_of",
    "ellipse_distance_mm",
    "smooth_min",
    "soft_occupancy",
    "tube_occupancy",
    "tube_windows",
    "unit_vectors",
    "vessel_tree_segments",
]


@dataclasses.dataclass(frozen=True)
class Anatomy:
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


def anatomy_of(geometry: ScanGeometry) -> Anatomy:
    fov = geometry.spacing_mm[0] * LIDC_MATRIX
    # world x = y = 0 is the centre of the 512 x 512 field. The lung boxes follow where the LIDC-IDRI readers'
    # nodule centroids lie (columns ~[0.07, 0.47] and [0.53, 0.93] of the width, rows ~[0.22, 0.85]).
    lungs = tuple((side * 0.245 * fov, 0.04 * fov, 0.20 * fov, 0.32 * fov) for side in (-1.0, 1.0))
    z_lo = geometry.origin_mm[2]
    z_hi = z_lo + (geometry.shape[2] - 1) * geometry.spacing_mm[2]
    return Anatomy((0.0, 0.045 * fov, 0.485 * fov, 0.39 * fov), lungs, (0.0, 0.33 * fov, 0.045 * fov), z_lo, z_hi)


def ellipse_distance_mm(
    x: np.ndarray, y: np.ndarray, ellipse: Sequence[float], scale: Any = 1.0, power: float = 2.0
) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to an axis-aligned (super)ellipse scaled by ``scale``."""
    cx, cy, a, b = ellipse
    a_s, b_s = a * scale, b * scale
    e = (np.abs((x - cx) / a_s) ** power + np.abs((y - cy) / b_s) ** power) ** (1.0 / power)
    return (e - 1.0) * np.minimum(a_s, b_s)


LUNG_POWER = 2.4  # superellipse exponent of the lung cross-sections (squarer than an ellipse)


def smooth_min(a: np.ndarray, b: np.ndarray, k_mm: float) -> np.ndarray:
    """Smooth union of two signed distances (log-sum-exp minimum with blend width ``k_mm``)."""
    m = np.minimum(a, b)
    return m - k_mm * np.log1p(np.exp(-np.abs(a - b) / k_mm))


def soft_occupancy(signed_distance_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Soft inside-fraction of a signed distance (negative inside), ramping over ``width_mm``."""
    return np.clip(0.5 - signed_distance_mm / width_mm, 0.0, 1.0).astype(np.float32)


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


class LatticeNoise:
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


_VESSEL_STEP_MM = 3.0
_VESSEL_GENERATIONS = 8
_VESSEL_ROOTS_PER_LUNG = 10


_Columns = tuple[np.ndarray, np.ndarray, np.ndarray]


def _unit_columns(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> _Columns:
    """:func:`unit_vectors` of the vectors with components ``x``, ``y``, ``z`` (same operations, same bits)."""
    norm = np.maximum(np.sqrt(x * x + y * y + z * z), 1e-9)
    return x / norm, y / norm, z / norm


def _rotate(vectors: _Columns, axes: _Columns, angles: np.ndarray) -> _Columns:
    """Rodrigues rotation of unit ``vectors`` about unit ``axes`` by ``angles`` (N,) radians, as columns (N,) x 3."""
    (vx, vy, vz), (ax, ay, az) = vectors, axes
    cos, sin = np.cos(angles), np.sin(angles)
    cross = (ay * vz - az * vy, az * vx - ax * vz, ax * vy - ay * vx)
    dot = ax * vx + ay * vy + az * vz
    x, y, z = (v * cos + c * sin + a * dot * (1.0 - cos) for v, c, a in zip(vectors, cross, axes, strict=True))
    return x, y, z


def unit_vectors(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.sqrt(np.sum(v * v, axis=-1, keepdims=True)), 1e-9)


@functools.lru_cache(maxsize=16)
def vessel_tree_segments(series_uid: str, seed: int, geometry: ScanGeometry) -> np.ndarray:
    """Branching vessel trees of a scan as segments (N, 8): p0 (3), p1 (3), radius at p0, radius at p1 (mm).

    Each lung gets trees rooted along its medial side (the hila); branches follow randomly curved paths,
    bifurcate at the end of each generation and get thinner distally (radius x 0.78 per generation, ~3.7 mm
    to ~0.5 mm at a 333 mm field of view); paths are steered back when they leave the lung. All branches of
    both lungs grow together, one vectorised step at a time, on (x, y, z) columns rather than (N, 3) rows (a third
    of the calls, the same operations on each number).
    """
    rng = np.random.default_rng(stable_seed(seed, series_uid, "vessels"))
    anatomy = anatomy_of(geometry)
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
    direction = unit_vectors(
        np.stack([side * rng.uniform(0.3, 1.0, m), rng.uniform(-1.0, 1.0, m), rng.uniform(-1.3, 1.3, m)], 1)
    )
    radius, length = 0.011 * fov, 0.08 * fov
    plan, planned = [], length  # steps of each generation, to fill one array
    for _ in range(_VESSEL_GENERATIONS):
        plan.append(max(1, int(round(planned / _VESSEL_STEP_MM))))
        planned *= 0.8
    segments = np.empty((sum(m * 2**g * steps for g, steps in enumerate(plan)), 8))
    px, py, pz = (np.ascontiguousarray(pos[:, d]) for d in range(3))
    dx, dy, dz = (np.ascontiguousarray(direction[:, d]) for d in range(3))
    row = 0
    for steps in plan:
        cx, cy, a, b = (np.ascontiguousarray(lungs[:, k]) for k in range(4))
        for step in range(steps):
            turn = rng.normal(0.0, 0.18, (len(px), 3))
            dx, dy, dz = _unit_columns(dx + turn[:, 0], dy + turn[:, 1], dz + turn[:, 2])
            scale = anatomy.lung_scale(pz)
            e = np.abs((px - cx) / (a * scale)) ** LUNG_POWER + np.abs((py - cy) / (b * scale)) ** LUNG_POWER
            steer = np.clip((e ** (1.0 / LUNG_POWER) - 0.8) * 4.0, 0.0, 3.0)
            ix, iy, iz = _unit_columns(cx - px, cy - py, np.zeros(len(px)))  # inward
            back_z = 0.2 * (np.clip(pz, anatomy.z_lo, anatomy.z_hi) - pz)
            # + back_z * 0.0 repeats the (N, 3) form's "+ back_z x (0, 0, 1)" on x and y, where it can turn -0.0
            # into +0.0; on z, back_z * 1.0 is back_z itself
            dx, dy, dz = _unit_columns(
                dx + steer * ix + back_z * 0.0, dy + steer * iy + back_z * 0.0, dz + steer * iz + back_z
            )
            stride = length / steps
            new = (px + dx * stride, py + dy * stride, pz + dz * stride)
            block = segments[row : row + len(px)]
            for k, column in enumerate((px, py, pz, *new)):
                block[:, k] = column
            block[:, 6] = radius * 0.78 ** (step / steps)
            block[:, 7] = radius * 0.78 ** ((step + 1) / steps)
            row += len(px)
            px, py, pz = new
        # bifurcate: two children rotated apart about a random axis perpendicular to the parent
        other = rng.normal(size=(len(px), 3))
        ox, oy, oz = other[:, 0], other[:, 1], other[:, 2]
        axes = _unit_columns(dy * oz - dz * oy, dz * ox - dx * oz, dx * oy - dy * ox)
        angle = rng.uniform(np.radians(20), np.radians(40), len(px))
        first = _rotate((dx, dy, dz), axes, angle)
        second = _rotate((dx, dy, dz), axes, -angle * rng.uniform(0.6, 1.0, len(px)))
        px, py, pz = (np.concatenate([v, v]) for v in (px, py, pz))
        lungs = np.concatenate([lungs, lungs])
        dx, dy, dz = (np.concatenate([f, s]) for f, s in zip(first, second, strict=True))
        radius *= 0.78
        length *= 0.8
    return segments


def tube_windows(
    segments: np.ndarray, origin_mm: np.ndarray, spacing_mm: np.ndarray, shape: Sequence[int], width_mm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The voxel window :func:`tube_occupancy` evaluates for each segment that can reach the grid.

    Returns:
        ``(keep, lo, hi)``: the indices of those segments (M,), and their windows' first and one-past-last voxel
        indices (M, 3), not clipped to the grid.
    """
    origin_mm, spacing_mm = np.asarray(origin_mm, dtype=float), np.asarray(spacing_mm, dtype=float)
    hi_mm = origin_mm + (np.asarray(shape) - 1) * spacing_mm
    if len(segments) == 0:
        return np.zeros(0, dtype=np.intp), np.zeros((0, 3), dtype=np.intp), np.zeros((0, 3), dtype=np.intp)
    # a first cut along x with the largest reach keeps a superset of the segments, from two columns only
    most = float(np.max(segments[:, 6:8])) + width_mm + 1.0
    x0, x1 = segments[:, 0], segments[:, 3]
    near = np.flatnonzero((np.maximum(x0, x1) >= origin_mm[0] - most) & (np.minimum(x0, x1) <= hi_mm[0] + most))
    near_segments = segments[near]
    reach = np.maximum(near_segments[:, 6], near_segments[:, 7]) + width_mm
    seg_lo = np.minimum(near_segments[:, 0:3], near_segments[:, 3:6]) - reach[:, None]
    seg_hi = np.maximum(near_segments[:, 0:3], near_segments[:, 3:6]) + reach[:, None]
    inside = np.flatnonzero(np.all((seg_hi >= origin_mm) & (seg_lo <= hi_mm), axis=1))
    lo = np.floor((seg_lo[inside] - origin_mm) / spacing_mm).astype(np.intp)
    hi = np.ceil((seg_hi[inside] - origin_mm) / spacing_mm).astype(np.intp) + 1
    return near[inside], lo, hi


def tube_occupancy(
    segments: np.ndarray,
    origin_mm: np.ndarray,
    spacing_mm: np.ndarray,
    shape: Sequence[int],
    width_mm: float,
    chunk_voxels: int = 1 << 18,
    *,
    window: tuple[Sequence[int], Sequence[int]] | None = None,
) -> np.ndarray:
    """Max partial-volume occupancy (0..1) of tapered tubes ``segments`` (N, 8) on a voxel grid -> (shape) float32.

    Each segment is evaluated on its window of voxels (:func:`tube_windows`, clipped to the grid or ``window``):
    segments whose windows have the same depth together, as rows along z without padding (``chunk_voxels`` voxels
    at a time); the values are then max-scattered into the grid.

    Args:
        segments: (N, 8) p0 (3), p1 (3), radius at p0, radius at p1, world mm.
        origin_mm: (3,) world position of voxel (0, 0, 0).
        spacing_mm: (3,) voxel spacing.
        shape: (3,) the grid.
        width_mm: width of the partial-volume ramp at the tube surface.
        chunk_voxels: voxel evaluations held in memory at a time.
        window: ``(lo, hi)`` voxel indices: only the sub-grid ``[lo, hi)`` (clipped to the grid) is computed and
            returned, with the same values as that part of the whole grid; None: the whole grid.

    Returns:
        float32 (shape), or (hi - lo) with ``window``.
    """
    grid = np.asarray([int(n) for n in shape], dtype=np.intp)
    w_lo = np.zeros(3, dtype=np.intp) if window is None else np.asarray(window[0], dtype=np.intp)
    w_hi = grid if window is None else np.asarray(window[1], dtype=np.intp)
    w_lo, w_hi = np.clip(w_lo, 0, grid), np.clip(w_hi, 0, grid)
    out = np.zeros(tuple(int(n) for n in np.maximum(w_hi - w_lo, 0)), dtype=np.float32)
    if len(segments) == 0 or out.size == 0:
        return out
    origin_mm, spacing_mm = np.asarray(origin_mm, dtype=float), np.asarray(spacing_mm, dtype=float)
    keep, lo, hi = tube_windows(segments, origin_mm, spacing_mm, grid, width_mm)
    lo, hi = np.maximum(lo, w_lo), np.minimum(hi, w_hi)
    dims = np.maximum(hi - lo, 0)
    counts = np.prod(dims, axis=1)
    used = counts > 0
    segs, lo, dims, counts = segments[keep[used]], lo[used], dims[used], counts[used]
    if len(segs) == 0:
        return out
    d_vec = segs[:, 3:6] - segs[:, 0:3]
    inv_len2 = 1.0 / np.maximum(np.sum(d_vec * d_vec, axis=1), 1e-9)
    per_segment = (*segs[:, 0:3].T, *d_vec.T, inv_len2, segs[:, 6], segs[:, 7] - segs[:, 6])
    flat_out = out.reshape(-1)
    # segments with windows of the same depth together: rows (segment, x, y) of `depth` voxels along z, no padding
    for depth in np.unique(dims[:, 2]):
        group = np.flatnonzero(dims[:, 2] == depth)
        n_rows = dims[group, 0] * dims[group, 1]
        ends = np.cumsum(n_rows)
        first = 0
        while first < len(group):
            # consecutive segments while their windows stay under chunk_voxels (at least one)
            last = int(np.searchsorted(ends, ends[first] - n_rows[first] + chunk_voxels // depth, side="right"))
            last = max(last, first + 1)
            rows = n_rows[first:last]
            which = group[first:last][np.repeat(np.arange(last - first), rows)]  # segment of each row
            plane = np.arange(int(rows.sum())) - np.repeat(np.cumsum(rows) - rows, rows)
            ix, iy = np.divmod(plane, dims[which, 1])
            ix, iy, iz = ix + lo[which, 0], iy + lo[which, 1], lo[which, 2, None] + np.arange(depth)
            px, py, pz, dx, dy, dz, inv, r0, r_step = (v[which, None] for v in per_segment)
            # the same operations, in the same order, as on a dense (segment, window) grid: bit-identical values
            x = origin_mm[0] + ix[:, None] * spacing_mm[0] - px
            y = origin_mm[1] + iy[:, None] * spacing_mm[1] - py
            z = origin_mm[2] + iz * spacing_mm[2] - pz
            t = np.clip((x * dx + y * dy + z * dz) * inv, 0.0, 1.0)
            dist = np.sqrt((x - t * dx) ** 2 + (y - t * dy) ** 2 + (z - t * dz) ** 2)
            occ = np.clip(0.5 + (r0 + t * r_step - dist) / width_mm, 0.0, 1.0)
            row, k = np.nonzero(occ > 0)
            flat = np.ravel_multi_index((ix[row] - w_lo[0], iy[row] - w_lo[1], iz[row, k] - w_lo[2]), out.shape)
            np.maximum.at(flat_out, flat, occ[row, k].astype(np.float32))
            first = last
    return out
