"""Tests of the embedded default data set: cubes, manifest, datalist, resume, whole scans as DICOM and MetaImage."""

from __future__ import annotations

import csv
import functools
import json
import subprocess
import sys
import threading
import types

import numpy as np
import pytest
import SimpleITK as sitk

from naslung.pipeline.data.cohort_table import CHARACTERISTICS, read_cohort_csv
from naslung.pipeline.data.embedded import (
    COHORT_FILE,
    LUNA16_ANNOTATION_FIELDS,
    MANIFEST_FIELDS,
    _pool_context,
    cube_path,
    render_cube,
    render_embedded,
    select_scans,
)
from naslung.pipeline.ensemble.reference_models import CEILING_RATINGS, load_reference_data
from naslung.pipeline.errors import DataError
from naslung.pipeline.run.job import RunContext, _step_prepare, subsample_cohort


@functools.lru_cache(maxsize=1)
def _cohort():
    from naslung.pipeline.data.cohort_table import load_default_cohort

    return tuple(sorted(load_default_cohort(), key=lambda r: str(r["nodule_id"])))


def _solid(row):
    return all(int(v) == 5 for v in str(row["texture"]).split(";")) and float(row["diameter_mm"]) >= 8


@functools.lru_cache(maxsize=1)
def _few_rows():
    """Three nodules: two of one scan (one solid, >= 8 mm) and one of another scan."""
    rows = _cohort()
    by_series = {}
    for row in rows:
        by_series.setdefault(str(row["series_uid"]), []).append(row)
    for members in by_series.values():
        solid = [r for r in members if _solid(r)]
        if len(members) >= 2 and solid:
            other = next(r for r in members if r is not solid[0])
            extra = next(r for r in rows if str(r["series_uid"]) != str(solid[0]["series_uid"]))
            return [dict(solid[0]), dict(other), dict(extra)]
    pytest.fail("the default cohort has no scan with two nodules, one of them solid")


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_render_cube_shape_range_and_determinism():
    row = _few_rows()[0]
    cube = render_cube(row, seed=0)
    assert cube.shape == (32, 32, 32) and cube.dtype == np.float32
    assert float(cube.min()) >= 0.0 and float(cube.max()) <= 1.0
    assert cube[14:18, 14:18, 14:18].mean() > cube.mean() + 0.1  # the solid nodule sits in the middle
    assert render_cube(row, seed=0).tobytes() == cube.tobytes()
    assert render_cube(row, seed=1).tobytes() != cube.tobytes()


def test_select_scans_prefers_several_nodules():
    rows = _few_rows()
    assert select_scans(rows, 1, matrix=512, max_slices=None) == [str(rows[0]["series_uid"])]
    assert len(select_scans(rows, 5)) == 2
    assert select_scans(rows, 0) == []


