"""``prepare_scans``: generated scans to cubes at the right place, rejects, re-runs, nothing half-written."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from naslung.pipeline.data import raw_scan_discovery
from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.data.prepare_raw import PREPARE_MANIFEST_COLUMNS, REJECT_COLUMNS, prepare_scans
from naslung.pipeline.data.raw_nodule_cubes import CUBE_SIZE
from naslung.pipeline.errors import ConfigError, DataError


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _assert_cube_at(out_dir: Path, row: dict, world_mm: np.ndarray) -> None:
    """The brightest voxel of the row's cube lies within 1 mm of the blob's known world position."""
    cube = np.load(out_dir / row["image"])
    assert cube.dtype == np.float32 and cube.shape == (CUBE_SIZE,) * 3
    assert 0.0 <= cube.min() and cube.max() <= 1.0
    brightest = np.array(np.unravel_index(np.argmax(cube), cube.shape), dtype=float)
    centre = np.array([float(row["x_mm"]), float(row["y_mm"]), float(row["z_mm"])])
    brightest_mm = centre + (brightest - (CUBE_SIZE - 1) / 2.0) * 1.0  # cube axes run along world x, y, z at 1 mm
    assert np.linalg.norm(brightest_mm - world_mm) < 1.0
    np.testing.assert_allclose(centre, world_mm, atol=0.01)


def _no_temp_files(out_dir: Path) -> None:
    leftovers = [p for p in out_dir.rglob("*") if ".tmp" in p.name]
    assert leftovers == []


@pytest.fixture
def dicom_tree(tmp_path, synthetic_scan, cohort_csv_writer):
    """A folder tree of DICOM series (good, not in cohort, damaged, mismatching the cohort) and its cohort CSV."""
    data = tmp_path / "data"
    good = synthetic_scan(series_uid="1.2.3.1", patient_id="P1", peaks_ijk=((30.4, 22.0, 18.0), (12.0, 40.0, 29.0)))
    good.write_dicom(data / "P1" / "study" / "series")
    other = synthetic_scan(series_uid="1.2.3.2", patient_id="P2", shape=(24, 24, 10))
    other.write_dicom(data / "P2")
    gap = synthetic_scan(series_uid="1.2.3.3", patient_id="P3", shape=(40, 40, 30))
    gap.write_dicom(data / "P3")
    sorted((data / "P3").glob("*.dcm"))[5].unlink()
    shifted = synthetic_scan(series_uid="1.2.3.4", patient_id="P4", shape=(40, 40, 30), peaks_ijk=((20, 20, 10),))
    shifted.write_dicom(data / "P4")
    rows = [
        good.cohort_row(0, label=1, fold=2),
        good.cohort_row(1, label=0, fold=5),
        gap.cohort_row(0),
        shifted.cohort_row(0, z_mm=shifted.world(0)[2] + 2.0),  # one slice off
        {**good.cohort_row(0), "series_uid": "9.9.9", "nodule_id": "GONE_n1"},  # no scan on disk
    ]
    return data, cohort_csv_writer(tmp_path / "cohort.csv", rows), good


def test_prepare_dicom_tree(tmp_path, dicom_tree):
    data, cohort_csv, good = dicom_tree
    out = tmp_path / "out"
    summary = prepare_scans("dicom", data, out, cohort=cohort_csv)

    columns, manifest = _read_csv(out / "manifest.csv")
    assert tuple(columns) == PREPARE_MANIFEST_COLUMNS
    assert [r["nodule_id"] for r in manifest] == ["P1_n1", "P1_n2"]
    assert [(r["label"], r["fold"], r["patient_id"], r["series_uid"]) for r in manifest] == [
        ("1", "2", "P1", "1.2.3.1"),
        ("0", "5", "P1", "1.2.3.1"),
    ]
    for n, row in enumerate(manifest):
        assert row["image"] == f"cubes/P1_n{n + 1}.npy"
        _assert_cube_at(out, row, good.world(n))
    assert sorted(p.name for p in (out / "cubes").iterdir()) == ["P1_n1.npy", "P1_n2.npy"]

    columns, rejects = _read_csv(out / "rejects.csv")
    assert tuple(columns) == REJECT_COLUMNS
    reasons = {Path(r["path"]).name: r["reason"] for r in rejects}
    assert {r["series_uid"] for r in rejects} == {"1.2.3.2", "1.2.3.3", "1.2.3.4"}
    assert reasons["P2"].startswith("not in cohort")
    assert "missing slices" in reasons["P3"]
    assert "k=10" in reasons["P4"] and "half a slice" in reasons["P4"]

    assert (summary.scans_found, summary.scans_read, summary.scans_rejected) == (4, 1, 3)
    assert (summary.nodules, summary.cubes_written, summary.cohort_series_missing) == (2, 2, 1)
    datalist = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    assert [d["image"] for d in datalist] == ["cubes/P1_n1.npy", "cubes/P1_n2.npy"]
    assert [d["label"] for d in read_manifest(out / "manifest.csv")] == [1, 0]
    _no_temp_files(out)


def test_rerun_skips_unchanged_scans_and_redoes_changed_ones(tmp_path, dicom_tree, monkeypatch):
    data, cohort_csv, good = dicom_tree
    out = tmp_path / "out"
    prepare_scans("dicom", data, out, cohort=cohort_csv)
    cube = out / "cubes" / "P1_n1.npy"
    before = cube.stat().st_mtime_ns
    manifest_before = (out / "manifest.csv").read_text(encoding="utf-8")
    rejects_before = (out / "rejects.csv").read_text(encoding="utf-8")

    reads = []
    read_dicom_series = raw_scan_discovery.read_dicom_series

    def recording(*args, **kwargs):
        reads.append(args)
        return read_dicom_series(*args, **kwargs)

    monkeypatch.setattr(raw_scan_discovery, "read_dicom_series", recording)
    again = prepare_scans("dicom", data, out, cohort=cohort_csv)
    assert reads == []  # neither the good scan nor the rejected ones are read again
    assert (again.scans_read, again.scans_unchanged, again.cubes_written, again.cubes_kept) == (0, 1, 0, 2)
    assert again.scans_rejected == 3
    assert cube.stat().st_mtime_ns == before
    assert (out / "manifest.csv").read_text(encoding="utf-8") == manifest_before
    assert (out / "rejects.csv").read_text(encoding="utf-8") == rejects_before

    (out / "cubes" / "P1_n2.npy").unlink()  # a lost cube: its scan is read again, the other cube is kept
    third = prepare_scans("dicom", data, out, cohort=cohort_csv)
    assert (third.scans_read, third.cubes_written, third.cubes_kept) == (1, 1, 1)
    assert len(reads) == 1
    assert cube.stat().st_mtime_ns == before

    slice_file = sorted((data / "P1" / "study" / "series").glob("*.dcm"))[0]
    os.utime(slice_file, ns=(before + 10**9, before + 10**9))  # a changed scan is read again
    fourth = prepare_scans("dicom", data, out, cohort=cohort_csv)
    assert (fourth.scans_read, fourth.scans_unchanged, len(reads)) == (1, 0, 2)
    _no_temp_files(out)


def test_prepare_luna16_mhd_with_flipped_z_and_annotations(tmp_path, synthetic_scan, cohort_csv_writer):
    data = tmp_path / "luna16"
    up = synthetic_scan(series_uid="1.3.6.1", patient_id="L1", peaks_ijk=((20.0, 41.0, 12.0),))
    down = synthetic_scan(
        series_uid="1.3.6.2",
        patient_id="L2",
        peaks_ijk=((33.0, 17.0, 9.0),),
        direction=(1, 0, 0, 0, 1, 0, 0, 0, -1),  # slices stored top-down
        origin_mm=(-22.4, -30.0, 0.0),
    )
    up.write_mhd(data / "subset0" / "1.3.6.1.mhd")
    down.write_mhd(data / "subset1" / "1.3.6.2.mhd")
    assert down.ascending_k() == 40 - 1 - 9
    cohort = cohort_csv_writer(tmp_path / "cohort.csv", [up.cohort_row(), down.cohort_row(label=0)])
    annotations = data / "CSVFILES" / "annotations.csv"
    annotations.parent.mkdir()
    far = down.world() + np.array([30.0, 0.0, 0.0])
    annotations.write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm\n"
        f"1.3.6.1,{up.world()[0]},{up.world()[1]},{up.world()[2]},6.0\n"
        f"1.3.6.2,{far[0]},{far[1]},{far[2]},6.0\n"
    )
    out = tmp_path / "out"
    summary = prepare_scans("luna16", data, out, cohort=cohort)
    _, manifest = _read_csv(out / "manifest.csv")
    assert [r["nodule_id"] for r in manifest] == ["L1_n1", "L2_n1"]
    _assert_cube_at(out, manifest[0], up.world())
    _assert_cube_at(out, manifest[1], down.world())
    assert manifest[1]["source"].endswith("1.3.6.2.mhd")
    assert (summary.scans_found, summary.scans_rejected, summary.annotation_far) == (2, 0, 1)
    _, rejects = _read_csv(out / "rejects.csv")
    assert rejects == []


def test_bad_mhd_is_rejected_and_run_goes_on(tmp_path, synthetic_scan, cohort_csv_writer):
    data = tmp_path / "luna16"
    good = synthetic_scan(series_uid="1.3.6.1", patient_id="L1")
    bad = synthetic_scan(series_uid="1.3.6.9", patient_id="L9", shape=(20, 20, 10), peaks_ijk=((10, 10, 5),))
    good.write_mhd(data / "1.3.6.1.mhd")
    raw = bad.write_mhd(data / "1.3.6.9.mhd").with_suffix(".raw")
    raw.write_bytes(raw.read_bytes()[:-10])
    cohort = cohort_csv_writer(tmp_path / "cohort.csv", [good.cohort_row(), bad.cohort_row()])
    summary = prepare_scans("luna16", data, tmp_path / "out", cohort=cohort)
    assert (summary.nodules, summary.scans_rejected) == (1, 1)
    _, rejects = _read_csv(tmp_path / "out" / "rejects.csv")
    assert rejects[0]["series_uid"] == "1.3.6.9" and "truncated" in rejects[0]["reason"]


def test_failed_write_leaves_no_partial_cube(tmp_path, dicom_tree, monkeypatch):
    data, cohort_csv, _ = dicom_tree
    out = tmp_path / "out"

    def failing_save(handle, array, *args, **kwargs):
        handle.write(b"\x93NUMPY partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        prepare_scans("dicom", data, out, cohort=cohort_csv)
    assert list((out / "cubes").iterdir()) == []
    assert not (out / "manifest.csv").exists()
    _no_temp_files(out)


# [cohort rows (or CSV text), error type, words]
BAD_CALL_CASES = [
    [{"kind": "nrrd"}, ConfigError, "unknown scan kind"],
    [{"kind": "dicom", "data": "missing-folder"}, DataError, "data path does not exist"],
    [{"kind": "dicom", "cohort_rows": [{"nodule_id": "a", "series_uid": "1"}]}, DataError, "lacks column(s)"],
    [{"kind": "dicom", "nodule_id": "../evil"}, DataError, "cannot be used as a file name"],
    [{"kind": "dicom", "nodule_id": "dup", "twice": True}, DataError, "appears twice"],
]


@pytest.mark.parametrize("case, error, words", BAD_CALL_CASES)
def test_bad_calls_raise_clear_errors(tmp_path, synthetic_scan, case, error, words):
    scan = synthetic_scan(shape=(8, 8, 4), peaks_ijk=((4, 4, 2),))
    row = scan.cohort_row(nodule_id=case.get("nodule_id", "n1"))
    rows = case.get("cohort_rows", [row, row] if case.get("twice") else [row])
    (tmp_path / "data").mkdir()
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        prepare_scans(case["kind"], tmp_path / case.get("data", "data"), tmp_path / "out", cohort=rows)
    assert not (tmp_path / "out" / "cubes").exists()


def test_lidc_without_pylidc_config_is_a_config_error(tmp_path, synthetic_scan, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    rows = [synthetic_scan(shape=(8, 8, 4), peaks_ijk=((4, 4, 2),)).cohort_row()]
    with pytest.raises(ConfigError, match=r"pylidc has no DICOM path configured.*\.pylidcrc"):
        prepare_scans("lidc", None, tmp_path / "out", cohort=rows)
    assert not (home / ".pylidcrc").exists()  # pylidc itself would have written a template
    (home / ".pylidcrc").write_text("[dicom]\npath =\nwarn = True\n")
    with pytest.raises(ConfigError, match="no DICOM path configured"):
        prepare_scans("lidc", None, tmp_path / "out", cohort=rows)
    (home / ".pylidcrc").write_text(f"[dicom]\npath = {tmp_path / 'nowhere'}\n")
    with pytest.raises(ConfigError, match="does not exist"):
        prepare_scans("lidc", None, tmp_path / "out", cohort=rows)


def test_prepare_lidc_through_pylidc(tmp_path, synthetic_scan, monkeypatch):
    """A generated series filed under a real LIDC-IDRI scan's uids is found and loaded through pylidc."""
    from naslung.pipeline.data.pylidc_compat import import_pylidc

    pl = import_pylidc()
    real = pl.query(pl.Scan).filter(pl.Scan.patient_id == "LIDC-IDRI-0078").first()
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    scan = synthetic_scan(
        series_uid=real.series_instance_uid,
        patient_id=real.patient_id,
        study_uid=real.study_instance_uid,
        shape=(48, 48, 30),
        peaks_ijk=((21.0, 27.0, 12.0),),
    )
    folder = scan.write_dicom(tmp_path / "LIDC-IDRI" / real.patient_id / real.study_instance_uid / "series")
    duplicate = sorted(folder.glob("*.dcm"))[4]  # a repeated slice: pylidc keeps one, as the cohort's k assumes
    (folder / "9999.dcm").write_bytes(duplicate.read_bytes())
    (folder / "069.xml").write_text("<LidcReadMessage/>")
    out = tmp_path / "out"
    summary = prepare_scans("lidc", tmp_path / "LIDC-IDRI", out, cohort=[scan.cohort_row()])
    _, manifest = _read_csv(out / "manifest.csv")
    assert (summary.scans_found, summary.nodules, summary.scans_rejected) == (1, 1, 0)
    _assert_cube_at(out, manifest[0], scan.world())
    assert manifest[0]["source"] == str(folder)
    assert not (home / ".pylidcrc").exists()


def test_cohort_without_folds_gets_folds_by_patient(tmp_path, synthetic_scan):
    scans = [synthetic_scan(series_uid=f"1.4.{n}", patient_id=f"F{n}", shape=(40, 40, 24)) for n in range(3)]
    for scan in scans:
        scan.write_mhd(tmp_path / "data" / f"{scan.series_uid}.mhd")
    rows = [scan.cohort_row(fold=None, label=n % 2) for n, scan in enumerate(scans)]
    prepare_scans("luna16", tmp_path / "data", tmp_path / "out", cohort=rows)
    _, manifest = _read_csv(tmp_path / "out" / "manifest.csv")
    assert len(manifest) == 3 and all(0 <= int(r["fold"]) < 10 for r in manifest)
