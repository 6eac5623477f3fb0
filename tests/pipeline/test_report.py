"""The run report: every section is present, real numbers appear, missing steps are named."""

from __future__ import annotations

import json

from naslung.pipeline.atomic_io import write_csv
from naslung.pipeline.report import REPORT_SECTIONS, build_report


def test_report_on_empty_run_names_missing_steps(tmp_path):
    md, html = build_report(tmp_path)
    text = md.read_text(encoding="utf-8")
    for section in REPORT_SECTIONS:
        assert f"## {section}" in text
    assert "naslung prepare embedded" in text and "<table" not in html.read_text(encoding="utf-8")


def test_report_shows_cohort_and_cv_numbers(tmp_path):
    rows = [
        dict(
            nodule_id=f"n{i}",
            patient_id=f"p{i // 2}",
            series_uid=f"s{i // 4}",
            image="x",
            label=i % 2,
            fold=i % 3,
            source="embedded",
        )
        for i in range(12)
    ]
    write_csv(tmp_path / "data" / "manifest.csv", rows, list(rows[0]))
    member = tmp_path / "train" / "4-4_4_4_8"
    member.mkdir(parents=True)
    summary = {"f1_mean": 0.8123, "f1_std": 0.05, "accuracy_mean": 0.9, "accuracy_std": 0.01}
    (member / "cv_metrics.json").write_text(json.dumps({"folds": [1, 2], "summary": summary}))
    md, html = build_report(tmp_path)
    text = md.read_text(encoding="utf-8")
    assert "**12** (6 malignant, 6 benign)" in text
    assert "synthetic" in text
    assert "81.23 ± 5.00" in text
    assert "<table>" in html.read_text(encoding="utf-8")
