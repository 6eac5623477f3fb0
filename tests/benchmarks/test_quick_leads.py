"""``benchmarks/experiments/quick_leads.py``: every stored run's AUC lead over the diameter rule, with its interval."""

from __future__ import annotations

import json

import pytest

from naslung.pipeline.errors import DataError


@pytest.fixture
def quick_leads(load_benchmark):
    return load_benchmark("experiments/quick_leads")


def _run(folder, leads, aucs, members, bootstrap=None, csv_name="per_fold.csv"):
    folder.mkdir(parents=True)
    lines = ["fold,auc,auc_minus_diameter_rule"] + [
        f"{k},{a},{d}" for k, (a, d) in enumerate(zip(aucs, leads, strict=True))
    ]
    (folder / csv_name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    metrics = {"members": [{"spec": m} for m in members]}
    if bootstrap:
        boot = {"auc": {"low": bootstrap[0], "high": bootstrap[1]}}
        metrics["reference_models"] = {"ensemble_minus_diameter_rule": {"bootstrap": boot}}
    (folder / "ensemble_metrics.json").write_text(json.dumps(metrics), encoding="utf-8")


def test_collect_order_intervals_and_figure(quick_leads, tmp_path):
    _run(tmp_path / "quick_run_session20", [0.01, -0.03], [0.9, 0.8], ["a"], bootstrap=(-0.05, 0.03))
    _run(tmp_path / "quick_run_session12_second", [0.02, 0.0], [0.91, 0.85], ["b", "c"])
    _run(tmp_path / "quick_run_session12", [0.0, 0.01], [0.92, 0.86], ["b"])
    _run(tmp_path / "quick_run_session11", [0.0, 0.0], [0.9, 0.9], ["b"])  # before the profile's first session
    _run(tmp_path / "quick_run_session12_floor5", [0.0, 0.0], [0.9, 0.9], ["b"])  # a control: left out
    _run(tmp_path / "standard_run_session14", [0.02] * 5, [0.9] * 5, ["d"], csv_name="ensemble_per_fold.csv")
    known = {
        "B": {
            "members": ["b", "c"],
            "per_fold": [{"fold": 0, "auc": 0.91}, {"fold": 1, "auc": 0.85}],
            "ensemble_minus_diameter_rule": {"bootstrap": {"auc": {"low": -0.01, "high": 0.04}}},
        },
        "other": {  # same members, other AUCs: not the same predictions
            "members": ["b"],
            "per_fold": [{"fold": 0, "auc": 0.5}, {"fold": 1, "auc": 0.5}],
            "ensemble_minus_diameter_rule": {"bootstrap": {"auc": {"low": -1.0, "high": 1.0}}},
        },
    }
    (tmp_path / "lead_intervals.json").write_text(json.dumps(known), encoding="utf-8")

    entries = quick_leads.collect(tmp_path)
    assert [e["folder"] for e in entries] == [
        "quick_run_session12",
        "quick_run_session12_second",
        "quick_run_session20",
        "standard_run_session14",
    ]
    by_name = {e["folder"]: e for e in entries}
    assert by_name["quick_run_session12"]["interval"] is None
    assert by_name["quick_run_session12_second"]["interval"]["from"] == "lead_intervals.json:B"
    assert by_name["quick_run_session20"]["interval"]["low"] == -0.05
    assert by_name["quick_run_session20"]["mean_lead"] == pytest.approx(-0.01)
    assert by_name["standard_run_session14"]["profile"] == "standard"

    quick_leads.main(["--results", str(tmp_path)])
    assert (tmp_path / "quick_leads.png").stat().st_size > 10_000
    written = json.loads((tmp_path / "quick_leads.json").read_text(encoding="utf-8"))
    assert len(written["runs"]) == 4


def test_a_per_fold_file_without_leads_is_named(quick_leads, tmp_path):
    folder = tmp_path / "quick_run_session13"
    folder.mkdir()
    (folder / "per_fold.csv").write_text("fold,auc\n0,0.9\n", encoding="utf-8")
    (folder / "ensemble_metrics.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataError, match=r"per_fold\.csv: no auc_minus_diameter_rule column"):
        quick_leads.collect(tmp_path)
