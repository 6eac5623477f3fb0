"""sample_cube_hu, hu_to_unit and ExtractNoduleCube(d): exact on linear fields, region-first == whole-scan, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.data.utils import orientation_ras_lps
from monai.transforms import LoadImaged

from naslung.pipeline.errors import DataError
from naslung.transforms import (
    HU_WINDOW,
    ExtractNoduleCube,
    ExtractNoduleCubed,
    SimpleITKReader,
    cube_affine,
    hu_to_unit,
    resample_scan_hu,
    sample_cube_hu,
)

# [affine kwargs, centre voxel index (float), cube size, cube spacing mm, volume dtype]
TEST_CASES_LINEAR = [
    [{}, (30.3, 40.6, 13.2), 32, 1.0, np.float32],
    [{}, (31.0, 35.0, 14.0), 33, 1.0, np.float32],
    [{"rotation_deg": 25.0}, (33.5, 36.2, 12.7), 16, 1.0, np.float32],
    [{"flip_xy": True}, (25.1, 44.9, 15.5), 21, 0.8, np.float64],
    [{"rotation_deg": -40.0, "flip_xy": True}, (35.0, 30.0, 10.0), 12, 1.5, np.float32],
]


@pytest.mark.parametrize("affine_kwargs, centre_vox, size, spacing_mm, dtype", TEST_CASES_LINEAR)
def test_linear_field_is_sampled_exactly(field, affine_kwargs, centre_vox, size, spacing_mm, dtype):
    affine = field.make_affine(**affine_kwargs)
    volume = field.linear_volume(affine, dtype=dtype)
    centre = field.voxel_to_world(affine, centre_vox)
    cube = sample_cube_hu(volume, affine, centre, size=size, spacing_mm=spacing_mm)
    assert cube.shape == (size,) * 3 and cube.dtype == np.float32
    expected = field.linear_field(field.cube_points(centre, size, spacing_mm))
    np.testing.assert_allclose(cube, expected, atol=1e-2)
    # the cube centre (a voxel for odd sizes, the mean of the 8 central voxels for even ones) is the field at centre
    mid = slice((size - 1) // 2, size // 2 + 1)
    assert abs(float(cube[mid, mid, mid].mean()) - float(field.linear_field(centre))) < 1e-2


@pytest.mark.parametrize("affine_kwargs, centre_vox, size, spacing_mm, dtype", TEST_CASES_LINEAR)
def test_region_first_matches_whole_scan(field, affine_kwargs, centre_vox, size, spacing_mm, dtype):
    affine = field.make_affine(**affine_kwargs)
    volume = field.linear_volume(affine, dtype=dtype)
    centre = field.voxel_to_world(affine, centre_vox)
    fast = sample_cube_hu(volume, affine, centre, size=size, spacing_mm=spacing_mm, region_first=True)
    slow = sample_cube_hu(volume, affine, centre, size=size, spacing_mm=spacing_mm, region_first=False)
    assert np.abs(fast - slow).max() <= 1.0


@pytest.mark.parametrize("centre_vox", [(10.0, 12.0, 5.0), (0.0, 0.0, 0.0), (63.0, 71.0, 27.0), (60.2, 3.3, 26.1)])
def test_region_first_matches_whole_scan_on_ct_like_data(spheres_scan, field, centre_vox):
    volume, affine = spheres_scan
    centre = field.voxel_to_world(affine, centre_vox)
    fast = sample_cube_hu(volume, affine, centre)
    slow = sample_cube_hu(volume, affine, centre, region_first=False)
    assert np.abs(fast - slow).max() <= 1.0
    assert np.array_equal(fast == -1000.0, slow == -1000.0)


def test_edge_padding(field):
    affine = field.make_affine()
    volume = field.linear_volume(affine)
    centre = field.voxel_to_world(affine, (2.0, 3.0, 1.0))  # 1.4 mm, 2.1 mm and 2.5 mm inside the first voxels
    cube = sample_cube_hu(volume, affine, centre, pad_value=-1234.0)
    points = field.cube_points(centre, 32)
    index = (points - affine[:3, 3]) / np.diagonal(affine)[:3]
    inside = np.all((index >= 0) & (index <= np.asarray(field.shape) - 1), axis=-1)
    assert 0 < inside.sum() < inside.size
    assert np.all(cube[~inside] == -1234.0)
    np.testing.assert_allclose(cube[inside], field.linear_field(points[inside]), atol=1e-2)


def test_int16_volume_gives_float32(spheres_scan, field):
    volume, affine = spheres_scan
    cube = sample_cube_hu(volume, affine, (-95.0, -55.0, -270.0))
    assert cube.dtype == np.float32
    assert cube[16, 16, 16] == pytest.approx(40.0, abs=1.0)  # inside the 6 mm sphere
    assert cube[0, 0, 0] < -500.0


def test_resample_scan_hu_grid_contains_requested_node(field):
    affine = field.make_affine()
    volume = field.linear_volume(affine)
    node = np.array([-100.25, -60.5, -280.75])
    resampled, resampled_affine = resample_scan_hu(volume, affine, 1.0, node)
    index = (node - resampled_affine[:3, 3]) / 1.0
    np.testing.assert_allclose(index, np.rint(index), atol=1e-9)
    i, j, k = np.rint(index).astype(int)
    assert resampled[i, j, k] == pytest.approx(float(field.linear_field(node)), abs=1e-2)


BAD_INPUT_CASES = [
    ["centre outside", lambda v, a: (v, a, (0.0, 0.0, 0.0)), r"lies [\d.]+ mm outside the scan"],
    ["2D volume", lambda v, a: (v[:, :, 0], a, (-100.0, -60.0, -270.0)), r"3D HU volume.*\(64, 72\)"],
    ["4D volume", lambda v, a: (v[None], a, (-100.0, -60.0, -270.0)), r"3D HU volume"],
    ["NaN near centre", lambda v, a: (_poke(v, np.nan), a, (-100.0, -60.0, -270.0)), r"NaN/inf"],
    ["inf near centre", lambda v, a: (_poke(v, np.inf), a, (-100.0, -60.0, -270.0)), r"NaN/inf"],
    ["singular affine", lambda v, a: (v, np.diag([1.0, 0.0, 1.0, 1.0]), (0.0, 0.0, 0.0)), r"singular"],
    ["3x3 affine", lambda v, a: (v, a[:3, :3], (-100.0, -60.0, -270.0)), r"4x4"],
    ["NaN centre", lambda v, a: (v, a, (np.nan, -60.0, -270.0)), r"three finite world coordinates"],
]


def _poke(volume: np.ndarray, value: float) -> np.ndarray:
    volume = volume.copy()
    volume[28, 28, 12] = value  # world (-100.4, -60.4, -270.0)
    return volume


@pytest.mark.parametrize("name, make_args, message", BAD_INPUT_CASES)
def test_bad_inputs_raise_data_error(field, name, make_args, message):
    affine = field.make_affine()
    volume = field.linear_volume(affine)
    args = make_args(volume, affine)
    with pytest.raises(DataError, match=message):
        sample_cube_hu(*args)


def test_centre_outside_reports_distance_in_mm(field):
    affine = field.make_affine()
    volume = field.linear_volume(affine)
    last = field.voxel_to_world(affine, np.asarray(field.shape) - 1)
    with pytest.raises(DataError) as info:
        sample_cube_hu(volume, affine, last + np.array([0.0, 0.0, 12.5]))
    distance = float(re.search(r"lies ([\d.]+) mm outside", str(info.value)).group(1))
    assert distance == pytest.approx(12.5, abs=0.05)


def test_nan_far_from_cube_is_ignored_by_region_first(field):
    affine = field.make_affine()
    volume = field.linear_volume(affine)
    volume[-1, -1, -1] = np.nan
    sample_cube_hu(volume, affine, field.voxel_to_world(affine, (10, 10, 5)))
    with pytest.raises(DataError, match="NaN/inf"):
        sample_cube_hu(volume, affine, field.voxel_to_world(affine, (10, 10, 5)), region_first=False)


@pytest.mark.parametrize("bad", [{"size": 0}, {"size": 2.5}, {"spacing_mm": 0.0}, {"spacing_mm": float("nan")}])
def test_bad_sampling_parameters(field, bad):
    affine = field.make_affine()
    with pytest.raises(DataError):
        sample_cube_hu(field.linear_volume(affine), affine, field.voxel_to_world(affine, (30, 30, 10)), **bad)


TEST_CASES_HU = [
    [np.array([-2000.0, -1200.0, -300.0, 600.0, 3000.0]), np.array([0.0, 0.0, 0.5, 1.0, 1.0])],
    [torch.tensor([-1200.0, 150.0]), torch.tensor([0.0, 0.75])],
]


@pytest.mark.parametrize("hu, expected", TEST_CASES_HU)
def test_hu_to_unit(hu, expected):
    out = hu_to_unit(hu)
    assert type(out) is type(expected)
    assert out.dtype in (np.float32, torch.float32)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=1e-6)


def test_hu_window_constant_and_bad_window():
    assert HU_WINDOW == (-1200.0, 600.0)
    with pytest.raises(DataError, match="low < high"):
        hu_to_unit(np.zeros(3), window=(600.0, -1200.0))


def _ras_metatensor(volume: np.ndarray, affine_lps: np.ndarray, channel_first: bool = False) -> MetaTensor:
    """What LoadImage gives: array (X, Y, Z), RAS affine, meta['space'] = 'RAS'."""
    array = volume[None] if channel_first else volume
    affine_ras = torch.as_tensor(orientation_ras_lps(affine_lps))
    return MetaTensor(torch.as_tensor(array), affine=affine_ras, meta={"space": "RAS"})


# [transform kwargs, channel_first input, expected value range]
TEST_CASES_EXTRACT = [
    [{}, False, (0.0, 1.0)],
    [{"size": 20}, True, (0.0, 1.0)],
    [{"scale_to_unit": False, "spacing_mm": 0.8}, False, None],
]


@pytest.mark.parametrize("kwargs, channel_first, value_range", TEST_CASES_EXTRACT)
def test_extract_nodule_cube_uses_lps_centres_on_ras_metatensors(spheres_scan, kwargs, channel_first, value_range):
    volume, affine_lps = spheres_scan
    centre_lps = (-95.0, -55.0, -270.0)
    size = kwargs.get("size", 32)
    out = ExtractNoduleCube(**kwargs)(_ras_metatensor(volume, affine_lps, channel_first), centre_lps)
    assert isinstance(out, MetaTensor) and out.shape == (1, size, size, size) and out.dtype == torch.float32
    expected = sample_cube_hu(volume, affine_lps, centre_lps, size=size, spacing_mm=kwargs.get("spacing_mm", 1.0))
    if value_range is not None:
        expected = hu_to_unit(expected)
        assert float(out.min()) >= value_range[0] and float(out.max()) <= value_range[1]
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)
    # the output affine, in the input's (RAS) space, maps the cube centre back to the nodule centre
    mid = (size - 1) / 2.0
    centre_ras = out.affine.numpy() @ np.array([mid, mid, mid, 1.0])
    np.testing.assert_allclose(centre_ras[:3], [95.0, 55.0, -270.0], atol=1e-6)
    assert out.meta["space"] == "RAS"


def test_extract_nodule_cube_on_lps_array_with_explicit_affine(spheres_scan):
    volume, affine_lps = spheres_scan
    out = ExtractNoduleCube(scale_to_unit=False)(volume, [-70.0, -40.0, -250.0], affine=affine_lps, space="LPS")
    np.testing.assert_allclose(out[0].numpy(), sample_cube_hu(volume, affine_lps, (-70.0, -40.0, -250.0)), atol=1e-5)
    np.testing.assert_allclose(out.affine.numpy(), cube_affine((-70.0, -40.0, -250.0)), atol=1e-9)


def test_extract_nodule_cube_needs_affine_and_one_channel(spheres_scan):
    volume, affine = spheres_scan
    with pytest.raises(DataError, match="affine"):
        ExtractNoduleCube()(volume, (-95.0, -55.0, -270.0))
    with pytest.raises(DataError, match="single-channel"):
        ExtractNoduleCube()(np.stack([volume, volume]), (-95.0, -55.0, -270.0), affine=affine)


def test_dict_matches_array_and_allows_missing_keys(spheres_scan):
    volume, affine_lps = spheres_scan
    image = _ras_metatensor(volume, affine_lps)
    centre = np.array([-70.0, -40.0, -250.0])
    array_out = ExtractNoduleCube()(image, centre)
    extract = ExtractNoduleCubed(keys=("image", "mask"), allow_missing_keys=True)
    dict_out = extract({"image": image, "center_mm": centre})
    assert torch.equal(dict_out["image"], array_out)
    assert "mask" not in dict_out and dict_out["center_mm"] is centre
    with pytest.raises(KeyError):
        ExtractNoduleCubed(keys=("image", "mask"))({"image": image, "center_mm": centre})
    with pytest.raises(DataError, match="'centre_lps'"):
        ExtractNoduleCubed(keys="image", center_key="centre_lps")({"image": image, "center_mm": centre})


def test_loadimaged_mhd_to_cube_end_to_end(tmp_path, spheres_scan):
    """A .mhd written in ITK's LPS frame, loaded by LoadImaged (RAS), gives the cube of the LPS arrays."""
    volume, affine_lps = spheres_scan
    image = sitk.GetImageFromArray(volume.transpose(2, 1, 0))
    image.SetSpacing(tuple(np.diagonal(affine_lps)[:3]))
    image.SetOrigin(tuple(affine_lps[:3, 3]))
    path = str(tmp_path / "scan.mhd")
    sitk.WriteImage(image, path)
    centre = {"center_mm": [-95.0, -55.0, -270.0]}
    loader = LoadImaged("image", reader=SimpleITKReader(), image_only=True)
    out = ExtractNoduleCubed("image", scale_to_unit=False)(loader({"image": path, **centre}))["image"]
    np.testing.assert_allclose(out[0].numpy(), sample_cube_hu(volume, affine_lps, centre["center_mm"]), atol=1e-3)
