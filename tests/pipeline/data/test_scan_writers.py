"""Round-trip tests of the DICOM series and MetaImage writers (values, spacing, origin, slice positions)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from naslung.pipeline.data.scan_writers import RESCALE_INTERCEPT, RESCALE_SLOPE, write_dicom_series, write_mhd
from naslung.pipeline.errors import DataError

# [shape (x, y, z), spacing_mm (x, y, z), origin_mm (x, y, z), dtype]
TEST_CASES = [
    [(12, 10, 4), (0.7, 0.8, 2.5), (-10.0, -20.0, -300.0), np.int16],
    [(9, 11, 6), (0.5, 0.5, 1.25), (170.25, -3.5, 12.0), np.float32],
]


def _volume(shape, dtype):
    rng = np.random.default_rng(7)
    hu = rng.integers(-1024, 2000, size=shape).astype(dtype)
    hu[0, 0, 0] = -1024
    hu[-1, -1, -1] = 3071
    return hu


def _read_series(folder):
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(folder))
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))
    return series_ids, reader.Execute()


@pytest.mark.parametrize("shape, spacing, origin, dtype", TEST_CASES)
def test_dicom_round_trip(tmp_path, shape, spacing, origin, dtype):
    hu = _volume(shape, dtype)
    folder = write_dicom_series(
        hu, spacing, origin, tmp_path / "series", patient_id="LIDC-TEST", series_uid="1.2.3.4.5"
    )
    series_ids, image = _read_series(folder)
    assert series_ids == ("1.2.3.4.5",)
    back = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    np.testing.assert_array_equal(back, hu.astype(np.int32))
    np.testing.assert_allclose(image.GetSpacing(), spacing, atol=1e-5)
    np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-5)

    files = sorted(folder.glob("*.dcm"))
    assert len(files) == shape[2]
    positions_z = []
    for k, name in enumerate(files):
        ds = pydicom.dcmread(name)
        assert ds.Modality == "CT"
        assert ds.PatientID == "LIDC-TEST"
        assert ds.SeriesInstanceUID == "1.2.3.4.5"
        assert float(ds.RescaleIntercept) == RESCALE_INTERCEPT
        assert float(ds.RescaleSlope) == RESCALE_SLOPE
        assert float(ds.SliceThickness) == pytest.approx(spacing[2])
        # PixelSpacing is (row spacing = y, column spacing = x)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [spacing[1], spacing[0]], atol=1e-6)
        stored = ds.pixel_array.astype(np.int32)  # (rows = y, columns = x)
        np.testing.assert_array_equal(stored * RESCALE_SLOPE + RESCALE_INTERCEPT, hu[:, :, k].T.astype(np.int32))
        positions_z.append(float(ds.ImagePositionPatient[2]))
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient[:2]], origin[:2], atol=1e-5)
    np.testing.assert_allclose(sorted(positions_z), origin[2] + spacing[2] * np.arange(shape[2]), atol=1e-5)


def test_dicom_replaces_existing_folder_and_leaves_no_temp(tmp_path):
    hu = _volume((6, 5, 3), np.int16)
    target = tmp_path / "series"
    write_dicom_series(hu, (1, 1, 2), (0, 0, 0), target, patient_id="P", series_uid="1.2.3")
    write_dicom_series(hu[:, :, :2], (1, 1, 2), (0, 0, 0), target, patient_id="P", series_uid="1.2.3")
    assert len(list(target.glob("*.dcm"))) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["series"]


@pytest.mark.parametrize("shape, spacing, origin, dtype", TEST_CASES)
def test_mhd_round_trip(tmp_path, shape, spacing, origin, dtype):
    hu = _volume(shape, dtype)
    path = write_mhd(hu, spacing, origin, tmp_path / "sub" / "scan.mhd")
    assert path.exists() and path.with_suffix(".raw").exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["scan.mhd", "scan.raw"]
    image = sitk.ReadImage(str(path))
    assert image.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), hu.astype(np.int16))
    np.testing.assert_allclose(image.GetSpacing(), spacing, atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-6)
    # slice k sits at origin_z + k * spacing_z
    for k in (0, shape[2] - 1):
        z = image.TransformIndexToPhysicalPoint((0, 0, k))[2]
        assert z == pytest.approx(origin[2] + k * spacing[2])


def test_dicom_clips_hu_that_int16_storage_cannot_hold(tmp_path):
    hu = np.array([-3000, -1024, 0, 3071, 31743, 32767], dtype=np.int16).reshape(6, 1, 1).repeat(2, 1).repeat(2, 2)
    folder = write_dicom_series(hu, (1, 1, 1), (0, 0, 0), tmp_path / "s", patient_id="P", series_uid="1.2.3")
    _, image = _read_series(folder)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[0, 0, :], [-3000, -1024, 0, 3071, 31743, 31743])


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(DataError, match="3-D"):
        write_mhd(np.zeros((4, 4)), (1, 1, 1), (0, 0, 0), tmp_path / "a.mhd")
    with pytest.raises(DataError, match=".mhd"):
        write_mhd(np.zeros((4, 4, 4)), (1, 1, 1), (0, 0, 0), tmp_path / "a.nii")
    with pytest.raises(DataError, match="positive"):
        write_dicom_series(np.zeros((4, 4, 4)), (1, 0, 1), (0, 0, 0), tmp_path / "d", patient_id="P", series_uid="1.2")
    assert not list(tmp_path.iterdir())
