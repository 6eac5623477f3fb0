"""Scan readers: geometry and HU of good scans, and a clear DataError for every kind of bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from naslung.pipeline.data.dicom_series import list_dicom_series, read_dicom_series, volume_from_dicom_datasets
from naslung.pipeline.data.scan_io import read_mhd, read_nifti, read_scan
from naslung.pipeline.data.scan_volume import ScanVolume
from naslung.pipeline.errors import DataError


def _check_volume(volume: ScanVolume, scan) -> None:
    assert volume.hu.dtype == np.float32
    assert volume.hu.shape == scan.hu.shape
    np.testing.assert_array_equal(volume.hu, scan.hu.astype(np.float32))
    np.testing.assert_allclose(volume.spacing_mm, scan.spacing_mm, atol=1e-5)
    np.testing.assert_allclose(volume.affine, scan.affine, atol=1e-4)
    peak = np.unravel_index(np.argmax(volume.hu), volume.hu.shape)
    np.testing.assert_allclose(volume.voxel_to_world(peak), scan.world(0), atol=1e-4)
    np.testing.assert_allclose(volume.world_to_voxel(scan.world(0)), scan.peaks_ijk[0], atol=1e-4)


def test_read_dicom_series_geometry_and_hu(dicom_scan):
    folder, scan = dicom_scan
    (folder / "annotations.xml").write_text("<LidcReadMessage/>")  # LIDC keeps reader XML beside the slices
    volume = read_dicom_series(folder)
    _check_volume(volume, scan)
    assert volume.series_uid == scan.series_uid
    assert volume.patient_id == scan.patient_id
    assert len(volume.slice_files) == scan.hu.shape[2]
    np.testing.assert_allclose(volume.slice_z_mm()[[0, -1]], [-100.0, -100.0 + 39 * 2.0])
    assert read_scan(folder).hu.shape == scan.hu.shape


def test_dicom_series_order_does_not_depend_on_file_names(dicom_scan):
    folder, scan = dicom_scan
    files = sorted(folder.glob("*.dcm"))
    for n, path in enumerate(reversed(files)):  # file names now run against z
        path.rename(folder / f"x{n:04d}.tmpname")
    for path in folder.glob("*.tmpname"):
        path.rename(path.with_suffix(".dcm"))
    _check_volume(read_dicom_series(folder), scan)


def test_volume_from_pydicom_datasets_matches_reader(dicom_scan):
    folder, scan = dicom_scan
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))[::-1]]
    volume = volume_from_dicom_datasets(datasets, folder)
    _check_volume(volume, scan)
    np.testing.assert_array_equal(volume.hu, read_dicom_series(folder).hu)


def test_rescale_slope_and_intercept_give_hu(dicom_scan):
    folder, scan = dicom_scan
    path = sorted(folder.glob("*.dcm"))[5]
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.astype(np.float64)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -2048
    ds.save_as(path)
    volume = read_dicom_series(folder)
    np.testing.assert_allclose(volume.hu[:, :, 5], (stored * 2 - 2048).T)
    np.testing.assert_array_equal(volume.hu[:, :, 6], scan.hu[:, :, 6])


def test_read_mhd_and_nifti(tmp_path, synthetic_scan):
    scan = synthetic_scan(shape=(40, 36, 20))
    path = scan.write_mhd(tmp_path / f"{scan.series_uid}.mhd")
    volume = read_mhd(path)
    _check_volume(volume, scan)
    assert volume.series_uid == scan.series_uid

    ras_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ scan.affine
    nib.save(nib.Nifti1Image(scan.hu, ras_affine), tmp_path / "scan.nii.gz")
    volume = read_scan(tmp_path / "scan.nii.gz")
    _check_volume(volume, scan)
    assert volume.series_uid == "scan"


def test_several_series_in_one_folder_choose_by_uid(tmp_path, synthetic_scan):
    a = synthetic_scan(series_uid="1.2.3.1", shape=(24, 24, 6))
    b = synthetic_scan(series_uid="1.2.3.2", shape=(24, 24, 8))
    a.write_dicom(tmp_path / "a")
    b.write_dicom(tmp_path / "b")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for folder in ("a", "b"):
        for path in (tmp_path / folder).glob("*.dcm"):
            shutil.copy(path, mixed / f"{folder}{path.name}")
    with pytest.raises(DataError, match=r"holds 2 DICOM series: 1\.2\.3\.1 \(6 files\); 1\.2\.3\.2 \(8 files\)") as err:
        read_dicom_series(mixed)
    assert "series_uid" in str(err.value) and str(mixed) in str(err.value)
    assert read_dicom_series(mixed, series_uid="1.2.3.2").hu.shape == (24, 24, 8)
    assert {uid: len(files) for uid, files in list_dicom_series(mixed).items()} == {"1.2.3.1": 6, "1.2.3.2": 8}
    with pytest.raises(DataError, match="series 9.9 is not in this folder"):
        read_dicom_series(mixed, series_uid="9.9")


# ------------------------------------------------------------------------------------------ bad DICOM series


def _slices(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def _truncate(folder: Path) -> str:
    path = _slices(folder)[7]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 300])  # inside the pixel data
    return path.name


def _cut_header(folder: Path) -> str:
    path = _slices(folder)[3]
    path.write_bytes(path.read_bytes()[:200])
    return path.name


def _cut_before_pixels(folder: Path) -> str:
    path = _slices(folder)[3]
    path.write_bytes(path.read_bytes()[:700])  # inside the data set, before the pixel data
    return path.name


def _garbage(folder: Path) -> str:
    (folder / "zzz.dcm").write_text("this is not a DICOM file\n")
    return "zzz.dcm"


def _missing_slice(folder: Path) -> str:
    _slices(folder)[10].unlink()
    return "gap of 4.000 mm"


def _duplicate_slice(folder: Path) -> str:
    path = _slices(folder)[12]
    shutil.copy(path, folder / "copy.dcm")
    return "copy.dcm"


def _uneven_spacing(folder: Path) -> str:
    for path in _slices(folder)[20:]:
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 0.5]
        ds.save_as(path)
    return "2.500 mm"


def _pixel_spacing_changes(folder: Path) -> str:
    path = _slices(folder)[4]
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = [0.9, 0.9]
    ds.save_as(path)
    return path.name


def _not_ct(folder: Path) -> str:
    for path in _slices(folder):
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.save_as(path)
    return "MR"


def _single_slice(folder: Path) -> str:
    for path in _slices(folder)[1:]:
        path.unlink()
    return "2D image"


def _empty(folder: Path) -> str:
    for path in _slices(folder):
        path.unlink()
    (folder / "notes.txt").write_text("no images here")
    return str(folder)


def _gantry_tilt(folder: Path) -> str:
    for n, path in enumerate(_slices(folder)):
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.3 * n, z]
        ds.save_as(path)
    return "sideways"


# [corrupt(folder) -> text naming the culprit, words the message must contain]
BAD_DICOM_CASES = [
    [_truncate, "truncated"],
    [_cut_header, "cut short"],
    [_cut_before_pixels, "cut short"],
    [_garbage, "unreadable DICOM file"],
    [_missing_slice, "missing slices"],
    [_duplicate_slice, "duplicated slice"],
    [_uneven_spacing, "inconsistent slice spacing"],
    [_pixel_spacing_changes, "inconsistent PixelSpacing"],
    [_not_ct, "not CT"],
    [_single_slice, "single slice"],
    [_empty, "no DICOM files found"],
    [_gantry_tilt, "gantry tilt"],
]


@pytest.mark.parametrize("corrupt, words", BAD_DICOM_CASES)
def test_bad_dicom_series_raise_clear_errors(tmp_path, synthetic_scan, corrupt, words):
    scan = synthetic_scan(shape=(24, 20, 30))
    folder = scan.write_dicom(tmp_path / "series")
    culprit = corrupt(folder)
    with pytest.raises(DataError) as err:
        read_scan(folder)
    message = str(err.value)
    assert words in message
    assert culprit in message
    assert str(folder) in message  # names the file or folder at fault
    assert ";" in message  # ... and goes on to say what to do


def test_missing_folder_and_single_file(tmp_path, dicom_scan):
    with pytest.raises(DataError, match="does not exist"):
        read_scan(tmp_path / "nope")
    folder, _ = dicom_scan
    with pytest.raises(DataError, match="pass the folder"):
        read_scan(_slices(folder)[0])
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match="unsupported scan format"):
        read_scan(tmp_path / "scan.png")


# ------------------------------------------------------------------------------------------ bad .mhd / NIfTI


def _mhd_truncated_raw(tmp_path: Path, make_scan) -> Path:
    path = make_scan(shape=(16, 16, 8)).write_mhd(tmp_path / "a.mhd")
    raw = path.with_suffix(".raw")
    raw.write_bytes(raw.read_bytes()[:-100])
    return path


def _mhd_missing_raw(tmp_path: Path, make_scan) -> Path:
    path = make_scan(shape=(16, 16, 8)).write_mhd(tmp_path / "a.mhd")
    path.with_suffix(".raw").unlink()
    return path


def _mhd_2d(tmp_path: Path, make_scan) -> Path:
    path = tmp_path / "a.mhd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.int16)), str(path))
    return path


def _mhd_4d(tmp_path: Path, make_scan) -> Path:
    path = tmp_path / "a.mhd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 16, 16), np.int16), isVector=False), str(path))
    return path


def _mhd_nan(tmp_path: Path, make_scan) -> Path:
    hu = np.full((8, 16, 16), -500.0, np.float32)
    hu[3, 4, 5] = np.nan
    hu[2, 2, 2] = np.inf
    path = tmp_path / "a.mhd"
    sitk.WriteImage(sitk.GetImageFromArray(hu), str(path))
    return path


def _mhd_mr(tmp_path: Path, make_scan) -> Path:
    path = make_scan(shape=(16, 16, 8)).write_mhd(tmp_path / "a.mhd")
    text = path.read_text(encoding="utf-8").replace("ElementSpacing", "Modality = MET_MOD_MR\nElementSpacing")
    path.write_text(text)
    return path


def _nifti_4d(tmp_path: Path, make_scan) -> Path:
    path = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.int16), np.eye(4)), path)
    return path


def _nifti_nan(tmp_path: Path, make_scan) -> Path:
    data = np.zeros((8, 8, 4), np.float32)
    data[1, 1, 1] = np.nan
    path = tmp_path / "a.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _nifti_truncated(tmp_path: Path, make_scan) -> Path:
    path = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(32, 32, 16)).astype(np.float32), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:-2000])
    return path


# [make(tmp_path, synthetic_scan) -> bad file, words the message must contain]
BAD_FILE_CASES = [
    [_mhd_truncated_raw, "truncated"],
    [_mhd_missing_raw, "is missing"],
    [_mhd_2d, "2D"],
    [_mhd_4d, "4D"],
    [_mhd_nan, "2 of 2048 voxels are NaN or infinite"],
    [_mhd_mr, "not CT"],
    [_nifti_4d, "4D"],
    [_nifti_nan, "NaN or infinite"],
    [_nifti_truncated, "unreadable NIfTI"],
]


@pytest.mark.parametrize("make, words", BAD_FILE_CASES)
def test_bad_mhd_and_nifti_raise_clear_errors(tmp_path, synthetic_scan, make, words):
    path = make(tmp_path, synthetic_scan)
    with pytest.raises(DataError) as err:
        read_scan(path)
    assert words in str(err.value)
    assert str(path) in str(err.value)


def test_nifti_trailing_singleton_dimension_is_dropped(tmp_path):
    path = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 6, 4, 1), np.int16), np.eye(4)), path)
    assert read_nifti(path).hu.shape == (8, 6, 4)
