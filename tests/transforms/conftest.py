"""Synthetic scans for the transform tests: analytic linear HU fields on anisotropic, offset, oblique grids."""

from __future__ import annotations

import numpy as np
import pytest

#: HU = a*x + b*y + c*z (+ d) with x, y, z in world mm; trilinear interpolation reproduces it exactly.
FIELD_COEFFS = (2.0, -3.0, 0.5, 40.0)
SPACING = (0.7, 0.7, 2.5)
ORIGIN = (-120.0, -80.0, -300.0)
SHAPE = (64, 72, 28)


def make_affine(spacing=SPACING, origin=ORIGIN, rotation_deg: float = 0.0, flip_xy: bool = False) -> np.ndarray:
    """4x4 voxel -> world mm affine with optional rotation about z and LPS-like flipped x/y axes."""
    theta = np.deg2rad(rotation_deg)
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1.0]])
    if flip_xy:
        rotation = rotation @ np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def linear_field(points_mm: np.ndarray) -> np.ndarray:
    """The analytic HU field at world points (..., 3)."""
    a, b, c, d = FIELD_COEFFS
    return a * points_mm[..., 0] + b * points_mm[..., 1] + c * points_mm[..., 2] + d


def linear_volume(affine: np.ndarray, shape=SHAPE, dtype=np.float32) -> np.ndarray:
    """Volume (X, Y, Z) whose voxel values are the linear field at the voxel centres."""
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    return linear_field(world).astype(dtype)


def cube_points(center_mm, size: int, spacing_mm: float = 1.0) -> np.ndarray:
    """World coordinates (size, size, size, 3) of the cube grid of sample_cube_hu."""
    offsets = (np.arange(size) - (size - 1) / 2.0) * spacing_mm
    grid = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1)
    return grid + np.asarray(center_mm, dtype=np.float64)


def voxel_to_world(affine: np.ndarray, index) -> np.ndarray:
    return affine[:3, :3] @ np.asarray(index, dtype=np.float64) + affine[:3, 3]


@pytest.fixture
def spheres_scan():
    """A small 'CT' (X, Y, Z) int16 in HU: air body, lung-like noise and two spheres; affine (0.7, 0.7, 2.5) mm."""
    rng = np.random.default_rng(0)
    shape = (96, 96, 30)
    affine = make_affine()
    volume = rng.normal(-800.0, 60.0, size=shape)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    for centre, radius in (((-95.0, -55.0, -270.0), 6.0), ((-70.0, -40.0, -250.0), 9.0)):
        volume[np.linalg.norm(world - np.asarray(centre), axis=-1) < radius] = 40.0
    return np.clip(volume, -1024, 3000).astype(np.int16), affine


@pytest.fixture
def field():
    """The analytic-field helpers above, as a namespace (test modules must not import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        coeffs=FIELD_COEFFS,
        spacing=SPACING,
        origin=ORIGIN,
        shape=SHAPE,
        make_affine=make_affine,
        linear_field=linear_field,
        linear_volume=linear_volume,
        cube_points=cube_points,
        voxel_to_world=voxel_to_world,
    )