def test_render_embedded_writes_dataset_and_resumes(tmp_path):
    rows = _few_rows()
    out = tmp_path / "embedded"
    summary = render_embedded(out, rows=rows, n_scans=1, seed=0, workers=1, scan_matrix=64, scan_max_slices=12)
    assert summary["n_nodules"] == 3 and summary["n_rendered"] == 3 and summary["n_skipped"] == 0

    manifest = _read_csv(out / "manifest.csv")
    assert list(manifest[0]) == MANIFEST_FIELDS
    assert [m["nodule_id"] for m in manifest] == [str(r["nodule_id"]) for r in rows]
    assert [int(m["label"]) for m in manifest] == [int(float(r["label"])) for r in rows]
    assert {m["source"] for m in manifest} == {"embedded"}
    for m, row in zip(manifest, rows, strict=True):
        cube = np.load(out / m["image"])
        assert cube.shape == (32, 32, 32) and cube.dtype == np.float32
        assert 0.0 <= cube.min() <= cube.max() <= 1.0
        assert float(m["z_mm"]) == pytest.approx(float(row["z_mm"]))
    datalist = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    assert [d["label"] for d in datalist] == [int(float(r["label"])) for r in rows]
    assert set(datalist[0]) == {"image", "label", "fold", "nodule_id"}
    # the rows rendered, ratings included, are kept beside the manifest; the ratings ceiling reads them from there
    assert summary["cohort"] == str(out / COHORT_FILE)
    assert read_cohort_csv(out / COHORT_FILE) == [dict(r) for r in rows]
    reference = load_reference_data(out)
    assert reference.ratings_source == str(out / COHORT_FILE)
    assert reference.ratings.shape == (3, len(CEILING_RATINGS))

    # resume: existing cubes are kept untouched, a missing one is rendered again with the same bytes
    first = cube_path(out, str(rows[0]["nodule_id"]))
    kept = cube_path(out, str(rows[1]["nodule_id"]))
    first_bytes, kept_mtime = first.read_bytes(), kept.stat().st_mtime_ns
    first.unlink()
    again = render_embedded(out, rows=rows, n_scans=1, seed=0, workers=1, scan_matrix=64, scan_max_slices=12)
    assert again["n_rendered"] == 1 and again["n_skipped"] == 2
    assert first.read_bytes() == first_bytes
    assert kept.stat().st_mtime_ns == kept_mtime
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    # another seed re-renders everything and drops the stale scans
    other = render_embedded(out, rows=rows, n_scans=0, seed=5, workers=1)
    assert other["n_rendered"] == 3
    assert first.read_bytes() != first_bytes
    assert not (out / "scans").exists()


def test_render_embedded_refuses_unknown_cubes(tmp_path):
    (tmp_path / "cubes").mkdir()
    np.save(tmp_path / "cubes" / "someone_else.npy", np.zeros(3))
    with pytest.raises(DataError, match="embedded.json"):
        render_embedded(tmp_path, rows=_few_rows()[:1], n_scans=0, workers=1)


def test_whole_scan_dicom_and_mhd_hold_the_nodule_at_its_world_centre(tmp_path):
    rows = _few_rows()
    out = tmp_path / "embedded"
    render_embedded(out, rows=rows[:1], n_scans=1, seed=0, workers=1, scan_matrix=64, scan_max_slices=12)
    uid = str(rows[0]["series_uid"])
    annotations = _read_csv(out / "scans" / "annotations.csv")
    assert list(annotations[0]) == LUNA16_ANNOTATION_FIELDS
    truth = _read_csv(out / "scans" / "truth.csv")
    assert [t["nodule_id"] for t in truth] == [str(rows[0]["nodule_id"])]
    centre = tuple(float(truth[0][k]) for k in ("coordX", "coordY", "coordZ"))
    assert centre[2] == pytest.approx(float(rows[0]["z_mm"]))

    mhd = sitk.ReadImage(str(out / "scans" / "mhd" / f"{uid}.mhd"))
    reader = sitk.ImageSeriesReader()
    assert reader.GetGDCMSeriesIDs(str(out / "scans" / "dicom" / uid)) == (uid,)
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(out / "scans" / "dicom" / uid), uid))
    dicom = reader.Execute()
    for image in (mhd, dicom):
        np.testing.assert_allclose(image.GetSpacing(), mhd.GetSpacing(), atol=1e-4)
        np.testing.assert_allclose(image.GetOrigin(), mhd.GetOrigin(), atol=1e-3)
        index = image.TransformPhysicalPointToIndex(centre)
        hu = sitk.GetArrayFromImage(image)  # (z, y, x)
        around = hu[index[2], index[1] - 1 : index[1] + 2, index[0] - 1 : index[0] + 2]
        assert around.mean() > -250, around  # solid nodule at the recorded centre
        assert np.median(hu) < -500  # in lung
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mhd), sitk.GetArrayFromImage(dicom))


