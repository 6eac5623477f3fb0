"""Read a DICOM CT series into a :class:`~naslung.pipeline.data.scan_volume.ScanVolume`: find the series of a
folder, check its slices (missing, duplicated, unevenly spaced, tilted) and stack them in patient order."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.data.scan_volume import DICOM_SUFFIXES, ScanVolume, check_finite, make_affine
from naslung.pipeline.errors import DataError

__all__ = [
    "DUPLICATE_TOLERANCE_MM",
    "MISSING_SLICE_FACTOR",
    "SPACING_REL_TOLERANCE",
    "SPACING_ABS_TOLERANCE_MM",
    "LATERAL_DRIFT_TOLERANCE_MM",
    "is_dicom_file",
    "list_dicom_series",
    "read_dicom_series",
    "volume_from_dicom_datasets",
]

logger = logging.getLogger(__name__)

#: Two slices closer than this along the slice normal are the same slice (mm).
DUPLICATE_TOLERANCE_MM = 1e-3
#: A gap between neighbouring slices longer than this many nominal steps means slices are missing.
MISSING_SLICE_FACTOR = 1.5
#: Slice steps may differ from the median step by this fraction (plus :data:`SPACING_ABS_TOLERANCE_MM`).
SPACING_REL_TOLERANCE = 0.05
SPACING_ABS_TOLERANCE_MM = 0.01
#: Neighbouring slice origins may drift sideways (gantry tilt, shear) by at most this much (mm).
LATERAL_DRIFT_TOLERANCE_MM = 0.1


@dataclass(frozen=True)
class _SliceHeader:
    """What the geometry checks need from one DICOM file (read without its pixel data)."""

    path: Path
    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    frames: int
    instance_number: int


def is_dicom_file(path: Path) -> bool:
    """True for files with a DICOM suffix or the ``DICM`` magic at byte 128."""
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _dicom_candidates(folder: Path) -> list[Path]:
    """The files directly in ``folder`` that claim to be DICOM (hidden files, XML, text are skipped)."""
    files = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if is_dicom_file(entry):
            files.append(entry)
        else:
            logger.debug("skipping %s: not a DICOM file", entry)
    return files


def _header_from_dataset(ds: Any, path: Path) -> _SliceHeader:
    """Pull the geometry fields out of a pydicom dataset; raise DataError when one is missing."""
    missing = [
        key
        for key in ("SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows")
        if key not in ds
    ]
    if missing:
        raise DataError(
            f"DICOM file lacks {', '.join(missing)}, so its place in the volume is unknown (the file may be cut "
            "short, or not an image slice); copy it again, re-export the series, or remove this file if it is a "
            "report or localizer",
            path=str(path),
        )
    try:
        position = tuple(float(v) for v in ds.ImagePositionPatient)
        orientation = tuple(float(v) for v in ds.ImageOrientationPatient)
        pixel_spacing = tuple(float(v) for v in ds.PixelSpacing)
    except (TypeError, ValueError) as err:
        raise DataError(f"unreadable geometry tags ({err}); re-export the series", path=str(path)) from err
    if len(position) != 3 or len(orientation) != 6 or len(pixel_spacing) != 2:
        raise DataError(
            "ImagePositionPatient/ImageOrientationPatient/PixelSpacing have the wrong number of values; re-export "
            "the series",
            path=str(path),
        )
    return _SliceHeader(
        path=path,
        series_uid=str(ds.SeriesInstanceUID).strip(),
        study_uid=str(ds.get("StudyInstanceUID", "")).strip(),
        patient_id=str(ds.get("PatientID", "")).strip(),
        modality=str(ds.get("Modality", "")).strip().upper(),
        position=position,  # type: ignore[arg-type]
        orientation=orientation,
        pixel_spacing=pixel_spacing,  # type: ignore[arg-type]
        rows=int(ds.Rows),
        columns=int(ds.get("Columns", 0) or 0),
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        instance_number=int(ds.get("InstanceNumber", 0) or 0),
    )


def _read_header(path: Path) -> _SliceHeader:
    """Read one DICOM file's header (pixel data deferred) and check that its pixel data is complete."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, defer_size=1024)
    except Exception as err:  # pydicom raises many types for damaged files
        raise DataError(
            f"unreadable DICOM file ({type(err).__name__}: {err}); the file is damaged or cut short: copy it again "
            "from the source or delete it if it does not belong to the series",
            path=str(path),
        ) from err
    header = _header_from_dataset(ds, path)
    if "PixelData" not in ds:
        raise DataError(
            "DICOM file has no pixel data (cut short, or not an image); remove it from the series folder or copy "
            "it again",
            path=str(path),
        )
    raw = ds.get_item(0x7FE00010, keep_deferred=True)
    length = getattr(raw, "length", None)
    value_tell = getattr(raw, "value_tell", None)
    if length is not None and value_tell is not None and length != 0xFFFFFFFF:
        size = os.path.getsize(path)
        if value_tell + length > size:
            raise DataError(
                f"DICOM file is truncated: its pixel data needs {length} bytes from offset {value_tell} but the file "
                f"has {size} bytes; copy the file again from the source",
                path=str(path),
            )
        bits = int(ds.get("BitsAllocated", 16) or 16)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        expected = header.rows * header.columns * header.frames * samples * bits // 8
        if length < expected:
            raise DataError(
                f"DICOM pixel data holds {length} bytes but {header.rows}x{header.columns} pixels need {expected}; "
                "the file is damaged: copy it again from the source",
                path=str(path),
            )
    return header


