"""Read CT scans (DICOM series, MetaImage .mhd/.raw, NIfTI) into one validated :class:`ScanVolume`.

Every reader checks its input strictly and raises :class:`~naslung.pipeline.errors.DataError` naming the file,
the problem and a fix: unreadable or truncated files, missing or duplicated slices, inconsistent spacing or
orientation, several series in one folder, non-CT modality, NaN/inf voxels and volumes that are not 3D.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.errors import DataError

__all__ = [
    "ScanVolume",
    "make_affine",
    "is_dicom_file",
    "list_dicom_series",
    "read_dicom_series",
    "volume_from_dicom_datasets",
    "read_mhd",
    "read_nifti",
    "read_scan",
    "scan_kind",
    "DICOM_SUFFIXES",
    "MHD_SUFFIXES",
    "NIFTI_SUFFIXES",
]

logger = logging.getLogger(__name__)

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
MHD_SUFFIXES: tuple[str, ...] = (".mhd", ".mha")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")

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


def _check_finite(hu: np.ndarray, source: Path) -> None:
    """Raise when the volume holds NaN or infinite voxels."""
    finite = np.isfinite(hu)
    if not finite.all():
        bad = int(hu.size - np.count_nonzero(finite))
        raise DataError(
            f"{bad} of {hu.size} voxels are NaN or infinite; repair or re-export the scan (a CT scan holds only "
            "finite Hounsfield units)",
            path=str(source),
        )


# --------------------------------------------------------------------------------------------- DICOM headers


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
    _check_finite(hu, source)
    return ScanVolume(
        hu=hu,
        affine=make_affine(spacing, origin, direction),
        spacing_mm=spacing,
        origin_mm=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=direction,
        source=source,
        series_uid=uid,
        patient_id=ordered[0].patient_id,
        slice_files=tuple(h.path for h in ordered),
    )


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
    _check_finite(hu, source_path)
    return ScanVolume(
        hu=hu,
        affine=make_affine(spacing, origin, direction),
        spacing_mm=spacing,
        origin_mm=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=direction,
        source=source_path,
        series_uid=uids[0],
        patient_id=ordered[0].patient_id,
        slice_files=tuple(h.path for h in ordered),
    )


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
    _check_finite(hu, source)
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
    _check_finite(hu, source)
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
