"""``benchmarks/experiments/shared_holdout.py``: a run validated on two folds pairs with the two one-fold runs of its
seed, and each side is scored as the mean of its per-fold AUC."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from naslung.pipeline.errors import DataError

LABELS = {8: [1, 0, 1, 0, 0, 1], 9: [0, 1, 1, 0, 1, 0]}


def _manifest(folder) -> None:
    """A manifest in ``naslung prepare``'s columns, with an (empty) cube file for each row."""
    rows = [{"nodule_id": f"n{i}", "label": 1, "fold": 0} for i in range(3)]
    rows += [
        {"nodule_id": f"f{f}n{i}", "label": y, "fold": f} for f, labels in LABELS.items() for i, y in enumerate(labels)
    ]
    (folder / "cubes").mkdir()
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["nodule_id", "patient_id", "series_uid", "image", "label", "fold"])
        writer.writeheader()
        for row in rows:
            (folder / "cubes" / f"{row['nodule_id']}.npy").touch()
            writer.writerow(
                {**row, "patient_id": row["nodule_id"], "series_uid": "1.2", "image": f"cubes/{row['nodule_id']}.npy"}
            )


def _run(folder, name: str, seed: int, folds: str, probabilities, **args) -> None:
    result = {
        "args": {"name": name, "seed": seed, "val_folds": folds, "epochs": 10, **args},
        "val_probabilities": list(probabilities),
    }
    (folder / f"{name}.json").write_text(json.dumps(result), encoding="utf-8")


@pytest.fixture
def shared(load_benchmark, tmp_path, monkeypatch):
    module = load_benchmark("experiments/shared_holdout")
    monkeypatch.setattr(module, "RECIPE_DIR", tmp_path)
    _manifest(tmp_path)
    return module


def test_pairs_and_fold_means(shared, tmp_path):
    rng = np.random.default_rng(0)
    together = rng.random(12)
    apart = {8: rng.random(6), 9: rng.random(6)}
    _run(tmp_path, "sh_s0", 0, "8,9", together, epochs=20)
    _run(tmp_path, "sep_v8_s0", 0, "8", apart[8])
    _run(tmp_path, "sep_v9_s0", 0, "9", apart[9])
    _run(tmp_path, "sep_v9_s1", 1, "9", apart[9])  # no shared run of seed 1: unpaired
    out = tmp_path / "out.json"
    argv = ["--data", str(tmp_path), "--allow", "epochs", "--out", str(out), "x=sh_s*.json,sep_*.json"]
    assert shared.main(argv) == 0
    result = json.loads(out.read_text(encoding="utf-8"))["x"]
    assert result["n_pairs"] == 1
    expected_shared = np.mean([roc_auc_score(LABELS[8], together[:6]), roc_auc_score(LABELS[9], together[6:])])
    expected_apart = np.mean([roc_auc_score(LABELS[k], apart[k]) for k in (8, 9)])
    pair = result["pairs"][0]
    assert pair["shared_auc"] == pytest.approx(expected_shared)
    assert pair["separate_auc"] == pytest.approx(expected_apart)
    assert result["mean_d_auc"] == pytest.approx(expected_shared - expected_apart)
    assert pair["separate"] == ["sep_v8_s0", "sep_v9_s0"]


def test_a_pair_differing_in_more_than_allowed_stops(shared, tmp_path):
    _run(tmp_path, "sh_s0", 0, "8,9", np.linspace(0, 1, 12), epochs=20)
    _run(tmp_path, "sep_v8_s0", 0, "8", np.linspace(0, 1, 6))
    _run(tmp_path, "sep_v9_s0", 0, "9", np.linspace(0, 1, 6))
    with pytest.raises(SystemExit, match="argument 'epochs' differs"):
        shared.main(["--data", str(tmp_path), "--out", str(tmp_path / "o.json"), "x=sh_s*.json,sep_*.json"])
    with pytest.raises(DataError, match="manifest not found"):
        shared.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o.json"), "x=sh_s*.json,sep_*.json"])
    with pytest.raises(SystemExit, match="no file matches"):
        shared.main(["--data", str(tmp_path), "--out", str(tmp_path / "o.json"), "x=none*.json,sep_*.json"])
