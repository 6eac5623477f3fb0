"""``benchmarks/experiments/lead_intervals.py``: the ensemble step's bootstrap interval for a finished run, computed
on a copy so the run itself is left as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest

from naslung.pipeline.atomic_io import write_csv, write_json


def _run(root):
    rng = np.random.default_rng(0)
    rows = []
    for fold in (1, 2):
        labels = [i % 2 for i in range(10)]
        for slug in ("a", "b", "c"):
            fold_dir = root / "train" / slug / f"fold_{fold}"
            predictions = [
                {
                    "nodule_id": f"f{fold}n{i}",
                    "label": y,
                    "probability": float(np.clip(0.3 * y + rng.random() * 0.7, 0, 1)),
                }
                for i, y in enumerate(labels)
            ]
            write_csv(fold_dir / "test_predictions.csv", predictions, ["nodule_id", "label", "probability"])
            write_json(fold_dir / "config.json", {"arch": f"spec-{slug}"})
        rows += [{"nodule_id": f"f{fold}n{i}", "label": y, "fold": fold} for i, y in enumerate(labels)]
    rows += [{"nodule_id": f"f0n{i}", "label": i % 2, "fold": 0} for i in range(10)]
    for row in rows:
        row.update(patient_id=row["nodule_id"], series_uid="1.2", image=f"cubes/{row['nodule_id']}.npy")
        row["diameter_mm"] = round(float(4 + 5 * row["label"] + rng.random() * 6), 2)
    fields = ["nodule_id", "patient_id", "series_uid", "image", "label", "fold", "diameter_mm"]
    write_csv(root / "data" / "manifest.csv", rows, fields)
    return root


def test_interval_of_a_copy(load_benchmark, tmp_path):
    module = load_benchmark("experiments/lead_intervals")
    run = _run(tmp_path / "run")
    before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    out = tmp_path / "intervals.json"
    assert module.main(["--run", str(run), "--name", "demo", "--out", str(out)]) == 0
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == before  # nothing written in the run
    record = json.loads(out.read_text(encoding="utf-8"))["demo"]
    versus = record["ensemble_minus_diameter_rule"]
    assert record["members"] == ["spec-a", "spec-b", "spec-c"]
    assert versus["bootstrap"]["auc"]["observed"] == pytest.approx(versus["summary"]["auc_mean"])
    assert versus["bootstrap"]["auc"]["low"] <= versus["bootstrap"]["auc"]["high"]
    with pytest.raises(SystemExit):
        module.main(["--run", str(run), "--out", str(out)])  # a --name per --run
