"""The ``naslung ensemble`` step over hand-made ``RUN/train`` predictions: the vote, the tables, skipping, members."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from naslung.pipeline.atomic_io import write_csv, write_json
from naslung.pipeline.ensemble.step import ensemble_headline, find_members, run_ensemble_step
from naslung.pipeline.errors import DataError
from naslung.pipeline.metrics import binary_metrics

LABELS = {1: [1, 1, 0, 0, 1, 0], 2: [0, 1, 0, 1, 1, 0]}
# member -> fold -> probabilities of malignancy for the nodules above
PROBS = {
    "a": {1: [0.9, 0.6, 0.2, 0.7, 0.4, 0.1], 2: [0.2, 0.8, 0.3, 0.6, 0.9, 0.4]},
    "b": {1: [0.8, 0.4, 0.1, 0.6, 0.6, 0.3], 2: [0.6, 0.7, 0.2, 0.4, 0.8, 0.1]},
    "c": {1: [0.7, 0.7, 0.6, 0.2, 0.3, 0.2], 2: [0.1, 0.4, 0.7, 0.8, 0.7, 0.2]},
}


def make_run(root, members=("a", "b", "c"), folds=(1, 2), probs=PROBS, labels=LABELS):
    """Write RUN/train/<slug>/fold_<k>/test_predictions.csv (and a config.json naming the spec)."""
    for slug in members:
        for fold in folds:
            fold_dir = root / "train" / slug / f"fold_{fold}"
            rows = [
                {"nodule_id": f"f{fold}n{i}", "label": y, "probability": p}
                for i, (y, p) in enumerate(zip(labels[fold], probs[slug][fold], strict=True))
            ]
            write_csv(fold_dir / "test_predictions.csv", rows[::-1], ["nodule_id", "label", "probability"])
            write_json(fold_dir / "config.json", {"arch": f"spec-{slug}"})
    return root


def _read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_majority_vote_tables(tmp_path):
    run = make_run(tmp_path)
    result = run_ensemble_step(run, latency=False)
    assert result["n_members"] == 3 and result["folds"] == [1, 2] and not result["skipped"]
    per_fold = {int(r["fold"]): r for r in _read(run / "ensemble" / "per_fold.csv")}
    for fold in (1, 2):
        matrix = np.array([PROBS[m][fold] for m in "abc"])
        votes = (matrix > 0.5).sum(0)
        expected = (votes >= 2).astype(int)  # more than floor(3/2) = 1 vote
        rows = _read(run / "ensemble" / f"fold_{fold}" / "predictions.csv")
        assert [r["nodule_id"] for r in rows] == sorted(f"f{fold}n{i}" for i in range(6))
        by_id = {r["nodule_id"]: r for r in rows}
        for i in range(6):
            row = by_id[f"f{fold}n{i}"]
            assert int(row["prediction"]) == expected[i]
            assert int(row["votes"]) == votes[i]
            assert float(row["vote_fraction"]) == pytest.approx(votes[i] / 3, abs=1e-6)
            assert float(row["mean_probability"]) == pytest.approx(matrix[:, i].mean(), abs=1e-6)
            assert int(row["disagreement"]) == int(0 < votes[i] < 3)
            assert float(row["prob_b"]) == pytest.approx(PROBS["b"][fold][i])
        truth = binary_metrics(LABELS[fold], matrix.mean(0), y_pred=expected)
        for name in ("accuracy", "sensitivity", "specificity", "f1", "auc", "tp", "fn"):
            assert float(per_fold[fold][name]) == pytest.approx(truth[name])
        assert int(per_fold[fold]["disagreements"]) == int(((votes > 0) & (votes < 3)).sum())
    f1 = [float(per_fold[f]["f1"]) for f in (1, 2)]
    assert result["summary"]["f1_mean"] == pytest.approx(np.mean(f1))
    assert result["summary"]["f1_std"] == pytest.approx(np.std(f1, ddof=1))
    saved = json.loads((run / "ensemble" / "metrics.json").read_text(encoding="utf-8"))
    assert saved["summary"] == pytest.approx(result["summary"])
    assert [m["slug"] for m in saved["members"]] == ["a", "b", "c"]
    assert saved["members"][0]["spec"] == "spec-a"


SIZE_CASES = [[1, [1]], [2, [1]], [3, [1, 3]], [5, [1, 3, 5]]]


@pytest.mark.parametrize("n_members, sizes", SIZE_CASES)
def test_ensemble_size_study_uses_available_sizes(tmp_path, n_members, sizes):
    rng = np.random.default_rng(n_members)
    names = [f"m{i}" for i in range(n_members)]
    probs = {name: {f: rng.uniform(0, 1, 6).round(3).tolist() for f in (1, 2)} for name in names}
    run = make_run(tmp_path, names, probs=probs)
    run_ensemble_step(run, latency=False, draws=4)
    rows = _read(run / "ensemble" / "ensemble_size.csv")
    assert [int(r["size"]) for r in rows] == sizes
    assert all(int(r["draws"]) == 4 for r in rows)
    assert float(rows[-1]["f1_std"]) == 0.0 or sizes[-1] < n_members  # the full ensemble never varies
    assert (run / "ensemble" / "ensemble_size.png").stat().st_size > 1000


def test_results_table_marks_published_rows(tmp_path):
    run = make_run(tmp_path)
    run_ensemble_step(run, latency=False)
    rows = _read(run / "ensemble" / "results_table.csv")
    ours = [r for r in rows if r["source"] == "ours"]
    assert [r["method"] for r in ours] == ["Ensemble of 3 (ours)", "spec-a (ours)", "spec-b (ours)", "spec-c (ours)"]
    assert {r["table"] for r in rows if r["source"] == "published"} == {"table1", "table5"}
    markdown = (run / "ensemble" / "results_table.md").read_text(encoding="utf-8")
    assert "| Ensemble of 3 (ours) | ours |" in markdown and "published (table1)" in markdown


def test_rerun_is_skipped_until_inputs_change(tmp_path):
    run = make_run(tmp_path)
    run_ensemble_step(run, latency=False)
    stamp = (run / "ensemble" / "metrics.json").stat().st_mtime_ns
    assert run_ensemble_step(run, latency=False)["skipped"]
    assert (run / "ensemble" / "metrics.json").stat().st_mtime_ns == stamp
    probs = {**PROBS, "a": {1: [0.1] * 6, 2: PROBS["a"][2]}}
    make_run(tmp_path, probs=probs)
    result = run_ensemble_step(run, latency=False)
    assert not result["skipped"]


def test_member_choice(tmp_path):
    run = make_run(tmp_path)
    assert [m.slug for m in find_members(run)] == ["a", "b", "c"]
    assert [m.slug for m in find_members(run, ["c", "a"])] == ["c", "a"]
    write_json(run / "search" / "selected.json", {"specs": ["b", "c", "never-trained"]})
    assert [m.slug for m in find_members(run)] == ["b", "c"]
    with pytest.raises(DataError, match="zzz"):
        find_members(run, ["zzz"])
    with pytest.raises(DataError, match="no trained network"):
        find_members(tmp_path / "empty")


def test_members_use_shared_folds_and_reject_mismatches(tmp_path):
    run = make_run(tmp_path)
    make_run(tmp_path, members=("d",), folds=(1,), probs={"d": PROBS["a"]})
    assert [m.folds for m in find_members(run)] == [(1,)] * 4
    bad = {"a": {1: PROBS["a"][1]}, "b": {1: PROBS["b"][1]}}
    run2 = make_run(tmp_path / "run2", members=("a", "b"), folds=(1,), probs=bad)
    path = run2 / "train" / "b" / "fold_1" / "test_predictions.csv"
    rows = _read(path)
    rows[0]["label"] = 1 - int(rows[0]["label"])
    write_csv(path, rows, ["nodule_id", "label", "probability"])
    with pytest.raises(DataError, match="labels differ"):
        run_ensemble_step(run2, latency=False)


def test_parameters_and_latency_from_the_checkpoint(tmp_path):
    from naslung.networks import build_network, count_parameters
    from naslung.pipeline.training.step import load_train_config

    run = make_run(tmp_path, members=("a",))
    config = load_train_config(overrides={"arch": "[4,4,[4],[4],[4]]"})
    network = build_network("[4,4,[4],[4],[4]]", head="angular")
    for fold in (1, 2):
        fold_dir = run / "train" / "a" / f"fold_{fold}"
        write_json(fold_dir / "config.json", config)
        (fold_dir / "checkpoints").mkdir()
        torch.save(network.state_dict(), fold_dir / "checkpoints" / "best_model.pt")
    result = run_ensemble_step(run, latency=True)
    member = result["members"][0]
    assert member["params"] == count_parameters(network) == result["params"]
    assert member["spec"] == "[4,4,[4],[4],[4]]"
    assert member["latency_ms"] > 0 and result["latency_ms"] == pytest.approx(member["latency_ms"])


def write_run_data(run, template, ratings=True):
    """RUN/data/manifest.csv for the nodules of LABELS (folds 1-2) plus a training-only fold 0, and cohort.csv."""
    from naslung.pipeline.data.cohort_table import write_cohort_csv
    from naslung.pipeline.ensemble.reference_models import CEILING_RATINGS

    rng = np.random.default_rng(0)
    nodules = [(f"f{f}n{i}", f, y) for f, labels in LABELS.items() for i, y in enumerate(labels)]
    nodules += [(f"f0n{i}", 0, i % 2) for i in range(8)]
    rows = []
    for nodule_id, fold, label in nodules:
        row = template(nodule_id=nodule_id, patient_id=nodule_id, fold=fold, label=label)
        row["diameter_mm"] = round(float(rng.uniform(3, 12) + 4 * label), 2)
        for name in CEILING_RATINGS:
            row[name] = ";".join(str(v) for v in rng.integers(1, 5, 3) + label)
        row["malignancy"] = "5;4;4" if label else "1;2;2"
        rows.append(row)
    manifest = [{**r, "image": f"cubes/{r['nodule_id']}.npy"} for r in rows]
    write_csv(
        run / "data" / "manifest.csv",
        manifest,
        ["nodule_id", "patient_id", "series_uid", "image", "label", "fold", "diameter_mm"],
    )
    if ratings:
        write_cohort_csv(rows, run / "data" / "cohort.csv")
    return rows


def test_reference_models_beside_the_ensemble(tmp_path, synthetic_scan):
    from naslung.pipeline.ensemble.reference_models import evaluate_reference_models, load_reference_data

    run = make_run(tmp_path)
    write_run_data(run, synthetic_scan().cohort_row)
    result = run_ensemble_step(run, latency=False)
    per_fold = {int(r["fold"]): r for r in _read(run / "ensemble" / "per_fold.csv")}
    fold_nodules = {f: [f"f{f}n{i}" for i in range(6)] for f in (1, 2)}
    expected = evaluate_reference_models(load_reference_data(run / "data"), fold_nodules)
    for name in ("diameter_rule", "ratings_ceiling"):
        for fold_metrics in expected[name]["per_fold"]:
            row = per_fold[fold_metrics["fold"]]
            assert fold_metrics["n_train"] == 14  # the other test fold and fold 0, never its own
            for metric in ("accuracy", "auc"):
                assert float(row[f"{name}_{metric}"]) == pytest.approx(fold_metrics[metric])
    for row in per_fold.values():
        for metric in ("accuracy", "auc"):
            difference = float(row[metric]) - float(row[f"diameter_rule_{metric}"])
            assert float(row[f"{metric}_minus_diameter_rule"]) == pytest.approx(difference)
    saved = json.loads((run / "ensemble" / "metrics.json").read_text(encoding="utf-8"))["reference_models"]
    assert saved["diameter_rule"]["summary"] == pytest.approx(expected["diameter_rule"]["summary"])
    versus = saved["ensemble_minus_diameter_rule"]["summary"]
    differences = [float(per_fold[f]["auc_minus_diameter_rule"]) for f in (1, 2)]
    assert versus["auc_mean"] == pytest.approx(np.mean(differences))
    assert versus["auc_std"] == pytest.approx(np.std(differences, ddof=1))
    assert versus["auc_folds_ahead"] == sum(d > 0 for d in differences)
    bootstrap = saved["ensemble_minus_diameter_rule"]["bootstrap"]
    accuracy_differences = [float(per_fold[f]["accuracy_minus_diameter_rule"]) for f in (1, 2)]
    assert bootstrap["auc"]["observed"] == pytest.approx(np.mean(differences))  # the same lead as the table's
    assert bootstrap["accuracy"]["observed"] == pytest.approx(np.mean(accuracy_differences))
    for metric in ("accuracy", "auc"):
        assert bootstrap[metric]["low"] <= bootstrap[metric]["high"]
    auc = bootstrap["auc"]
    assert ensemble_headline(result).endswith(
        f"of 2 folds (AUC lead {auc['observed']:+.3f}, 95% interval {auc['low']:+.3f} to {auc['high']:+.3f})"
    )
    assert result["reference_models"]["ratings_ceiling"]["ratings_source"].endswith("cohort.csv")
    methods = [r["method"] for r in _read(run / "ensemble" / "results_table.csv") if r["source"] == "ours"]
    assert methods[-2:] == [
        "Diameter rule, no image (ours)",
        "Ratings ceiling: reader ratings, not an image model (ours)",
    ]
    assert (run / "ensemble" / "reference_per_fold.png").stat().st_size > 1000


def test_reference_models_omitted_with_a_reason(tmp_path, synthetic_scan):
    run = make_run(tmp_path)
    result = run_ensemble_step(run, latency=False)  # no RUN/data/manifest.csv at all
    assert "manifest not found" in result["reference_models"]["diameter_rule"]["omitted"]
    row = _read(run / "ensemble" / "per_fold.csv")[0]
    assert {"fold", "accuracy", "auc", "diameter_rule_accuracy", "auc_minus_diameter_rule"} <= set(row)
    assert row["diameter_rule_auc"] == "" and row["ratings_ceiling_auc"] == ""
    write_run_data(run, synthetic_scan().cohort_row, ratings=False)  # ids not in the packaged cohort
    result = run_ensemble_step(run, latency=False)
    assert not result["skipped"]  # the manifest is an input of the step
    references = result["reference_models"]
    assert "packaged default cohort lacks" in references["ratings_ceiling"]["omitted"]
    assert len(references["diameter_rule"]["per_fold"]) == 2
    row = _read(run / "ensemble" / "per_fold.csv")[0]
    assert row["diameter_rule_auc"] != "" and row["ratings_ceiling_auc"] == ""
