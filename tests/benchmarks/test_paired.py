"""``benchmarks/experiments/paired.py``: recipe runs pair by seed and validation folds, and what else differs shows."""

from __future__ import annotations

import json

import pytest


def _run(folder, name: str, seed: int, folds: str, auc: float, acc: float, **args) -> None:
    result = {
        "args": {"name": name, "seed": seed, "val_folds": folds, "epochs": 10, **args},
        "final": {"val_auc": auc, "val_acc": acc},
    }
    (folder / f"{name}.json").write_text(json.dumps(result), encoding="utf-8")


@pytest.fixture
def paired(load_benchmark, tmp_path, monkeypatch):
    module = load_benchmark("experiments/paired")
    monkeypatch.setattr(module, "RECIPE_DIR", tmp_path)
    return module


def test_pairs_by_seed_and_folds_and_lists_differences(paired, tmp_path):
    _run(tmp_path, "b_s0", 0, "8,9", 0.90, 0.80)
    _run(tmp_path, "b_s1", 1, "8,9", 0.88, 0.82)
    _run(tmp_path, "bv_s0", 0, "6,7", 0.91, 0.85)
    _run(tmp_path, "a_s0", 0, "8,9", 0.92, 0.79, epochs=13)
    _run(tmp_path, "a_s1", 1, "8,9", 0.87, 0.84, epochs=13, smooth=0.0)  # an option b predates, left off
    _run(tmp_path, "a_s5", 5, "8,9", 0.99, 0.99, epochs=13)  # no base of seed 5: left out
    result = paired.compare("b*_s*.json", "a_s*.json")
    assert result["n_pairs"] == 2
    assert [p["base"] for p in result["pairs"]] == ["b_s0", "b_s1"]
    assert result["mean_d_auc"] == pytest.approx(0.005)
    assert result["auc_ahead"] == 1 and result["accuracy_ahead"] == 1
    assert result["pairs"][0]["differs"] == result["pairs"][1]["differs"] == {"epochs": [10, 13]}
    both = paired.compare(["b_s*.json", "bv_s*.json"], ["a_s*.json"])  # several globs per side
    assert [p["base"] for p in both["pairs"]] == ["b_s0", "b_s1"]


def test_main_writes_and_keeps_other_comparisons(paired, tmp_path):
    _run(tmp_path, "b_s0", 0, "8,9", 0.90, 0.80)
    _run(tmp_path, "a_s0", 0, "8,9", 0.92, 0.79, noise=25)
    out = tmp_path / "out" / "paired.json"
    out.parent.mkdir()
    out.write_text(json.dumps({"older": {"n_pairs": 4}}), encoding="utf-8")
    assert paired.main(["noise=b_s*.json,a_s*.json", "--out", str(out)]) == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    assert set(written) == {"older", "noise"}
    assert written["noise"]["pairs"][0]["differs"] == {"noise": [None, 25]}


def test_errors_name_the_problem(paired, tmp_path):
    _run(tmp_path, "b_s0", 0, "8,9", 0.90, 0.80)
    _run(tmp_path, "a_s0", 0, "6,7", 0.92, 0.79)
    with pytest.raises(SystemExit, match="no pairs"):
        paired.compare("b_s*.json", "a_s*.json")
    _run(tmp_path, "b2_s0", 0, "8,9", 0.90, 0.80)
    with pytest.raises(SystemExit, match="a second run for seed 0"):
        paired.compare("b*_s*.json", "a_s*.json")
    (tmp_path / "c_s0.json").write_text(json.dumps({"args": {"seed": 0}}), encoding="utf-8")
    with pytest.raises(SystemExit, match=r"c_s0\.json: not a finished recipe run"):
        paired.compare("c_s*.json", "a_s*.json")
    with pytest.raises(SystemExit, match="expected NAME=BASE_GLOB,ARM_GLOB"):
        paired.main(["noise=b_s*.json"])


def test_arm_auc_key_scores_the_same_runs_a_second_way(paired, tmp_path):
    """``--arm_auc angle_val_auc``: each run pairs with itself, its probability's AUC against its angle's."""
    for seed, (auc, angle) in enumerate([(0.90, 0.87), (0.88, 0.89), (0.91, 0.86)]):
        _run(tmp_path, f"r_s{seed}", seed, "8,9", auc, 0.8)
        result = json.loads((tmp_path / f"r_s{seed}.json").read_text(encoding="utf-8"))
        (tmp_path / f"r_s{seed}.json").write_text(json.dumps({**result, "angle_val_auc": angle}), encoding="utf-8")
    result = paired.compare("r_s*.json", "r_s*.json", arm_auc_key="angle_val_auc")
    assert result["arm_auc_key"] == "angle_val_auc"
    assert [p["d_auc"] for p in result["pairs"]] == pytest.approx([-0.03, 0.01, -0.05])
    assert result["mean_d_auc"] == pytest.approx(-0.07 / 3) and result["auc_ahead"] == 1
    assert result["accuracy_ahead"] == 0 and result["mean_d_accuracy"] == 0  # the same decisions
    assert all(p["differs"] == {} for p in result["pairs"])
    assert "arm_auc_key" not in paired.compare("r_s*.json", "r_s*.json")
    _run(tmp_path, "plain_s0", 0, "8,9", 0.90, 0.8)
    with pytest.raises(SystemExit, match=r"plain_s0\.json: no 'angle_val_auc'"):
        paired.compare("r_s0.json", "plain_s0.json", arm_auc_key="angle_val_auc")
