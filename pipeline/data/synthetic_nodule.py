"""One nodule drawn from its readers' consensus mask and ratings: shape, texture, margin, lobes, spicules, calcium.

How each rating drives the drawing is listed in :mod:`naslung.pipeline.data.synthetic_ct`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage, special

from naslung.pipeline.data.reader_contours import consensus_mask
from naslung.pipeline.data.synthetic_anatomy import tube_occupancy, tube_windows, unit_vectors
from naslung.pipeline.data.synthetic_spec import (
    AIR_HU,
    CALC_ABSENT,
    CALC_CENTRAL,
    CALC_LAMINATED,
    CALC_NONCENTRAL,
    CALC_SOLID,
    CALCIFICATION_HU,
    FAT_HU,
    FLUID_HU,
    GROUND_GLASS_HU,
    PARENCHYMA_HU,
    SOLID_NODULE_HU,
    STRUCTURE_AIR,
    STRUCTURE_FAT,
    STRUCTURE_FLUID,
    NoduleSpec,
    stable_seed,
)

__all__ = ["RenderedNodule", "render_nodule"]


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
class RenderedNodule:
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


def _distance_mm(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """``ndimage.distance_transform_edt(mask, sampling=spacing)``, bit for bit, in a third of its time.

    The same feature transform; the distances are then summed axis by axis in the same order (x, y, z) with the
    same operations, but without scipy's (3, ...) index and offset arrays.
    """
    features = ndimage.distance_transform_edt(mask, sampling=spacing, return_distances=False, return_indices=True)
    total = np.zeros(mask.shape)
    for d in range(mask.ndim):
        index = np.arange(mask.shape[d], dtype=features.dtype).reshape([-1 if e == d else 1 for e in range(mask.ndim)])
        offset_mm = (features[d] - index).astype(np.float64)
        offset_mm *= spacing[d]
        offset_mm *= offset_mm
        total += offset_mm
    return np.sqrt(total, out=total)


def _radial_mm(rel: list[np.ndarray]) -> np.ndarray:
    """Distance (mm, + 1e-6) from the nodule's centre, from the broadcastable offsets ``rel`` along x, y, z."""
    return np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2) + 1e-6


