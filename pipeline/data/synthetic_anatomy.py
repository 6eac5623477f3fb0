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


def _rotate(vectors: np.ndarray, axes: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rodrigues rotation of unit ``vectors`` (N, 3) about unit ``axes`` (N, 3) by ``angles`` (N,) radians."""
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    cross = np.cross(axes, vectors)
    dot = np.sum(axes * vectors, axis=1, keepdims=True)
    return vectors * cos + cross * sin + axes * dot * (1.0 - cos)


def unit_vectors(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.sqrt(np.sum(v * v, axis=-1, keepdims=True)), 1e-9)


@functools.lru_cache(maxsize=16)
def vessel_tree_segments(series_uid: str, seed: int, geometry: ScanGeometry) -> np.ndarray:
    """Branching vessel trees of a scan as segments (N, 8): p0 (3), p1 (3), radius at p0, radius at p1 (mm).

    Each lung gets trees rooted along its medial side (the hila); branches follow randomly curved paths,
    bifurcate at the end of each generation and get thinner distally (radius x 0.78 per generation, ~3.7 mm
    to ~0.5 mm at a 333 mm field of view); paths are steered back when they leave the lung. All branches of
    both lungs grow together, one vectorised step at a time.
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
    segments = []
    for _ in range(_VESSEL_GENERATIONS):
        steps = max(1, int(round(length / _VESSEL_STEP_MM)))
        cx, cy, a, b = lungs.T
        for step in range(steps):
            direction = unit_vectors(direction + rng.normal(0.0, 0.18, direction.shape))
            scale = anatomy.lung_scale(pos[:, 2])
            e = (
                np.abs((pos[:, 0] - cx) / (a * scale)) ** LUNG_POWER
                + np.abs((pos[:, 1] - cy) / (b * scale)) ** LUNG_POWER
            )
            steer = np.clip((e ** (1.0 / LUNG_POWER) - 0.8) * 4.0, 0.0, 3.0)
            inward = unit_vectors(np.stack([cx - pos[:, 0], cy - pos[:, 1], np.zeros(len(pos))], 1))
            back_z = 0.2 * (np.clip(pos[:, 2], anatomy.z_lo, anatomy.z_hi) - pos[:, 2])
            direction = unit_vectors(direction + steer[:, None] * inward + back_z[:, None] * np.array([0.0, 0.0, 1.0]))
            new = pos + direction * (length / steps)
            r0, r1 = radius * 0.78 ** (step / steps), radius * 0.78 ** ((step + 1) / steps)
            segments.append(np.hstack([pos, new, np.full((len(pos), 1), r0), np.full((len(pos), 1), r1)]))
            pos = new
        # bifurcate: two children rotated apart about a random axis perpendicular to the parent
        axes = unit_vectors(np.cross(direction, rng.normal(size=direction.shape)))
        angle = rng.uniform(np.radians(20), np.radians(40), len(pos))
        first = _rotate(direction, axes, angle)
        second = _rotate(direction, axes, -angle * rng.uniform(0.6, 1.0, len(pos)))
        pos, lungs = np.concatenate([pos, pos]), np.concatenate([lungs, lungs])
        direction = np.concatenate([first, second])
        radius *= 0.78
        length *= 0.8
    return np.concatenate(segments).astype(np.float64)


def tube_occupancy(
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