def _index_folder(folder: Path) -> dict[str, list[_SliceHeader]]:
    """Read every DICOM header in ``folder`` and group them by SeriesInstanceUID."""
    if not folder.exists():
        raise DataError("folder does not exist; check the path", path=str(folder))
    if not folder.is_dir():
        raise DataError("expected a folder holding one DICOM series", path=str(folder))
    series: dict[str, list[_SliceHeader]] = {}
    for path in _dicom_candidates(folder):
        header = _read_header(path)
        series.setdefault(header.series_uid, []).append(header)
    return series


def list_dicom_series(folder: str | os.PathLike) -> dict[str, list[Path]]:
    """List the DICOM series directly in ``folder``.

    Args:
        folder: a folder of DICOM files (not searched recursively).

    Returns:
        SeriesInstanceUID -> the files of that series (empty dict when the folder holds no DICOM file).

    Raises:
        DataError: when the folder is missing or a DICOM file in it is unreadable or truncated.
    """
    return {uid: [h.path for h in headers] for uid, headers in _index_folder(Path(folder)).items()}


def _choose_series(
    series: dict[str, list[_SliceHeader]], folder: Path, series_uid: str | None
) -> tuple[str, list[_SliceHeader]]:
    """Pick one series from a folder's index, or explain why none can be picked."""
    if not series:
        raise DataError(
            "no DICOM files found (expected *.dcm files or files with the DICM marker); point to the folder that "
            "holds the slices of one series",
            path=str(folder),
        )
    if series_uid is not None:
        if series_uid not in series:
            raise DataError(
                f"series {series_uid} is not in this folder; it holds {', '.join(sorted(series))}", path=str(folder)
            )
        return series_uid, series[series_uid]
    if len(series) > 1:
        listing = "; ".join(f"{uid} ({len(h)} files)" for uid, h in sorted(series.items()))
        raise DataError(
            f"folder holds {len(series)} DICOM series: {listing}; pass series_uid=... to choose one, or move each "
            "series into its own folder",
            path=str(folder),
        )
    return next(iter(series.items()))


