"""Tests of the synthetic chest: tube occupancy against its definition, vessel trees against their first form."""

from __future__ import annotations

import numpy as np
import pytest

from naslung.pipeline.data.synthetic_anatomy import (
    LUNG_POWER,
    anatomy_of,
    tube_occupancy,
    tube_windows,
    unit_vectors,
    vessel_tree_segments,
)
from naslung.pipeline.data.synthetic_spec import LIDC_MATRIX, ScanGeometry, stable_seed


def _dense_tube_occupancy(segments, origin_mm, spacing_mm, shape, width_mm):
    """The definition: every segment evaluated on every voxel with the same arithmetic, the largest value kept."""
    index = np.indices(shape)
    points = [origin_mm[d] + index[d] * spacing_mm[d] for d in range(3)]
    d_vec = segments[:, 3:6] - segments[:, 0:3]
    inv_len2 = 1.0 / np.maximum(np.sum(d_vec * d_vec, axis=1), 1e-9)
    out = np.zeros(shape, dtype=np.float32)
    for seg, (dx, dy, dz), inv in zip(segments, d_vec, inv_len2, strict=True):
        x, y, z = (points[d] - seg[d] for d in range(3))
        t = np.clip((x * dx + y * dy + z * dz) * inv, 0.0, 1.0)
        dist = np.sqrt((x - t * dx) ** 2 + (y - t * dy) ** 2 + (z - t * dz) ** 2)
        occ = np.clip(0.5 + (seg[6] + t * (seg[7] - seg[6]) - dist) / width_mm, 0.0, 1.0)
        out = np.maximum(out, occ.astype(np.float32))
    return out


def _segments(seed, n, lo_mm, hi_mm):
    """``n`` random tapered segments starting in the box ``[lo_mm, hi_mm]`` (some reach out of it)."""
    rng = np.random.default_rng(seed)
    p0 = rng.uniform(lo_mm, hi_mm, (n, 3))
    p1 = p0 + rng.normal(0.0, 4.0, (n, 3))
    return np.hstack([p0, p1, rng.uniform(0.2, 2.0, (n, 2))])


# [spacing_mm, chunk_voxels]: anisotropic CT voxels, isotropic ones, chunks of one row and of one segment
TUBE_CASES = [
    [(0.7, 0.7, 2.5), 1 << 18],
    [(0.7, 0.7, 2.5), 50],
    [(1.0, 1.0, 1.0), 1],
    [(0.5, 0.6, 1.25), 1 << 18],
]


@pytest.mark.parametrize("spacing_mm, chunk_voxels", TUBE_CASES)
def test_tube_occupancy_equals_its_definition_bit_for_bit(spacing_mm, chunk_voxels):
    origin, spacing, shape = np.array([-5.0, 3.0, 10.0]), np.asarray(spacing_mm), (30, 26, 9)
    segments = _segments(0, 40, origin - 5.0, origin + spacing * shape + 5.0)
    expected = _dense_tube_occupancy(segments, origin, spacing, shape, 0.7)
    got = tube_occupancy(segments, origin, spacing, shape, 0.7, chunk_voxels)
    assert got.dtype == np.float32 and got.shape == shape
    assert 0 < np.count_nonzero(got) < got.size
    assert got.tobytes() == expected.tobytes()


def test_tube_occupancy_window_is_that_part_of_the_grid():
    origin, spacing, shape = np.array([-5.0, 3.0, 10.0]), np.array([0.7, 0.7, 2.5]), (30, 26, 9)
    segments = _segments(1, 40, origin, origin + spacing * shape)
    whole = tube_occupancy(segments, origin, spacing, shape, 0.7)
    part = tube_occupancy(segments, origin, spacing, shape, 0.7, window=((4, -3, 2), (20, 15, 40)))  # clipped
    assert part.tobytes() == whole[4:20, 0:15, 2:9].tobytes()
    assert tube_occupancy(segments[:0], origin, spacing, shape, 0.7).shape == shape