def test_process_pool_gives_the_same_bytes(tmp_path):
    rows = _few_rows()[1:]
    render_embedded(tmp_path / "serial", rows=rows, n_scans=0, seed=2, workers=1)
    summary = render_embedded(tmp_path / "pool", rows=rows, n_scans=0, seed=2, workers=2)
    assert summary["n_rendered"] == len(rows)
    for row in rows:
        serial = cube_path(tmp_path / "serial", str(row["nodule_id"])).read_bytes()
        assert cube_path(tmp_path / "pool", str(row["nodule_id"])).read_bytes() == serial


@pytest.mark.skipif(sys.platform != "linux", reason="fork is Linux's")
def test_pool_forks_only_without_pylidc_and_other_threads(monkeypatch):
    monkeypatch.delitem(sys.modules, "pylidc", raising=False)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert _pool_context().get_start_method() == "fork"
    monkeypatch.setattr(threading, "active_count", lambda: 2)  # a lock another thread holds would stay held
    assert _pool_context().get_start_method() == "spawn"
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setitem(sys.modules, "pylidc", types.ModuleType("pylidc"))  # its SQLite connection must not cross
    assert _pool_context().get_start_method() == "spawn"


_FORK_AFTER_OPENMP = """
import torch

torch.nn.functional.conv3d(torch.randn(1, 8, 24, 24, 24), torch.randn(8, 8, 3, 3, 3))  # the parent's OpenMP pool
from naslung.pipeline.data.embedded import _pool_context, _worker_pool


def work(n):
    return float(torch.ones(n).mul(2.0).sum())  # big enough for a parallel region in the worker


if __name__ == "__main__":
    assert _pool_context().get_start_method() == "fork"
    with _worker_pool(2) as pool:
        print(sum(pool.map(work, [2_000_000] * 4)))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="fork is Linux's")
def test_forked_workers_survive_the_parents_openmp_pool(tmp_path):
    """A forked worker's first parallel region hangs if torch keeps the parent's OpenMP threads: one thread each."""
    script = tmp_path / "fork_after_openmp.py"
    script.write_text(_FORK_AFTER_OPENMP)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split()[-1]) == 16_000_000.0


def test_subsample_keeps_every_column_of_the_rows_it_draws():
    """The quick profile's subsample carries the readers' ratings through to the data folder's cohort.csv."""
    rows = _cohort()
    drawn = subsample_cohort(rows, 60, seed=3)
    assert 0 < len(drawn) < len(rows)
    by_id = {str(r["nodule_id"]): r for r in rows}
    assert all(row == by_id[str(row["nodule_id"])] for row in drawn)
    assert all(row[name] not in (None, "") for row in drawn for name in CHARACTERISTICS)


def test_prepare_step_writes_the_rendered_cohort_and_restores_it(tmp_path, monkeypatch):
    """``naslung run``'s embedded prepare step leaves RUN/data/cohort.csv; a run prepared without one gets it back."""
    import naslung.pipeline.run.job as run_job

    rows = [dict(r) for r in _few_rows()]
    # the prepare step looks the packaged cohort up in run_job's namespace (imported there at module level)
    monkeypatch.setattr(run_job, "load_default_cohort", lambda: [dict(r) for r in rows])
    ctx = RunContext(run_dir=tmp_path, settings={"prepare": {"scans": 0, "workers": 1, "seed": 0}})
    _step_prepare(ctx)
    written = tmp_path / "data" / COHORT_FILE
    kept = sorted(read_cohort_csv(written), key=lambda r: str(r["nodule_id"]))
    assert kept == sorted(rows, key=lambda r: str(r["nodule_id"]))
    assert load_reference_data(tmp_path / "data").ratings_source == str(written)

    cube = cube_path(tmp_path / "data", str(rows[0]["nodule_id"]))
    cube_mtime = cube.stat().st_mtime_ns
    written.unlink()  # as in a run prepared before the data folder kept its cohort
    assert "up to date" in _step_prepare(ctx)
    assert cube.stat().st_mtime_ns == cube_mtime  # not rendered again
    assert sorted(read_cohort_csv(written), key=lambda r: str(r["nodule_id"])) == kept
    assert not [p for p in (tmp_path / "data").iterdir() if ".tmp" in p.name]