def _sorted_geometry(
    headers: Sequence[_SliceHeader], source: Path
) -> tuple[list[_SliceHeader], tuple[float, float, float], np.ndarray, np.ndarray]:
    """Check one series' per-slice geometry and sort its slices along the slice normal.

    Returns:
        (slices sorted along the normal, spacing_mm (i, j, k), origin_mm (3,), direction (3, 3)).

    Raises:
        DataError: non-CT modality, 2D or multi-frame data, inconsistent orientation/pixel spacing/size,
            duplicated slices, missing slices, uneven slice spacing or sideways slice drift.
    """
    if not headers:
        raise DataError("no DICOM slices to read; point to a folder holding one CT series", path=str(source))
    modalities = sorted({h.modality or "<missing>" for h in headers})
    if modalities != ["CT"]:
        raise DataError(
            f"modality is {', '.join(modalities)}, not CT; naslung reads CT series only (check that the folder "
            "holds the CT series and not e.g. a PET, MR or secondary-capture series)",
            path=str(source),
        )
    multi = [h for h in headers if h.frames > 1]
    if multi:
        raise DataError(
            f"multi-frame DICOM ({multi[0].frames} frames in {multi[0].path.name}) is not supported; convert the "
            "series to NIfTI (e.g. with dcm2niix) and read the .nii.gz",
            path=str(source),
        )
    if len(headers) < 2:
        raise DataError(
            f"series has a single slice ({headers[0].path.name}): a 2D image, not a CT volume; point to a folder "
            "with all slices of the series",
            path=str(source),
        )
    first = headers[0]
    for h in headers[1:]:
        if not np.allclose(h.orientation, first.orientation, atol=1e-4):
            raise DataError(
                f"inconsistent ImageOrientationPatient: {first.path.name} has {first.orientation}, {h.path.name} has "
                f"{h.orientation}; the folder mixes acquisitions: separate them or re-export the series",
                path=str(source),
            )
        if not np.allclose(h.pixel_spacing, first.pixel_spacing, atol=1e-4):
            raise DataError(
                f"inconsistent PixelSpacing: {first.path.name} has {first.pixel_spacing}, {h.path.name} has "
                f"{h.pixel_spacing}; re-export the series",
                path=str(source),
            )
        if (h.rows, h.columns) != (first.rows, first.columns):
            raise DataError(
                f"inconsistent image size: {first.path.name} is {first.rows}x{first.columns}, {h.path.name} is "
                f"{h.rows}x{h.columns}; remove the odd file (a localizer?) or re-export the series",
                path=str(source),
            )
    row_dir = np.asarray(first.orientation[:3], dtype=np.float64)
    col_dir = np.asarray(first.orientation[3:], dtype=np.float64)
    normal = np.cross(row_dir, col_dir)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise DataError(
            f"ImageOrientationPatient {first.orientation} is not two orthogonal unit vectors; re-export the series",
            path=str(source),
        )
    positions = np.asarray([h.position for h in headers], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    ordered = [headers[i] for i in order]
    along = along[order]
    positions = positions[order]
    steps = np.diff(along)
    for n, step in enumerate(steps):
        if step < DUPLICATE_TOLERANCE_MM:
            a, b = ordered[n], ordered[n + 1]
            raise DataError(
                f"duplicated slice: {a.path.name} and {b.path.name} are both at position {a.position} (instance "
                f"{a.instance_number} and {b.instance_number}); delete one of them (e.g. a repeated export)",
                path=str(source),
            )
    step_mm = float(np.median(steps))
    for n, step in enumerate(steps):
        if step > MISSING_SLICE_FACTOR * step_mm:
            a, b = ordered[n], ordered[n + 1]
            missing = max(1, round(step / step_mm) - 1)
            raise DataError(
                f"missing slices: a gap of {step:.3f} mm between {a.path.name} (at {along[n]:.3f} mm) and "
                f"{b.path.name} (at {along[n + 1]:.3f} mm) where slices are {step_mm:.3f} mm apart (about {missing} "
                "slice(s) missing); copy the complete series again",
                path=str(source),
            )
    tolerance = SPACING_REL_TOLERANCE * step_mm + SPACING_ABS_TOLERANCE_MM
    worst = int(np.argmax(np.abs(steps - step_mm)))
    if abs(steps[worst] - step_mm) > tolerance:
        raise DataError(
            f"inconsistent slice spacing: {steps.min():.3f} to {steps.max():.3f} mm (median {step_mm:.3f} mm; e.g. "
            f"{steps[worst]:.3f} mm between {ordered[worst].path.name} and {ordered[worst + 1].path.name}); "
            "resample the series to even spacing or exclude it",
            path=str(source),
        )
    lateral = np.diff(positions, axis=0) - steps[:, None] * normal[None, :]
    drift = float(np.abs(lateral).max())
    if drift > LATERAL_DRIFT_TOLERANCE_MM:
        raise DataError(
            f"slice origins drift sideways by up to {drift:.3f} mm between neighbours (gantry tilt or sheared "
            "series); resample the series onto an orthogonal grid before use",
            path=str(source),
        )
    row_mm, col_mm = first.pixel_spacing  # DICOM: spacing between rows (along j), between columns (along i)
    spacing = (float(col_mm), float(row_mm), step_mm)
    direction = np.stack([row_dir, col_dir, normal], axis=1)
    return ordered, spacing, positions[0], direction


def _series_volume(
    hu: np.ndarray,
    ordered: Sequence[_SliceHeader],
    spacing: tuple[float, float, float],
    origin: np.ndarray,
    direction: np.ndarray,
    source: Path,
    series_uid: str,
) -> ScanVolume:
    """The checked volume of a series: ``hu`` (cols, rows, slices) in HU, finite, with the geometry and slice files
    :func:`_sorted_geometry` found.

    Raises:
        DataError: NaN or infinite voxels.
    """
    check_finite(hu, source)
    return ScanVolume(
        hu=hu,
        affine=make_affine(spacing, origin, direction),
        spacing_mm=spacing,
        origin_mm=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=direction,
        source=source,
        series_uid=series_uid,
        patient_id=ordered[0].patient_id,
        slice_files=tuple(h.path for h in ordered),
    )


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> ScanVolume:
    """Read one CT series from a folder of DICOM files.

    The geometry is checked from every file's header (read with pydicom, pixel data skipped) and the pixels are
    read with SimpleITK's ``ImageSeriesReader`` in the checked slice order; SimpleITK applies each file's
    RescaleSlope/RescaleIntercept, so the volume is in Hounsfield units.

    Args:
        folder: folder holding the DICOM files of the series (other files such as LIDC's XML are skipped).
        series_uid: which series to read when the folder holds several.

    Returns:
        the volume, slices ordered along the slice normal (ascending z for axial scans).

    Raises:
        DataError: empty folder, several series and no ``series_uid``, unreadable or truncated files, non-CT
            modality, a single 2D slice, duplicated or missing slices, inconsistent spacing, NaN/inf voxels.
    """
    import SimpleITK as sitk

    source = Path(folder)
    uid, headers = _choose_series(_index_folder(source), source, series_uid)
    ordered, spacing, origin, direction = _sorted_geometry(headers, source)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(h.path) for h in ordered])
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise DataError(
            f"SimpleITK could not read the pixel data ({str(err).strip().splitlines()[-1]}); a file is damaged or "
            "uses an unsupported transfer syntax: re-export the series uncompressed",
            path=str(source),
        ) from err
    array = sitk.GetArrayFromImage(image)  # (Z, Y, X)
    expected = (len(ordered), ordered[0].rows, ordered[0].columns)
    if array.shape != expected:
        raise DataError(
            f"pixel data has shape {array.shape} but the headers describe {expected} (slices, rows, columns); "
            "re-export the series",
            path=str(source),
        )
    hu = np.ascontiguousarray(np.transpose(array, (2, 1, 0)), dtype=np.float32)
    return _series_volume(hu, ordered, spacing, origin, direction, source, uid)


