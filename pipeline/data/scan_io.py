"""Read CT scans (DICOM series, MetaImage .mhd/.raw, NIfTI) into one validated :class:`ScanVolume`.

Every reader checks its input strictly and raises :class:`~naslung.pipeline.errors.DataError` naming the file,
the problem and a fix: unreadable or truncated files, missing or duplicated slices, inconsistent spacing or
orientation, several series in one folder, non-CT modality, NaN/inf voxels and volumes that are not 3D.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from naslung.pipeline.data.dicom_series import read_dicom_series
from naslung.pipeline.data.scan_volume import (
    DICOM_SUFFIXES,
    MHD_SUFFIXES,
    NIFTI_SUFFIXES,
    ScanVolume,
    check_finite,
    make_affine,
)
from naslung.pipeline.errors import DataError

__all__ = ["read_mhd", "read_nifti", "scan_kind", "read_scan"]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------- MetaImage, NIfTI

_MET_BYTES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 8,
    "MET_ULONG": 8,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}
_NON_CT_MODALITIES = {"MET_MOD_MR", "MET_MOD_NM", "MET_MOD_US", "MET_MOD_OTHER"}


def _read_mhd_header(path: Path) -> dict[str, str]:
    """Parse the ``key = value`` lines of a MetaImage header (up to ElementDataFile)."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="latin-1") as handle:
            for line in handle:
                if "=" not in line:
                    continue
                key, value = line.split("=", 1)
                fields[key.strip()] = value.strip()
                if key.strip() == "ElementDataFile":
                    break
    except OSError as err:
        raise DataError(f"cannot open the MetaImage header ({err})", path=str(path)) from err
    return fields


def _check_mhd_header(path: Path, fields: dict[str, str]) -> None:
    """Check dimensionality, modality and that the .raw data file exists and is complete."""
    if "NDims" not in fields or "DimSize" not in fields:
        raise DataError(
            "not a MetaImage header (NDims/DimSize missing); pass the .mhd header of a LUNA16 scan", path=str(path)
        )
    ndims = int(fields["NDims"])
    dims = [int(v) for v in fields["DimSize"].split()]
    if ndims != 3:
        raise DataError(
            f"image is {ndims}D with size {dims}; a CT scan must be a 3D volume (save one 3D volume per file)",
            path=str(path),
        )
    channels = int(fields.get("ElementNumberOfChannels", "1") or 1)
    if channels != 1:
        raise DataError(f"image has {channels} channels per voxel; expected a scalar CT volume", path=str(path))
    modality = fields.get("Modality", "").upper()
    if modality in _NON_CT_MODALITIES:
        raise DataError(f"modality is {modality}, not CT; naslung reads CT scans only", path=str(path))
    data_file = fields.get("ElementDataFile", "")
    if data_file in ("", "LOCAL") or data_file.upper().startswith("LIST") or "%" in data_file:
        return
    raw = path.parent / data_file
    if not raw.exists():
        raise DataError(
            f"the data file {data_file} named by ElementDataFile is missing; keep the .raw next to its .mhd",
            path=str(path),
        )
    compressed = fields.get("CompressedData", "False").lower() == "true"
    element = fields.get("ElementType", "")
    if not compressed and element in _MET_BYTES:
        expected = int(np.prod(dims)) * _MET_BYTES[element] * channels
        skip = int(fields.get("HeaderSize", "0") or 0)
        size = raw.stat().st_size
        if skip >= 0 and size < expected + skip:
            raise DataError(
                f"data file {raw.name} is truncated: {size} bytes, but {dims} voxels of {element} need {expected}; "
                "download or copy the .raw again",
                path=str(path),
            )


def read_mhd(path: str | os.PathLike) -> ScanVolume:
    """Read a MetaImage scan (LUNA16's ``<seriesuid>.mhd`` + ``.raw``) with SimpleITK.

    Args:
        path: the ``.mhd`` (or ``.mha``) file.

    Returns:
        the volume; ``series_uid`` is the file stem, as LUNA16 names its files.

    Raises:
        DataError: missing or truncated data file, not 3D, non-CT modality, unreadable file, NaN/inf voxels.
    """
    import SimpleITK as sitk

    source = Path(path)
    if not source.is_file():
        raise DataError("file does not exist; check the path", path=str(source))
    if source.suffix.lower() == ".mhd":
        _check_mhd_header(source, _read_mhd_header(source))
    try:
        image = sitk.ReadImage(str(source))
    except RuntimeError as err:
        raise DataError(
            f"SimpleITK cannot read this MetaImage ({str(err).strip().splitlines()[-1]}); check the header and "
            "its data file",
            path=str(source),
        ) from err
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"image is {image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} component(s); a CT "
            "scan must be a scalar 3D volume",
            path=str(source),
        )
    array = sitk.GetArrayFromImage(image)  # (Z, Y, X)
    hu = np.ascontiguousarray(np.transpose(array, (2, 1, 0)), dtype=np.float32)
    check_finite(hu, source)
    spacing = tuple(float(v) for v in image.GetSpacing())
    origin = tuple(float(v) for v in image.GetOrigin())
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    return ScanVolume(
        hu=hu,
        affine=make_affine(spacing, origin, direction),
        spacing_mm=spacing,  # type: ignore[arg-type]
        origin_mm=origin,  # type: ignore[arg-type]
        direction=direction,
        source=source,
        series_uid=_strip_suffixes(source.name, MHD_SUFFIXES),
        patient_id="",
    )


