"""The reference models: the diameter threshold never sees the test fold, the ceiling never reads malignancy."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from naslung.pipeline.data.cohort_table import load_default_cohort, write_cohort_csv
from naslung.pipeline.ensemble.reference_models import (
    CEILING_FEATURES,
    CEILING_RATINGS,
    DIAMETER_RULE,
    RATINGS_CEILING,
    evaluate_reference_models,
    fit_diameter_threshold,
    fold_differences,
    load_reference_data,
    mean_ratings,
    reference_data_from_rows,
)
from naslung.pipeline.errors import DataError
from naslung.pipeline.metrics import binary_metrics

MANIFEST_FIELDS = ["nodule_id", "patient_id", "series_uid", "image", "label", "fold", "diameter_mm", "malignancy_mean"]


def make_rows(template, diameters, labels, folds, seed=0):
    """Cohort rows (a fixture's cohort row as template) with reader ratings that follow the label, noisily."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, (diameter, label, fold) in enumerate(zip(diameters, labels, folds, strict=True)):
        row = template(nodule_id=f"P{n:03d}_n1", patient_id=f"P{n:03d}", diameter_mm=diameter, label=label, fold=fold)
        for name in CEILING_RATINGS:
            row[name] = ";".join(str(int(v)) for v in np.clip(rng.integers(1, 4, 3) + 2 * label, 1, 6))
        row["malignancy"] = "5;5;4" if label else "1;2;1"
        rows.append(row)
    return rows


def write_manifest(data_dir, rows):
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**r, "image": f"cubes/{r['nodule_id']}.npy", "series_uid": "s"} for r in rows)


# training folds 1-2 separate at 9.5 mm; the test fold's benign nodules (10-11 mm) would move the cut to 11.5 mm
LEAK_DIAMETERS = [4, 5, 6, 7, 12, 13, 14, 15, 4.5, 5.5, 12.5, 13.5, 10, 10.5, 11, 20, 21]
LEAK_LABELS = [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1]
LEAK_FOLDS = [1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0, 0, 0]


def test_threshold_is_fitted_without_the_test_fold(synthetic_scan):
    rows = make_rows(synthetic_scan().cohort_row, LEAK_DIAMETERS, LEAK_LABELS, LEAK_FOLDS)
    data = reference_data_from_rows(rows)
    result = evaluate_reference_models(data, {0: [r["nodule_id"] for r in rows if r["fold"] == 0]})
    fold = result[DIAMETER_RULE]["per_fold"][0]
    assert fold["threshold_mm"] == pytest.approx(9.5)  # 11.5 if the test fold had been used
    assert fold["n_train"] == 12
    assert fold["accuracy"] == pytest.approx(2 / 5)  # the three benign test nodules are above 9.5 mm
    assert fold["auc"] == pytest.approx(1.0)  # the diameter itself ranks the test fold perfectly
    assert fit_diameter_threshold(LEAK_DIAMETERS, LEAK_LABELS)[0] == pytest.approx(11.5)  # the leak is visible


def test_ensemble_test_nodules_never_train_whatever_their_fold(synthetic_scan):
    rows = make_rows(synthetic_scan().cohort_row, LEAK_DIAMETERS, LEAK_LABELS, LEAK_FOLDS)
    data = reference_data_from_rows(rows)
    # the ensemble tested fold 0 plus a nodule the manifest places in fold 1: it must leave the training set
    tested = [r["nodule_id"] for r in rows if r["fold"] == 0] + [rows[3]["nodule_id"]]
    result = evaluate_reference_models(data, {0: tested})
    assert result[DIAMETER_RULE]["per_fold"][0]["n_train"] == 11
    assert result[DIAMETER_RULE]["per_fold"][0]["n"] == 6
    with pytest.raises(DataError, match="not in the data folder's manifest"):
        evaluate_reference_models(data, {0: ["no-such-nodule"]})
    with pytest.raises(DataError, match="test labels differ"):
        evaluate_reference_models(data, {0: tested}, {0: [1] * len(tested)})


THRESHOLD_CASES = [
    [[1, 2, 3, 4], [0, 0, 1, 1], 2.5, 1.0],  # separable: the midpoint between the classes
    [[1, 1, 2, 2], [0, 0, 1, 1], 1.5, 1.0],  # repeated diameters
    [[1, 2, 3, 4], [0, 1, 0, 1], 1.5, 0.75],  # two equal optima (1.5, 3.5): the lower middle one
    [[1, 2, 3, 4, 5], [1, 0, 1, 0, 1], 2.5, 0.6],  # optima 2.5 and 4.5 (1.5 and 3.5 reach 0.4 only)
    [[1, 2, 3, 4, 5, 6], [0, 1, 0, 1, 0, 1], 3.5, 4 / 6],  # three equal optima 1.5, 3.5, 5.5: the middle one
]


@pytest.mark.parametrize("diameters, labels, expected_mm, expected_accuracy", THRESHOLD_CASES)
def test_threshold_maximises_training_accuracy(diameters, labels, expected_mm, expected_accuracy):
    threshold_mm, accuracy = fit_diameter_threshold(diameters, labels)
    assert threshold_mm == pytest.approx(expected_mm) and accuracy == pytest.approx(expected_accuracy)
    assert accuracy == pytest.approx(binary_metrics(labels, diameters, threshold=threshold_mm)["accuracy"])
    values = np.unique(diameters)
    brute = max(binary_metrics(labels, diameters, threshold=t)["accuracy"] for t in (values[1:] + values[:-1]) / 2)
    assert accuracy == pytest.approx(brute)


