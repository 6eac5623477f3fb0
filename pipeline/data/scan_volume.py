"""One CT volume as naslung's scan readers return it (:class:`ScanVolume`: HU voxels, spacing, LPS affine) and the
file suffixes of the scan formats they read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from naslung.pipeline.errors import DataError

__all__ = ["DICOM_SUFFIXES", "MHD_SUFFIXES", "NIFTI_SUFFIXES", "ScanVolume", "make_affine", "check_finite"]

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
MHD_SUFFIXES: tuple[str, ...] = (".mhd", ".mha")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")


@dataclass(frozen=True)
class ScanVolume:
    """A CT volume in Hounsfield units with its voxel-to-world geometry.

    Args:
        hu: (X, Y, Z) float32 Hounsfield units; ``hu[i, j, k]`` is column ``i``, row ``j``, slice ``k``.
        affine: (4, 4) voxel index ``(i, j, k, 1)`` to world millimetres in DICOM LPS.
        spacing_mm: voxel size along ``i``, ``j``, ``k`` (mm).
        origin_mm: world position (LPS mm) of the centre of voxel ``(0, 0, 0)``.
        direction: (3, 3) unit axis directions, one per column (``direction[:, 2]`` is the slice normal).
        source: the series folder or file the volume was read from.
        series_uid: DICOM SeriesInstanceUID (the file stem for .mhd/NIfTI, as LUNA16 names its files).
        patient_id: DICOM PatientID, empty when the format does not carry one.
        slice_files: the DICOM files in slice order (empty for single-file formats).
    """

    hu: np.ndarray
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: np.ndarray
    source: Path
    series_uid: str
    patient_id: str = ""
    slice_files: tuple[Path, ...] = field(default=(), repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxel counts along ``i``, ``j``, ``k``."""
        return tuple(int(s) for s in self.hu.shape)  # type: ignore[return-value]

    def voxel_to_world(self, ijk: Sequence[float] | np.ndarray) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` to world LPS millimetres ``(..., 3)``."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz_mm: Sequence[float] | np.ndarray) -> np.ndarray:
        """Map world LPS millimetres ``(..., 3)`` to (fractional) voxel indices ``(..., 3)``."""
        xyz = np.asarray(xyz_mm, dtype=np.float64)
        return (xyz - self.affine[:3, 3]) @ np.linalg.inv(self.affine[:3, :3]).T

    def slice_z_mm(self) -> np.ndarray:
        """World z (mm) of every slice ``k`` at voxel ``(0, 0, k)``: shape ``(Z,)``."""
        k = np.arange(self.hu.shape[2], dtype=np.float64)
        return self.affine[2, 2] * k + self.affine[2, 3]


def make_affine(spacing_mm: Sequence[float], origin_mm: Sequence[float], direction: np.ndarray) -> np.ndarray:
    """Build the (4, 4) voxel-to-world matrix ``world = direction @ diag(spacing) @ ijk + origin``."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) @ np.diag(np.asarray(spacing_mm, float))
    affine[:3, 3] = np.asarray(origin_mm, dtype=np.float64)
    return affine


def check_finite(hu: np.ndarray, source: Path) -> None:
    """Raise when the volume holds NaN or infinite voxels."""
    finite = np.isfinite(hu)
    if not finite.all():
        bad = int(hu.size - np.count_nonzero(finite))
        raise DataError(
            f"{bad} of {hu.size} voxels are NaN or infinite; repair or re-export the scan (a CT scan holds only "
            "finite Hounsfield units)",
            path=str(source),
        )
