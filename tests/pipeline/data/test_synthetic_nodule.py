"""Tests of the shortcuts the nodule drawing takes: each gives scipy's or the whole grid's numbers bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from naslung.pipeline.data.synthetic_anatomy import tube_occupancy
from naslung.pipeline.data.synthetic_nodule import _distance_mm, _slab_tube_occupancy


def _blob(seed, shape, pad):
    """A lumpy boolean nodule padded by ``pad`` voxels of background on every side."""
    rng = np.random.default_rng(seed)
    inner = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) > 0.0
    inner[tuple(s // 2 for s in shape)] = True
    return np.pad(inner, [(p, p) for p in pad])


# [spacing_mm]: thick and thin CT slices, isotropic voxels
SPACING_CASES = [(0.703125, 0.703125, 2.5), (0.625, 0.625, 0.625), (1.0, 1.0, 1.0), (0.5, 0.6, 1.25)]


@pytest.mark.parametrize("spacing_mm", SPACING_CASES)
def test_distance_is_scipys_bit_for_bit(spacing_mm):
    spacing = np.asarray(spacing_mm)
    core = _blob(0, (14, 12, 6), (5, 4, 2))
    for mask in (core, ~core):
        expected = ndimage.distance_transform_edt(mask, sampling=spacing)
        assert _distance_mm(mask, spacing).tobytes() == expected.tobytes()


@pytest.mark.parametrize("spacing_mm", SPACING_CASES)
def test_inside_distance_needs_only_the_cores_box_and_one_voxel(spacing_mm):
    """What ``render_nodule`` relies on: the inside distance of a padded core, transformed on the core's box plus
    one voxel, is the whole grid's there, and the whole grid's is 0 outside that box."""
    spacing, pad = np.asarray(spacing_mm), (5, 4, 3)
    core = _blob(1, (15, 11, 7), pad)
    whole = ndimage.distance_transform_edt(core, sampling=spacing)
    ring = tuple(slice(p - 1, n - p + 1) for p, n in zip(pad, core.shape, strict=True))
    assert _distance_mm(core[ring], spacing).tobytes() == whole[ring].tobytes()
    outside = np.ones(core.shape, dtype=bool)
    outside[ring] = False
    assert not whole[outside].any()


@pytest.mark.parametrize("slice_mm", [2.5, 1.25, 0.5])
def test_slab_tube_occupancy_is_the_whole_fine_grid_averaged(slice_mm):
    spacing, shape = np.array([0.7, 0.7, slice_mm]), (40, 36, 14)
    rng = np.random.default_rng(2)
    centre = spacing * np.asarray(shape) / 2
    dirs = rng.normal(size=(9, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    segments = np.c_[centre + 2.0 * dirs, centre + 9.0 * dirs, np.full(9, 1.0), np.full(9, 0.25)]
    n_sub = max(1, int(np.ceil(slice_mm / 0.5)))
    sub_spacing = np.array([0.7, 0.7, slice_mm / n_sub])
    origin = np.array([0.0, 0.0, -0.5 * slice_mm + 0.5 * sub_spacing[2]])
    fine = tube_occupancy(segments, origin, sub_spacing, (40, 36, 14 * n_sub), width_mm=0.7)
    expected = fine.reshape(40, 36, 14, n_sub).mean(axis=3)
    got = _slab_tube_occupancy(segments, spacing, shape)
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    assert 0 < np.count_nonzero(got) < got.size
    assert not _slab_tube_occupancy(segments + [100.0, 0, 0, 100.0, 0, 0, 0, 0], spacing, shape).any()