def test_threshold_needs_two_diameters():
    with pytest.raises(DataError, match="distinct diameter"):
        fit_diameter_threshold([5.0, 5.0], [0, 1])


def test_ceiling_ignores_the_malignancy_rating(synthetic_scan):
    assert "malignancy" not in CEILING_FEATURES and len(CEILING_RATINGS) == 8
    n = 40
    rng = np.random.default_rng(1)
    labels = [int(v) for v in rng.integers(0, 2, n)]
    rows = make_rows(
        synthetic_scan().cohort_row, rng.uniform(4, 20, n).round(2).tolist(), labels, [i % 4 for i in range(n)]
    )
    result = evaluate_reference_models(reference_data_from_rows(rows))
    assert result[RATINGS_CEILING]["inputs"] == list(CEILING_FEATURES)
    assert "not an image model" in result[RATINGS_CEILING]["label"]
    # the malignancy rating decides the label; flipping it (and malignancy_mean) must change nothing
    flipped = [
        {**r, "malignancy": "1;1;1" if r["label"] else "5;5;5", "malignancy_mean": 4.0 - r["label"]} for r in rows
    ]
    again = evaluate_reference_models(reference_data_from_rows(flipped))
    for before, after in zip(result[RATINGS_CEILING]["per_fold"], again[RATINGS_CEILING]["per_fold"], strict=True):
        assert before == after
    assert len(result[RATINGS_CEILING]["per_fold"]) == 4
    assert result[RATINGS_CEILING]["summary"]["n_folds"] == 4


def test_mean_ratings_average_the_readers():
    row = {"nodule_id": "x", **{name: "1;2;3" for name in CEILING_RATINGS}, "texture": "5", "malignancy": "5;5;5"}
    assert mean_ratings(row).tolist() == [2.0] * 7 + [5.0]
    with pytest.raises(DataError, match="no 'subtlety' ratings"):
        mean_ratings({**row, "subtlety": ""})


def test_ratings_from_the_data_folders_cohort(tmp_path, synthetic_scan, cohort_csv_writer):
    rows = make_rows(synthetic_scan().cohort_row, LEAK_DIAMETERS, LEAK_LABELS, LEAK_FOLDS)
    data_dir = tmp_path / "data"
    write_manifest(data_dir, rows)
    write_cohort_csv(rows, data_dir / "cohort.csv")
    data = load_reference_data(data_dir)
    assert data.ratings_source == str(data_dir / "cohort.csv") and data.ratings.shape == (len(rows), 8)
    assert data.ratings[0].tolist() == mean_ratings(rows[0]).tolist()
    # a cohort without rating columns: the ceiling is omitted with the reason, the diameter rule still runs
    cohort_csv_writer(data_dir / "cohort.csv", rows)
    data = load_reference_data(data_dir)
    assert data.ratings is None and "no rating columns" in data.ratings_source
    result = evaluate_reference_models(data)
    assert "no rating columns" in result[RATINGS_CEILING]["omitted"] and "per_fold" not in result[RATINGS_CEILING]
    assert len(result[DIAMETER_RULE]["per_fold"]) == 3


def test_ratings_from_the_packaged_cohort_only_when_it_matches(tmp_path):
    rows = load_default_cohort()[:30]
    write_manifest(tmp_path, rows)
    data = load_reference_data(tmp_path)
    assert data.ratings_source == "the packaged default cohort" and data.ratings.shape == (30, 8)
    write_manifest(tmp_path, [{**r, "diameter_mm": r["diameter_mm"] + 1.0} for r in rows])
    assert "another diameter or label" in load_reference_data(tmp_path).ratings_source
    write_manifest(tmp_path, [{**r, "nodule_id": r["nodule_id"] + "x"} for r in rows])
    assert "lacks 30 nodule(s)" in load_reference_data(tmp_path).ratings_source


def test_manifest_needs_the_diameter(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        load_reference_data(tmp_path)
    (tmp_path / "manifest.csv").write_text("nodule_id,label,fold\nn1,1,0\n")
    with pytest.raises(DataError, match="diameter_mm"):
        load_reference_data(tmp_path)


def test_fold_differences():
    ours = [{"fold": 0, "accuracy": 0.9, "auc": 0.8}, {"fold": 1, "accuracy": 0.7, "auc": 0.95}]
    reference = [{"fold": 1, "accuracy": 0.8, "auc": 0.9}, {"fold": 0, "accuracy": 0.8, "auc": 0.9}]
    rows, summary = fold_differences(ours, reference)
    assert [r["fold"] for r in rows] == [0, 1]
    assert [r["accuracy"] for r in rows] == pytest.approx([0.1, -0.1])
    assert summary["accuracy_mean"] == pytest.approx(0.0) and summary["auc_folds_ahead"] == 1
    with pytest.raises(DataError, match="differ"):
        fold_differences(ours, reference[:1])