def _slab_tube_occupancy(segments: np.ndarray, spacing: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """:func:`tube_occupancy` averaged over each slice's thickness (partial volume of a thick slice).

    A strand thinner than the slice spacing that lies between two slice centres would vanish if only the centres
    were sampled; a CT slice integrates over its thickness, so it shows there, fainter, in the nearest slices.
    """
    n_sub = max(1, int(np.ceil(spacing[2] / 0.5)))
    sub_spacing = np.array([spacing[0], spacing[1], spacing[2] / n_sub])
    origin = np.array([0.0, 0.0, -0.5 * spacing[2] + 0.5 * sub_spacing[2]])
    sub_shape = (int(shape[0]), int(shape[1]), int(shape[2]) * n_sub)
    width_mm = max(float(spacing[0]), 0.5)
    out = np.zeros(tuple(int(n) for n in shape), dtype=np.float32)
    # only the box of whole slices the strands can reach is evaluated; the rest stays 0 (the mean of zeros)
    _, lo, hi = tube_windows(segments, origin, sub_spacing, sub_shape, width_mm)
    if len(lo) == 0:
        return out
    lo = np.clip(lo.min(axis=0), 0, sub_shape)
    hi = np.clip(hi.max(axis=0), 0, sub_shape)
    lo[2], hi[2] = lo[2] // n_sub * n_sub, -(-hi[2] // n_sub) * n_sub
    if np.any(hi <= lo):
        return out
    fine = tube_occupancy(segments, origin, sub_spacing, sub_shape, width_mm=width_mm, window=(lo, hi))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo[:2], hi[:2], strict=True))
    out[box + (slice(int(lo[2]) // n_sub, int(hi[2]) // n_sub),)] = fine.reshape(
        fine.shape[0], fine.shape[1], -1, n_sub
    ).mean(axis=3)
    return out


def render_nodule(spec: NoduleSpec, seed: int) -> RenderedNodule:
    """Draw one nodule on the scan's voxel grid from its consensus mask and ratings."""
    rng = np.random.default_rng(stable_seed(seed, spec.nodule_id, "nodule"))
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
    sd = _distance_mm(~core, spacing)
    # inside the core the nearest outside voxel lies within the core's box plus one voxel: transform only that
    ring = tuple(slice(int(p) - 1, int(p + n) + 1) for p, n in zip(pad, shape - 2 * pad, strict=True))
    sd[ring] -= _distance_mm(core[ring], spacing)  # elsewhere the inside distance is 0
    sd = ndimage.gaussian_filter(sd.astype(np.float32), sigma=0.6 / spacing)
    grids = [(np.arange(shape[d]) * spacing[d]).reshape([-1 if e == d else 1 for e in range(3)]) for d in range(3)]
    core_index = np.nonzero(core)
    centre_mm = np.array([float((core_index[d] * spacing[d]).mean()) for d in range(3)])
    rel = [g - c for g, c in zip(grids, centre_mm, strict=True)]
    radial = None  # distance from the centre, computed where the lobes or the calcium need it

    # lobulation: a scalloped margin, round lobes around the nodule with sharp notches between them
    n_lobes = int(np.clip(round(r_eq / 2.0), 3, 6)) + int(rng.integers(0, 2))
    phase, twist = rng.uniform(0.0, 2.0 * np.pi), rng.uniform(-0.6, 0.6)
    if lobul > 0:
        radial = _radial_mm(rel)
        azimuth = np.arctan2(rel[1], rel[0]) + twist * rel[2] / r_eq
        in_plane = np.sqrt(rel[0] ** 2 + rel[1] ** 2) / radial  # lobes fade towards the poles
        lobes = np.abs(np.cos(0.5 * n_lobes * azimuth + phase))  # n_lobes humps around, cusps (notches) between
        sd = sd - lobe_amp * (lobes - 0.5) * in_plane
    occupancy = (0.5 * special.erfc(sd / (np.sqrt(2.0) * edge_sigma))).astype(np.float32)

    # texture: ground glass (1) -> part solid (3) -> solid (5); a solid core grows from the inside
    depth = np.clip(-sd, 0.0, None)
    depth_n = depth / max(float(depth.max()), 1e-6)
    solid_share = float(np.clip((spec.texture - 1.5) / 3.0, 0.0, 1.0))
    if solid_share >= 1.0:
        solid = np.ones_like(depth_n)
    elif solid_share > 0:
        solid = _smoothstep((depth_n - (1.0 - 1.25 * solid_share)) / 0.25 + 0.5)
    else:
        solid = 0.0 * depth_n
    patches = ndimage.gaussian_filter(rng.standard_normal(tuple(shape), dtype=np.float32), sigma=1.0 / spacing)
    patches /= max(float(patches.std()), 1e-6)
    patch_amp = 120.0 - 100.0 * solid_share
    hu = GROUND_GLASS_HU + (SOLID_NODULE_HU - GROUND_GLASS_HU) * solid + patch_amp * patches

    # internal structure: fluid (homogeneous water density), fat, or an air pocket (cavitation) inside
    if spec.internal_structure == STRUCTURE_FLUID:
        inner = _smoothstep((depth_n - 0.3) / 0.3)
        hu = hu * (1.0 - inner) + (FLUID_HU + 8.0 * patches) * inner
    elif spec.internal_structure == STRUCTURE_FAT:
        inner = _smoothstep((depth_n - 0.3) / 0.3)
        hu = hu * (1.0 - inner) + (FAT_HU + 15.0 * patches) * inner
    elif spec.internal_structure == STRUCTURE_AIR:
        cavity = _smoothstep((depth_n - 0.45) / 0.2)
        hu = hu * (1.0 - cavity) + (AIR_HU + 30.0) * cavity

    # subtlety (conspicuity): a subtle nodule stands out less from the lung around it
    contrast = 1.0 - _SUBTLE_CONTRAST_LOSS * float(np.clip((5.0 - spec.subtlety) / 4.0, 0.0, 1.0))
    hu = PARENCHYMA_HU + contrast * (hu - PARENCHYMA_HU)

    # spiculation: thin tapered strands radiating from the surface into the lung
    n_spikes = int(round(_SPIKES_MIN + (_SPIKES_MAX - _SPIKES_MIN) * spic + rng.uniform(-0.5, 0.5))) if spic else 0
    if n_spikes:
        dirs = unit_vectors(rng.normal(size=(n_spikes, 3)) * np.array([1.0, 1.0, 0.5]))
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
    if spec.calcification != CALC_ABSENT:
        radial = _radial_mm(rel) if radial is None else radial
        calc = _calcification(spec.calcification, rng, rel, radial, depth_n, r_eq)
        hu = np.maximum(hu, CALCIFICATION_HU * calc + hu * (1.0 - calc))
    return RenderedNodule(start_arr, occupancy, hu.astype(np.float32))


def _calcification(
    code: int, rng: np.random.Generator, rel: list[np.ndarray], radial: np.ndarray, depth_n: np.ndarray, r_eq: float
) -> np.ndarray:
    """Soft (0..1) calcified fraction for LIDC calcification ``code`` inside a nodule."""

    def ball(centre: np.ndarray, radius: float) -> np.ndarray:
        d = np.sqrt(sum((r - c) ** 2 for r, c in zip(rel, centre, strict=True)))
        return _smoothstep((radius - d) / 0.8 + 0.5)

    inside = _smoothstep(depth_n / 0.15)
    if code == CALC_SOLID:
        field = inside
    elif code == CALC_CENTRAL:
        field = ball(np.zeros(3), max(0.35 * r_eq, 1.2))
    elif code == CALC_LAMINATED:
        field = inside * _smoothstep(np.cos(radial / max(0.25 * r_eq, 1.2) * np.pi) * 2.0) * (depth_n > 0.15)
    elif code == CALC_NONCENTRAL:
        offset = unit_vectors(rng.normal(size=3)) * 0.5 * r_eq
        field = ball(offset, max(0.3 * r_eq, 1.2))
    else:  # popcorn
        field = np.zeros_like(radial)
        for _ in range(int(rng.integers(4, 9))):
            centre = unit_vectors(rng.normal(size=3)) * rng.uniform(0.0, 0.6) * r_eq
            field = np.maximum(field, ball(centre, max(rng.uniform(0.15, 0.25) * r_eq, 1.0)))
    return np.clip(field * inside, 0.0, 1.0)
