"""Scan writers: a HU volume in (x, y, z) order to a DICOM CT series or a MetaImage (.mhd + .raw), atomically."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from naslung.pipeline.errors import DataError

__all__ = ["write_dicom_series", "write_mhd", "RESCALE_INTERCEPT", "RESCALE_SLOPE"]

logger = logging.getLogger(__name__)

#: Rescale tags written into every DICOM slice: stored value * slope + intercept = HU.
RESCALE_INTERCEPT = -1024
RESCALE_SLOPE = 1

# GDCM's UID root; UIDs generated here append a random (or derived) integer to it.
_UID_ROOT = "1.2.826.0.1.3680043.2.1125."


def _as_image(
    hu: np.ndarray, spacing_mm: Sequence[float], origin_mm: Sequence[float], direction: Sequence[float] | None
) -> sitk.Image:
    """Build an int16 SimpleITK image from an (x, y, z) HU array with LPS geometry."""
    array = np.asarray(hu)
    if array.ndim != 3:
        raise DataError(f"expected a 3-D HU volume in (x, y, z) order, got shape {array.shape}; pass one volume")
    if len(spacing_mm) != 3 or len(origin_mm) != 3:
        raise DataError(f"spacing_mm and origin_mm need 3 values (x, y, z), got {spacing_mm} and {origin_mm}")
    if np.any(np.asarray(spacing_mm, dtype=float) <= 0):
        raise DataError(f"spacing_mm must be positive, got {tuple(spacing_mm)}")
    if np.issubdtype(array.dtype, np.floating):
        array = np.rint(array)
    array = np.clip(array, -32768, 32767).astype(np.int16)
    # SimpleITK arrays are (z, y, x); ours are (x, y, z).
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing_mm))
    image.SetOrigin(tuple(float(o) for o in origin_mm))
    if direction is not None:
        flat = np.asarray(direction, dtype=float).reshape(-1)
        if flat.size != 9:
            raise DataError(f"direction must be a 3x3 matrix (9 values, row-major), got {flat.size} values")
        image.SetDirection(tuple(flat.tolist()))
    return image


@contextlib.contextmanager
def _atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` (a folder) by renames."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the series folder should read like any other
        yield tmp
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if len(text) > 16:
        text = f"{value:.8g}"
    return text


def write_dicom_series(
    hu: np.ndarray,
    spacing_mm: Sequence[float],
    origin_mm: Sequence[float],
    out_dir: str | os.PathLike,
    *,
    patient_id: str,
    series_uid: str,
    study_uid: str | None = None,
    direction: Sequence[float] | None = None,
) -> Path:
    """Write a HU volume as a DICOM CT series, one file per slice, into ``out_dir`` (replaced atomically).

    Pixels are stored with ``RescaleSlope`` 1 and ``RescaleIntercept`` -1024 (SimpleITK's GDCM writer takes
    HU and applies the inverse rescale), so ``stored * slope + intercept == HU``; HU is rounded and clipped
    to [-32768, 31743] (what int16 storage with that intercept can hold). Slice ``k`` gets
    ``ImagePositionPatient`` = world position of voxel (0, 0, k).

    Args:
        hu: (X, Y, Z) volume in Hounsfield units, (x, y, z) = (column, row, slice) index order.
        spacing_mm: (x, y, z) voxel spacing in mm; z is the slice spacing and is written as SliceThickness.
        origin_mm: (x, y, z) LPS world position in mm of voxel (0, 0, 0).
        out_dir: the series folder to create; an existing folder of that name is replaced.
        patient_id: DICOM PatientID (0010,0020).
        series_uid: SeriesInstanceUID (0020,000E).
        study_uid: StudyInstanceUID (0020,000D); when None, derived from ``series_uid`` (stable across runs).
        direction: 3x3 direction cosines, row-major (SimpleITK convention); identity when None.

    Returns:
        the series folder ``out_dir``.

    Raises:
        DataError: bad shape, spacing or direction.
    """
    hu_max = np.iinfo(np.int16).max + RESCALE_INTERCEPT  # stored = HU - intercept must fit int16
    hu = np.asarray(hu)
    if hu.size and float(hu.max()) > hu_max:
        logger.warning("HU above %d cannot be stored with RescaleIntercept %d; clipped", hu_max, RESCALE_INTERCEPT)
        hu = np.minimum(hu, hu_max)
    image = _as_image(hu, spacing_mm, origin_mm, direction)
    target = Path(out_dir)
    study = study_uid or _generate_uid(f"study-of-{series_uid}")
    dcm_direction = image.GetDirection()
    orientation = "\\".join(_ds(v) for v in (*dcm_direction[0:7:3], *dcm_direction[1:8:3]))
    date = "20000101"
    series_tags = [
        ("0008|0060", "CT"),
        ("0008|0008", "ORIGINAL\\PRIMARY\\AXIAL"),
        ("0008|0016", "1.2.840.10008.5.1.4.1.1.2"),  # CT Image Storage
        ("0008|0020", date),
        ("0008|0021", date),
        ("0008|0030", "000000"),
        ("0008|0031", "000000"),
        ("0008|103e", "naslung synthetic CT"),
        ("0010|0010", patient_id),
        ("0010|0020", patient_id),
        ("0020|000d", study),
        ("0020|000e", series_uid),
        ("0020|0010", "1"),
        ("0020|0011", "1"),
        ("0020|0037", orientation),
        ("0018|0050", _ds(image.GetSpacing()[2])),
        ("0018|0088", _ds(image.GetSpacing()[2])),
        ("0028|1052", str(RESCALE_INTERCEPT)),
        ("0028|1053", str(RESCALE_SLOPE)),
        ("0028|1054", "HU"),
    ]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # keep the series/study UIDs set above
    n_slices = image.GetDepth()
    with _atomic_dir(target) as tmp:
        for k in range(n_slices):
            slice_image = image[:, :, k]
            for tag, value in series_tags:
                slice_image.SetMetaData(tag, value)
            position = image.TransformIndexToPhysicalPoint((0, 0, k))
            slice_image.SetMetaData("0020|0032", "\\".join(_ds(p) for p in position))
            slice_image.SetMetaData("0020|1041", _ds(position[2]))
            slice_image.SetMetaData("0020|0013", str(k + 1))
            slice_image.SetMetaData("0008|0018", f"{series_uid}.{k + 1}"[:64])
            writer.SetFileName(str(tmp / f"{k + 1:04d}.dcm"))
            writer.Execute(slice_image)
    logger.debug("wrote DICOM series %s (%d slices) to %s", series_uid, n_slices, target)
    return target


def _generate_uid(text: str | None = None) -> str:
    """A DICOM UID (at most 64 characters): random, or derived from ``text`` (the same text, the same UID)."""
    import hashlib
    import uuid

    number = uuid.uuid4().int if text is None else int(hashlib.sha256(text.encode()).hexdigest()[:24], 16)
    return (_UID_ROOT + str(number))[:64]


def write_mhd(
    hu: np.ndarray,
    spacing_mm: Sequence[float],
    origin_mm: Sequence[float],
    path: str | os.PathLike,
    direction: Sequence[float] | None = None,
) -> Path:
    """Write a HU volume as MetaImage ``path`` (.mhd header + .raw int16 data beside it), atomically.

    Both files are written under a temporary folder beside the target and moved into place, the .raw first
    and the .mhd header last, so a readable .mhd always points at complete data.

    Args:
        hu: (X, Y, Z) volume in Hounsfield units, (x, y, z) index order.
        spacing_mm: (x, y, z) voxel spacing in mm.
        origin_mm: (x, y, z) LPS world position in mm of voxel (0, 0, 0).
        path: the .mhd file to write.
        direction: 3x3 direction cosines, row-major; identity when None.

    Returns:
        the .mhd path.

    Raises:
        DataError: bad shape, spacing, direction or file suffix.
    """
    target = Path(path)
    if target.suffix.lower() != ".mhd":
        raise DataError("write_mhd writes a .mhd header with a .raw file; give a path ending in .mhd", path=str(path))
    image = _as_image(hu, spacing_mm, origin_mm, direction)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        sitk.WriteImage(image, str(tmp / target.name), useCompression=False)
        raw = target.with_suffix(".raw")
        os.replace(tmp / raw.name, raw)
        os.replace(tmp / target.name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.debug("wrote %s", target)
    return target
