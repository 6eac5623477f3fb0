"""Where a cohort nodule sits in a raw scan, the 32³ cube cut around it, and LUNA16's ``annotations.csv`` check."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.atomic_io import atomic_path
from naslung.pipeline.data.raw_scan_discovery import ScanJob
from naslung.pipeline.data.scan_volume import ScanVolume
from naslung.pipeline.errors import DataError
from naslung.transforms.nodule_cube import hu_to_unit, sample_cube_hu

__all__ = [
    "CUBE_SIZE",
    "CUBE_SPACING_MM",
    "nodule_world_centre",
    "cut_cube",
    "save_cube",
    "find_annotations",
    "read_annotations",
    "check_annotations",
]

logger = logging.getLogger(__name__)

#: Cube edge (voxels) and voxel size (mm), as NAS-Lung's 32³ inputs at 1 mm.
CUBE_SIZE = 32
CUBE_SPACING_MM = 1.0


def nodule_world_centre(volume: ScanVolume, row: Mapping[str, Any]) -> np.ndarray:
    """World LPS centre (mm) of a cohort nodule in ``volume``, after checking the cohort against the scan.

    ``x_mm``/``y_mm`` come from the cohort's voxel ``(i, j)`` through the scan's origin, spacing and direction;
    ``z_mm`` is the cohort's. The cohort's slice index ``k`` counts slices in ascending z (pylidc's order); the
    scan's z at ``k`` must agree with the cohort's ``z_mm`` within half a slice.

    Args:
        volume: the scan.
        row: a cohort row with ``nodule_id``, ``i`` (column), ``j`` (row), ``k`` (slice) and ``z_mm``.

    Returns:
        (3,) float64 world centre in mm.

    Raises:
        DataError: the scan is not axial, ``k`` is outside the scan, or ``k`` and ``z_mm`` disagree.
    """
    i, j, k, z_mm = float(row["i"]), float(row["j"]), float(row["k"]), float(row["z_mm"])
    n_slices = volume.hu.shape[2]
    dz = float(volume.affine[2, 2])
    if abs(dz) < 1e-6 or abs(dz) < 0.5 * float(np.linalg.norm(volume.affine[:3, 2])):
        raise DataError(
            "the slice axis is not along z (a sagittal/coronal or strongly tilted scan); the cohort indexes axial "
            "slices, so this scan cannot be matched",
            path=str(volume.source),
        )
    if not -0.5 <= k <= n_slices - 0.5:
        raise DataError(
            f"nodule {row['nodule_id']}: cohort slice index k={k:g} is outside this scan's {n_slices} slices; the "
            "cohort was derived from a different version of the series",
            path=str(volume.source),
        )
    k_scan = k if dz > 0 else (n_slices - 1) - k
    centre = volume.voxel_to_world([i, j, k_scan])
    half_slice = 0.5 * abs(dz)
    if abs(centre[2] - z_mm) > half_slice + 1e-3:
        raise DataError(
            f"nodule {row['nodule_id']}: cohort slice index k={k:g} lies at z={centre[2]:.2f} mm in this scan but "
            f"the cohort says z_mm={z_mm:.2f} (more than half a slice, {half_slice:.2f} mm, apart); the scan's slice "
            "positions differ from those the cohort was derived from (missing/extra slices or another export)",
            path=str(volume.source),
        )
    centre[2] = z_mm
    return centre


def cut_cube(volume: ScanVolume, centre_mm: np.ndarray) -> np.ndarray:
    """One (32, 32, 32) float32 cube in [0, 1] around ``centre_mm``."""
    hu = sample_cube_hu(volume.hu, volume.affine, centre_mm, size=CUBE_SIZE, spacing_mm=CUBE_SPACING_MM)
    cube = np.asarray(hu_to_unit(hu), dtype=np.float32)
    if cube.shape != (CUBE_SIZE,) * 3 or not np.isfinite(cube).all():
        raise DataError(f"cube around {centre_mm.tolist()} has shape {cube.shape} or non-finite values")
    return cube


def save_cube(path: Path, cube: np.ndarray) -> bool:
    """Write ``cube`` atomically unless an identical one is there; returns True when written."""
    if path.exists():
        try:
            if np.array_equal(np.load(path), cube):
                return False
        except (OSError, ValueError):
            pass
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, cube)
    return True


def find_annotations(data: Path) -> Path | None:
    """LUNA16's ``annotations.csv`` under ``data`` (the shallowest one), if present."""
    if data.is_file():
        return None
    found = sorted(data.rglob("annotations.csv"), key=lambda p: (len(p.parts), str(p)))
    return found[0] if found else None


def read_annotations(path: Path) -> dict[str, list[tuple[np.ndarray, float]]]:
    """LUNA16 annotations: series uid -> [(world centre mm (3,), diameter mm)]."""
    table: dict[str, list[tuple[np.ndarray, float]]] = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        need = {"seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"}
        if not need <= set(reader.fieldnames or []):
            raise DataError(f"annotations.csv needs columns {sorted(need)} (LUNA16 format)", path=str(path))
        for line, row in enumerate(reader, start=2):
            try:
                centre = np.array([float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])])
                diameter = float(row["diameter_mm"])
            except ValueError as err:
                raise DataError(f"line {line}: {err}; fix or remove the row", path=str(path)) from err
            table.setdefault(row["seriesuid"].strip(), []).append((centre, diameter))
    return table


def check_annotations(
    job: ScanJob,
    nodules: Sequence[Mapping[str, Any]],
    centres: Mapping[str, Sequence[float]],
    annotations: Mapping[str, list[tuple[np.ndarray, float]]],
) -> int:
    """Count (and log) nodules farther than their radius + 2 mm from every LUNA16 annotation of their scan."""
    entries = annotations.get(job.series_uid)
    if not entries:
        return 0
    far = 0
    for row in nodules:
        centre = np.asarray(centres[str(row["nodule_id"])])
        distance = min(float(np.linalg.norm(centre - c)) for c, _ in entries)
        radius = max([d for _, d in entries] + [float(row.get("diameter_mm") or 0.0)]) / 2.0
        if distance > radius + 2.0:
            far += 1
            logger.warning(
                "nodule %s in %s is %.1f mm from the nearest annotations.csv entry of its series; check the "
                "cohort's geometry for this scan",
                row["nodule_id"],
                job.path,
                distance,
            )
    return far