_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_nifti(path: str | os.PathLike) -> ScanVolume:
    """Read a NIfTI scan with nibabel, converting its RAS world frame to DICOM LPS.

    Args:
        path: ``.nii`` or ``.nii.gz`` file; trailing singleton dimensions beyond three are dropped.

    Returns:
        the volume; ``series_uid`` is the file name without ``.nii``/``.nii.gz``.

    Raises:
        DataError: unreadable or truncated file, not 3D, NaN/inf voxels.
    """
    import nibabel as nib

    source = Path(path)
    if not source.is_file():
        raise DataError("file does not exist; check the path", path=str(source))
    try:
        image = nib.load(str(source))
        shape = tuple(int(s) for s in image.shape)
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) != 3:
            raise DataError(
                f"image has shape {tuple(image.shape)} ({len(shape)}D); a CT scan must be a 3D volume: save one "
                "3D volume per file",
                path=str(source),
            )
        data = np.asarray(image.get_fdata(dtype=np.float32)).reshape(shape)
    except DataError:
        raise
    except Exception as err:  # nibabel/gzip/zlib raise several types for damaged files
        raise DataError(
            f"unreadable NIfTI file ({type(err).__name__}: {err}); the file is damaged or cut short: copy it again",
            path=str(source),
        ) from err
    hu = np.ascontiguousarray(data, dtype=np.float32)
    check_finite(hu, source)
    affine = _RAS_TO_LPS @ np.asarray(image.affine, dtype=np.float64)
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    if min(spacing) <= 0:
        raise DataError(f"the affine has a zero-length axis (spacing {spacing}); fix the header", path=str(source))
    direction = affine[:3, :3] / np.asarray(spacing)[None, :]
    return ScanVolume(
        hu=hu,
        affine=affine,
        spacing_mm=spacing,  # type: ignore[arg-type]
        origin_mm=tuple(float(v) for v in affine[:3, 3]),  # type: ignore[arg-type]
        direction=direction,
        source=source,
        series_uid=_strip_suffixes(source.name, NIFTI_SUFFIXES),
        patient_id="",
    )


def _strip_suffixes(name: str, suffixes: Iterable[str]) -> str:
    """Drop the first matching (case-insensitive) suffix from a file name."""
    for suffix in sorted(suffixes, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def scan_kind(path: str | os.PathLike) -> str:
    """``"dicom"`` for a folder, ``"mhd"`` for .mhd/.mha, ``"nifti"`` for .nii/.nii.gz.

    Raises:
        DataError: for any other path (with the formats that are read).
    """
    target = Path(path)
    name = target.name.lower()
    if target.is_dir():
        return "dicom"
    if name.endswith(MHD_SUFFIXES):
        return "mhd"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if not target.exists():
        raise DataError("path does not exist; check it", path=str(target))
    if name.endswith(DICOM_SUFFIXES):
        raise DataError("this is one DICOM slice; pass the folder holding every slice of the series", path=str(target))
    raise DataError(
        "unsupported scan format; pass a DICOM series folder, a .mhd/.mha MetaImage or a .nii/.nii.gz file",
        path=str(target),
    )


def read_scan(path: str | os.PathLike, series_uid: str | None = None) -> ScanVolume:
    """Read any supported scan, dispatching on :func:`scan_kind`.

    Args:
        path: a DICOM series folder, a ``.mhd``/``.mha`` file or a ``.nii``/``.nii.gz`` file.
        series_uid: for DICOM folders holding several series, the one to read.

    Raises:
        DataError: see the individual readers.
    """
    kind = scan_kind(path)
    if kind == "dicom":
        return read_dicom_series(path, series_uid=series_uid)
    if kind == "mhd":
        return read_mhd(path)
    return read_nifti(path)
