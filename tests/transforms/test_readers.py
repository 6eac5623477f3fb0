"""SimpleITKReader: same arrays/affines as MONAI's NibabelReader for NIfTI, ITK conventions for .mhd and DICOM."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monai.data.utils import orientation_ras_lps
from monai.transforms import LoadImage, LoadImaged

from naslung.pipeline.errors import DataError
from naslung.transforms import SimpleITKReader


def _rigid_affine_ras(spacing, origin, rotation_deg: float) -> np.ndarray:
    theta = np.deg2rad(rotation_deg)
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


# [spacing mm, origin mm (RAS), rotation about z in degrees, dtype]
TEST_CASES_NIFTI = [
    [(0.7, 0.8, 2.5), (-100.0, 50.0, -200.0), 0.0, np.int16],
    [(1.0, 1.0, 1.0), (12.5, -3.0, 7.0), 30.0, np.float32],
]


@pytest.mark.parametrize("spacing, origin, rotation_deg, dtype", TEST_CASES_NIFTI)
def test_nifti_matches_nibabel_reader(tmp_path, spacing, origin, rotation_deg, dtype):
    rng = np.random.default_rng(1)
    data = rng.integers(-1000, 1000, size=(9, 7, 5)).astype(dtype)
    affine = _rigid_affine_ras(spacing, origin, rotation_deg)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path = str(tmp_path / "scan.nii.gz")
    nib.save(image, path)

    by_nibabel = LoadImaged("image", reader="NibabelReader", image_only=True)({"image": path})["image"]
    by_sitk = LoadImaged("image", reader=SimpleITKReader(), image_only=True)({"image": path})["image"]
    assert by_sitk.shape == by_nibabel.shape == data.shape
    np.testing.assert_array_equal(by_sitk.numpy(), by_nibabel.numpy())
    np.testing.assert_allclose(by_sitk.affine.numpy(), by_nibabel.affine.numpy(), atol=1e-4)
    assert by_sitk.meta["space"] == "RAS"


def _mhd(tmp_path, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> tuple[str, np.ndarray, np.ndarray]:
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)  # (x, y, z)
    image = sitk.GetImageFromArray(data.transpose(2, 1, 0))
    image.SetSpacing((0.7, 0.75, 2.0))
    image.SetOrigin((-150.0, -120.0, -310.0))
    image.SetDirection(direction)
    path = str(tmp_path / "scan.mhd")
    sitk.WriteImage(image, path)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = np.asarray(direction, float).reshape(3, 3) @ np.diag([0.7, 0.75, 2.0])
    affine_lps[:3, 3] = (-150.0, -120.0, -310.0)
    return path, data, affine_lps


# [reader kwargs, expected space, convert expected LPS affine to RAS]
TEST_CASES_MHD = [
    [{}, "RAS", True],
    [{"affine_lps_to_ras": False}, "LPS", False],
]


@pytest.mark.parametrize("kwargs, space, to_ras", TEST_CASES_MHD)
@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (0, -1, 0, 1, 0, 0, 0, 0, 1)])
def test_mhd_array_order_and_affine(tmp_path, kwargs, space, to_ras, direction):
    path, data, affine_lps = _mhd(tmp_path, direction)
    image = LoadImage(reader=SimpleITKReader(**kwargs), image_only=True, dtype=None)(path)
    np.testing.assert_array_equal(image.numpy(), data)
    expected = orientation_ras_lps(affine_lps) if to_ras else affine_lps
    np.testing.assert_allclose(image.affine.numpy(), expected, atol=1e-9)
    np.testing.assert_allclose(image.meta["original_affine"], expected, atol=1e-9)
    np.testing.assert_allclose(image.meta["spacing"], (0.7, 0.75, 2.0))
    np.testing.assert_array_equal(image.meta["spatial_shape"], (6, 5, 4))
    assert image.meta["space"] == space


def test_dicom_series_folder(tmp_path):
    volume = np.random.default_rng(2).integers(-1000, 400, size=(8, 6, 4)).astype(np.int16)  # (x, y, z)
    spacing, origin = (0.6, 0.6, 2.5), (-100.0, -90.0, -50.0)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.shape[2]):
        slice_image = sitk.GetImageFromArray(volume[:, :, k].T[None])[:, :, 0]
        position = (origin[0], origin[1], origin[2] + k * spacing[2])
        for tag, value in {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.3.{k}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.3f}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
        }.items():
            slice_image.SetMetaData(tag, value)
        slice_image.SetSpacing(spacing[:2])
        writer.SetFileName(str(tmp_path / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)
    image = LoadImage(reader=SimpleITKReader(affine_lps_to_ras=False), image_only=True, dtype=None)(str(tmp_path))
    np.testing.assert_array_equal(image.numpy(), volume)
    expected = np.diag([*spacing, 1.0])
    expected[:3, 3] = origin
    np.testing.assert_allclose(image.affine.numpy(), expected, atol=1e-3)


def test_verify_suffix_and_stacking(tmp_path):
    reader = SimpleITKReader()
    assert reader.verify_suffix(["a.mhd", "b.nii.gz", str(tmp_path)])
    assert not reader.verify_suffix("cube.npy")
    path, data, _ = _mhd(tmp_path)
    stacked, meta = reader.get_data(reader.read([path, path]))
    assert stacked.shape == (2, *data.shape) and meta["original_channel_dim"] == 0


@pytest.mark.parametrize("name", ["missing.mhd", "empty_folder"])
def test_unreadable_inputs_raise_data_error(tmp_path, name):
    target = tmp_path / name
    if name == "empty_folder":
        target.mkdir()
    with pytest.raises(DataError, match=name):
        SimpleITKReader().read(str(target))