def volume_from_dicom_datasets(datasets: Sequence[Any], source: str | os.PathLike) -> ScanVolume:
    """Build a checked volume from already-loaded pydicom datasets (e.g. pylidc's ``load_all_dicom_images``).

    Args:
        datasets: pydicom datasets with pixel data, one per slice, any order, one series.
        source: the folder they came from (for messages).

    Raises:
        DataError: as :func:`read_dicom_series`, and when the datasets mix series.
    """
    source_path = Path(source)
    if not datasets:
        raise DataError("no DICOM slices were loaded; check the series folder", path=str(source_path))
    headers = []
    by_header: dict[Path, Any] = {}
    for n, ds in enumerate(datasets):
        path = Path(getattr(ds, "filename", None) or source_path / f"slice{n:04d}")
        headers.append(_header_from_dataset(ds, path))
        by_header[path] = ds
    uids = sorted({h.series_uid for h in headers})
    if len(uids) > 1:
        raise DataError(f"the slices mix {len(uids)} series: {', '.join(uids)}", path=str(source_path))
    ordered, spacing, origin, direction = _sorted_geometry(headers, source_path)
    slices = []
    for h in ordered:
        ds = by_header[h.path]
        try:
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as err:
            raise DataError(
                f"cannot decode the pixel data ({type(err).__name__}: {err}); the file is damaged or cut short: copy "
                "it again",
                path=str(h.path),
            ) from err
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        slices.append(pixels * slope + intercept)
    hu = np.ascontiguousarray(np.stack(slices, axis=-1).transpose(1, 0, 2), dtype=np.float32)  # (cols, rows, z)
    return _series_volume(hu, ordered, spacing, origin, direction, source_path, uids[0])
