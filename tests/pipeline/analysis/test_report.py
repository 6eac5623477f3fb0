"""The run report: every section is present, real numbers appear, missing steps are named."""

from __future__ import annotations

import json

import pytest

from naslung.pipeline.analysis.report import REPORT_SECTIONS, build_report
from naslung.pipeline.atomic_io import write_csv, write_json


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


def _fold(fold, accuracy, auc, **extra):
    return {"fold": fold, "accuracy": accuracy, "auc": auc, **extra}


def test_report_shows_reference_models_per_fold(tmp_path):
    rule = [_fold(0, 0.80, 0.90, threshold_mm=10.5), _fold(1, 0.84, 0.88, threshold_mm=11.25)]
    metrics = {
        "n_members": 2,
        "folds": [0, 1],
        "summary": {"accuracy_mean": 0.85, "accuracy_std": 0.0707},
        "per_fold": [_fold(0, 0.80, 0.93), _fold(1, 0.90, 0.86)],
        "members": [{"slug": "net-a", "per_fold": [_fold(0, 0.75, 0.91), _fold(1, 0.70, 0.80)]}, {"slug": "net-b"}],
        "reference_models": {
            "diameter_rule": {"label": "diameter rule", "per_fold": rule},
            "ratings_ceiling": {"label": "ratings", "omitted": "the packaged default cohort lacks 3 nodule(s)"},
            "ensemble_minus_diameter_rule": {
                "per_fold": [_fold(0, 0.0, 0.03), _fold(1, 0.06, -0.02)],
                "summary": {"accuracy_folds_ahead": 1, "auc_folds_ahead": 1, "n_folds": 2},
                "bootstrap": {
                    "resamples": 2000,
                    "level": 0.95,
                    "accuracy": {"observed": 0.03, "low": 0.01, "high": 0.05, "ahead_fraction": 0.99},
                    "auc": {"observed": 0.005, "low": -0.02, "high": 0.03, "ahead_fraction": 0.64},
                },
            },
        },
    }
    write_json(tmp_path / "ensemble" / "metrics.json", metrics)
    text = build_report(tmp_path)[0].read_text(encoding="utf-8")
    section = text[text.index("## Reference models") : text.index("## Comparison with the paper")]
    assert "| **ensemble of 2** | 80.0 | 90.0 | 85.0 ± 7.1 |" in section
    assert "| **ensemble of 2** | 0.930 | 0.860 | 0.895 ± 0.049 |" in section
    assert "| member `net-a` | 75.0 | 70.0 | 72.5 ± 3.5 |" in section
    assert "| diameter rule | 0.900 | 0.880 | 0.890 ± 0.014 |" in section
    assert "| *ensemble − diameter rule* (AUC) | +0.030 | -0.020 | +0.005 ± 0.035 |" in section
    assert "on AUC in **1 of 2** folds" in section and "1: 11.25" in section
    assert "reader ratings, not an image model" in section
    assert "accuracy +3.0 points (95% interval +1.0 to +5.0, ahead in 99% of resamples)" in section
    assert "AUC +0.005 (95% interval -0.020 to +0.030, ahead in 64% of resamples; these nodules cannot" in section
    assert "2,000 resamples within each fold" in section
    assert "ratings ceiling omitted: the packaged default cohort lacks 3 nodule(s)" in section
    assert "| ratings ceiling" not in section  # an omitted model has no row


def test_report_reference_section_without_ensemble(tmp_path):
    text = build_report(tmp_path)[0].read_text(encoding="utf-8")
    section = text[text.index("## Reference models") : text.index("## Comparison with the paper")]
    assert "naslung ensemble --run RUN" in section


def _search_run(root, score_key, rank_correlation):
    """RUN/search with a two-candidate journal, selected.json ranked by ``score_key``, a Pareto CSV and figure."""
    search = root / "search"
    candidates = [
        {"spec": "4-4_4_4_8", "params": 1000, "latency_ms": 1.25, "auc": 0.9123, "f1": 0.8, "accuracy": 0.85},
        {"spec": "8-8_8_8_16", "params": 4000, "latency_ms": 2.5, "auc": 0.95, "f1": 0.82, "accuracy": 0.875},
    ]
    search.mkdir(parents=True)
    (search / "journal.jsonl").write_text("".join(json.dumps(c) + "\n" for c in candidates), encoding="utf-8")
    selected = {"specs": [c["spec"] for c in candidates], "select": "pareto", "candidates": candidates}
    if score_key is not None:
        selected["score_key"] = score_key
    write_json(search / "selected.json", selected)
    write_csv(search / "pareto.csv", candidates, list(candidates[0]))
    (search / "pareto.png").write_bytes(b"\x89PNG")
    if rank_correlation is not None:
        write_json(search / "rank_correlation.json", rank_correlation)
    return root


def _ranks(rho, reason=None):
    networks = [
        {"spec": "4-4_4_4_8", "search_score": 0.9123, "retrained_score": 0.9312, "retrained_folds": {"0": 0.93}},
        {"spec": "8-8_8_8_16", "search_score": 0.95, "retrained_score": None, "retrained_folds": {}},
    ]
    return {"metric": "auc", "method": "spearman", "rho": rho, "n": 3, "reason": reason, "networks": networks}


SEARCH_CASES = [
    # score_key, rank_correlation.json, expected lines, lines that must not appear
    [
        "auc",
        _ranks(0.5),
        [
            "Latency against validation AUC (left, the search score) and accuracy (right)",
            "latency/AUC Pareto front",
            "| spec | params | latency ms | val AUC | val accuracy (%) |",
            "| `4-4_4_4_8` | 1000 | 1.250 | 0.912 | 85.00 |",
            "Spearman ρ = **+0.50** over 3 networks",
            "| `4-4_4_4_8` | 0.912 | 0.931 | 1 |",
            "| `8-8_8_8_16` | 0.950 | – | 0 |",
        ],
        ["validation F1"],
    ],
    [
        "auc",
        _ranks(None, "2 network(s) with both a search-time and a retrained auc"),
        ["(validation AUC): undefined (2 network(s) with both a search-time and a retrained auc)"],
        ["Spearman ρ ="],
    ],
    [
        "accuracy",
        None,
        [
            "validation accuracy (left, the search score) and F1 (right)",
            "| val accuracy (%) | val F1 (%) |",
            "not computed yet",
        ],
        ["val AUC"],
    ],
    [
        None,
        None,
        ["Latency against validation F1 (left", "| val F1 (%) | val accuracy (%) |"],
        ["AUC"],
    ],  # runs before AUC
]


@pytest.mark.parametrize("score_key, ranks, expected, absent", SEARCH_CASES)
def test_report_search_section_names_the_search_metric(tmp_path, score_key, ranks, expected, absent):
    text = build_report(_search_run(tmp_path, score_key, ranks))[0].read_text(encoding="utf-8")
    section = text[text.index("## Architecture search") : text.index("## Cross-validated results")]
    for line in expected:
        assert line in section
    for line in absent:
        assert line not in section
