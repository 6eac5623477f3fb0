"""Fixtures for the scan readers and ``prepare``: small generated CT scans with a bright blob at a known place."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from naslung.pipeline.data.cohort_table import REQUIRED_COLUMNS
from naslung.pipeline.data.scan_writers import write_dicom_series, write_mhd

#: Columns of the small cohort CSVs the tests write (those of ``naslung prepare cohort``'s cohort.csv).
TEST_COHORT_COLUMNS = REQUIRED_COLUMNS


@dataclass
class SyntheticScan:
    """A generated CT volume with Gaussian blobs ("nodules") peaking at known voxels.

    Args:
        hu: (X, Y, Z) int16 HU, (column, row, slice) order, slices in ascending z when ``flip_z`` is False.
        spacing_mm: (x, y, z) voxel size; origin_mm: world LPS of voxel (0, 0, 0).
        direction: row-major 3x3 (SimpleITK convention) or None for identity.
        peaks_ijk: blob centres as voxel indices (column, row, slice) in this array's order.
        series_uid, patient_id: the DICOM identifiers to write.
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    peaks_ijk: list[tuple[float, float, float]]
    series_uid: str
    patient_id: str
    direction: tuple[float, ...] | None = None
    study_uid: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def affine(self) -> np.ndarray:
        d = np.eye(3) if self.direction is None else np.asarray(self.direction, float).reshape(3, 3)
        affine = np.eye(4)
        affine[:3, :3] = d @ np.diag(self.spacing_mm)
        affine[:3, 3] = self.origin_mm
        return affine

    def world(self, n: int = 0) -> np.ndarray:
        """World LPS position (mm) of blob ``n``."""
        return (self.affine @ np.array([*self.peaks_ijk[n], 1.0]))[:3]

    def ascending_k(self, n: int = 0) -> float:
        """Blob ``n``'s slice index counted in ascending z (pylidc's order, used by the cohort)."""
        k = self.peaks_ijk[n][2]
        return k if self.affine[2, 2] > 0 else self.hu.shape[2] - 1 - k

    def cohort_row(self, n: int = 0, **overrides) -> dict:
        """A cohort row for blob ``n`` (label 1, fold 0 unless overridden)."""
        i, j, _ = self.peaks_ijk[n]
        row = {
            "patient_id": self.patient_id,
            "series_uid": self.series_uid,
            "nodule_id": f"{self.patient_id}_n{n + 1}",
            "i": i,
            "j": j,
            "k": self.ascending_k(n),
            "z_mm": round(float(self.world(n)[2]), 3),
            "diameter_mm": 6.0,
            "n_readers": 4,
            "malignancy_mean": 4.0,
            "label": 1,
            "fold": 0,
            "pixel_spacing_mm": self.spacing_mm[0],
            "slice_thickness_mm": self.spacing_mm[2],
            "slice_spacing_mm": self.spacing_mm[2],
            "n_slices": self.hu.shape[2],
            "annotation_ids": "1;2;3;4",
        }
        row.update(overrides)
        return row

    def write_dicom(self, folder: Path) -> Path:
        return write_dicom_series(
            self.hu,
            self.spacing_mm,
            self.origin_mm,
            folder,
            patient_id=self.patient_id,
            series_uid=self.series_uid,
            study_uid=self.study_uid,
            direction=self.direction,
        )

    def write_mhd(self, path: Path) -> Path:
        return write_mhd(self.hu, self.spacing_mm, self.origin_mm, path, direction=self.direction)


def make_synthetic_scan(
    series_uid: str = "1.2.826.0.1.3680043.2.1125.1",
    patient_id: str = "TEST-0001",
    shape: Sequence[int] = (64, 64, 40),
    spacing_mm: Sequence[float] = (0.7, 0.75, 2.0),
    origin_mm: Sequence[float] = (-22.4, -30.0, -100.0),
    peaks_ijk: Sequence[Sequence[float]] = ((30.0, 22.0, 18.0),),
    direction: Sequence[float] | None = None,
    study_uid: str | None = None,
    sigma_mm: float = 2.5,
) -> SyntheticScan:
    """Build a scan: -800 HU background with a Gaussian blob of +1400 HU peak at each voxel of ``peaks_ijk``."""
    scan = SyntheticScan(
        hu=np.zeros(tuple(shape), np.int16),
        spacing_mm=tuple(float(s) for s in spacing_mm),  # type: ignore[arg-type]
        origin_mm=tuple(float(o) for o in origin_mm),  # type: ignore[arg-type]
        peaks_ijk=[tuple(float(v) for v in p) for p in peaks_ijk],  # type: ignore[misc]
        series_uid=series_uid,
        patient_id=patient_id,
        direction=None if direction is None else tuple(direction),
        study_uid=study_uid,
    )
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1)
    world = grid @ scan.affine[:3, :3].T + scan.affine[:3, 3]
    hu = np.full(tuple(shape), -800.0)
    for n in range(len(scan.peaks_ijk)):
        r2 = np.sum((world - scan.world(n)) ** 2, axis=-1)
        hu += 1400.0 * np.exp(-r2 / (2.0 * sigma_mm**2))
    scan.hu = np.rint(hu).astype(np.int16)
    return scan


def write_cohort_csv_rows(path: Path, rows: Sequence[dict]) -> Path:
    """Write cohort rows with :data:`TEST_COHORT_COLUMNS` (plain csv, independent of the code under test)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(TEST_COHORT_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def synthetic_scan() -> Callable[..., SyntheticScan]:
    """Factory: ``synthetic_scan(series_uid=..., peaks_ijk=...)`` -> :class:`SyntheticScan`."""
    return make_synthetic_scan


@pytest.fixture
def dicom_scan(tmp_path: Path) -> tuple[Path, SyntheticScan]:
    """One generated DICOM series (64x64x40, 0.7x0.75x2 mm) in ``tmp_path/series``."""
    scan = make_synthetic_scan()
    return scan.write_dicom(tmp_path / "series"), scan


@pytest.fixture
def cohort_csv_writer() -> Callable[[Path, Sequence[dict]], Path]:
    """``cohort_csv_writer(path, rows)`` writes a small cohort CSV."""
    return write_cohort_csv_rows