def test_tube_windows_keep_every_segment_that_reaches_the_grid():
    origin, spacing, shape = np.array([-5.0, 3.0, 10.0]), np.array([0.7, 0.7, 2.5]), (30, 26, 9)
    segments = _segments(2, 200, origin - 40.0, origin + spacing * shape + 40.0)
    keep, lo, hi = tube_windows(segments, origin, spacing, shape, 0.7)
    assert 0 < len(keep) < len(segments) and lo.shape == hi.shape == (len(keep), 3)
    for k in range(len(segments)):
        alone = _dense_tube_occupancy(segments[k : k + 1], origin, spacing, shape, 0.7)
        if k not in keep:
            assert not alone.any(), k
            continue
        window = np.zeros(shape, dtype=bool)
        a, b = np.maximum(lo[keep == k][0], 0), hi[keep == k][0]
        window[a[0] : b[0], a[1] : b[1], a[2] : b[2]] = True
        assert not alone[~window].any(), k


def _rotate_rows(vectors, axes, angles):
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    return (
        vectors * cos
        + np.cross(axes, vectors) * sin
        + axes * np.sum(axes * vectors, axis=1, keepdims=True) * (1.0 - cos)
    )


def _vessel_tree_rows(series_uid, seed, geometry):
    """The vessel trees as first written, on (N, 3) rows: what the column version must reproduce bit for bit."""
    rng = np.random.default_rng(stable_seed(seed, series_uid, "vessels"))
    anatomy = anatomy_of(geometry)
    fov = geometry.spacing_mm[0] * LIDC_MATRIX
    z_mid, z_range = 0.5 * (anatomy.z_lo + anatomy.z_hi), anatomy.z_hi - anatomy.z_lo
    lungs = np.repeat(np.asarray(anatomy.lungs), 10, axis=0)
    cx, cy, a, b = lungs.T
    side, m = np.sign(cx), len(lungs)
    pos = np.stack(
        [cx - side * 0.6 * a, cy + rng.normal(0.0, 0.1, m) * b, z_mid + z_range * rng.uniform(-0.3, 0.3, m)], 1
    )
    direction = unit_vectors(
        np.stack([side * rng.uniform(0.3, 1.0, m), rng.uniform(-1.0, 1.0, m), rng.uniform(-1.3, 1.3, m)], 1)
    )
    radius, length, segments = 0.011 * fov, 0.08 * fov, []
    for _ in range(8):
        steps = max(1, int(round(length / 3.0)))
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
        axes = unit_vectors(np.cross(direction, rng.normal(size=direction.shape)))
        angle = rng.uniform(np.radians(20), np.radians(40), len(pos))
        first = _rotate_rows(direction, axes, angle)
        second = _rotate_rows(direction, axes, -angle * rng.uniform(0.6, 1.0, len(pos)))
        pos, lungs, direction = (
            np.concatenate([pos, pos]),
            np.concatenate([lungs, lungs]),
            np.concatenate([first, second]),
        )
        radius *= 0.78
        length *= 0.8
    return np.concatenate(segments)


# [series_uid, seed, geometry]: thick and thin slices, small and large fields of view
VESSEL_CASES = [
    ["1.2.3", 0, ScanGeometry((512, 512, 40), (0.7, 0.7, 2.5), (-179.2, -179.2, -75.0))],
    ["1.2.3", 7, ScanGeometry((512, 512, 280), (0.625, 0.625, 1.25), (-160.0, -160.0, -301.3))],
    ["9.8.7.6", 1, ScanGeometry((512, 512, 121), (0.859375, 0.859375, 2.5), (-220.0, -220.0, 12.5))],
]


@pytest.mark.parametrize("series_uid, seed, geometry", VESSEL_CASES)
def test_vessel_trees_are_the_row_version_bit_for_bit(series_uid, seed, geometry):
    segments = vessel_tree_segments.__wrapped__(series_uid, seed, geometry)
    expected = _vessel_tree_rows(series_uid, seed, geometry)
    assert segments.shape == expected.shape and segments.dtype == np.float64
    assert segments.tobytes() == expected.tobytes()
    assert np.all(segments[:, 6] >= segments[:, 7]) and segments[:, 7].min() > 0  # tapered
