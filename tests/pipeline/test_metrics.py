"""Tests of naslung.pipeline.metrics (against scikit-learn and through Ignite engines) and of the published tables."""

from __future__ import annotations

import csv
import logging
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

from naslung.pipeline.ensemble.published import (
    RESULTS_FIELDS,
    TABLE1,
    TABLE2_AVG,
    TABLE4,
    TABLE5,
    published_rows,
    results_table,
    write_results_table,
)
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.metrics import (
    BinaryConfusionMetric,
    BinaryOutputTransform,
    BinaryROCAUC,
    binary_metric_handlers,
    binary_metrics,
    malignancy_probability,
    summarise_folds,
)


def _sklearn_reference(y_true, prob, threshold=0.5):
    y_pred = (np.asarray(prob) > threshold).astype(int)
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "sensitivity": recall_score(y_true, y_pred, pos_label=1),
        "specificity": recall_score(y_true, y_pred, pos_label=0),
        "f1": f1_score(y_true, y_pred),
        "auc": roc_auc_score(y_true, prob),
    }


def _random_case(seed, n):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]  # both classes present
    prob = np.clip(0.3 * labels + 0.35 + rng.normal(0, 0.25, n), 0, 1)
    return labels, prob


# [labels, probabilities, expected {metric: value}] (hand-made: TP=2, FN=1, TN=2, FP=1)
HAND_CASES = [
    [
        [1, 1, 1, 0, 0, 0],
        [0.9, 0.6, 0.2, 0.1, 0.4, 0.7],
        {"accuracy": 4 / 6, "sensitivity": 2 / 3, "specificity": 2 / 3, "f1": 4 / 6, "tp": 2, "fp": 1},
    ],
    [  # a probability of exactly 0.5 is benign (strictly greater than the threshold is malignant)
        [1, 0, 1, 0],
        [0.5, 0.5, 0.51, 0.49],
        {"accuracy": 3 / 4, "sensitivity": 1 / 2, "specificity": 1.0, "f1": 2 / 3, "tp": 1, "fn": 1},
    ],
]
RANDOM_CASES = [[seed, n] for seed, n in ((0, 20), (1, 57), (2, 200))]


@pytest.mark.parametrize("labels, prob, expected", HAND_CASES)
def test_binary_metrics_hand_made(labels, prob, expected):
    result = binary_metrics(labels, prob)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value)
    reference = _sklearn_reference(labels, prob)
    for key, value in reference.items():
        assert result[key] == pytest.approx(value)


@pytest.mark.parametrize("seed, n", RANDOM_CASES)
def test_binary_metrics_random_against_sklearn(seed, n):
    labels, prob = _random_case(seed, n)
    for threshold in (0.3, 0.5, 0.7):
        result = binary_metrics(labels, prob, threshold=threshold)
        reference = _sklearn_reference(labels, prob, threshold)
        for key, value in reference.items():
            assert result[key] == pytest.approx(value), (key, threshold)
        assert result["tp"] + result["fp"] + result["tn"] + result["fn"] == n


def test_binary_metrics_given_predictions_override_threshold():
    result = binary_metrics([1, 0, 1], [0.1, 0.2, 0.9], y_pred=[1, 1, 0])
    assert (result["tp"], result["fp"], result["fn"]) == (1, 1, 1)
    assert result["auc"] == pytest.approx(roc_auc_score([1, 0, 1], [0.1, 0.2, 0.9]))


def test_binary_metrics_absent_class_gives_nan_and_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="naslung.pipeline.metrics"):
        result = binary_metrics([0, 0, 0], [0.2, 0.7, 0.1])
    assert math.isnan(result["sensitivity"]) and math.isnan(result["auc"])
    assert result["specificity"] == pytest.approx(2 / 3)
    assert result["f1"] == 0.0  # one false positive, no true positive
    assert "sensitivity" in caplog.text and "ROC AUC" in caplog.text


@pytest.mark.parametrize(
    "labels, prob", [[[], []], [[0, 1], [0.5]], [[0, 2], [0.1, 0.2]], [[0, 1], [0.1, float("nan")]]]
)
def test_binary_metrics_rejects_bad_input(labels, prob):
    with pytest.raises(DataError):
        binary_metrics(labels, prob)


def test_malignancy_probability_detects_logits_and_probabilities():
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    assert torch.allclose(malignancy_probability(logits), torch.softmax(logits, 1)[:, 1])
    probabilities = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    assert torch.allclose(malignancy_probability(probabilities), torch.tensor([0.2, 0.7]))
    assert torch.allclose(malignancy_probability(torch.tensor([[0.2], [0.9]])), torch.tensor([0.2, 0.9]))
    with pytest.raises(DataError):
        malignancy_probability(torch.zeros(4, 3))


def _run_engine(batches, output_style, **handler_kwargs):
    def step(engine, batch):
        pred, label = batch
        if output_style == "dict":
            return {"pred": pred, "label": label}
        if output_style == "decollated":  # what SupervisedEvaluator returns with decollate=True
            return [{"pred": p, "label": y} for p, y in zip(pred, label, strict=True)]
        return pred, label

    engine = Engine(step)
    for name, handler in binary_metric_handlers(**handler_kwargs).items():
        handler.attach(engine, name)
    return engine.run(batches).metrics


@pytest.mark.parametrize("output_style", ["dict", "decollated", "tuple"])
@pytest.mark.parametrize("seed, n", RANDOM_CASES[:2])
def test_ignite_metrics_match_sklearn(output_style, seed, n):
    labels, prob = _random_case(seed, n)
    logits = torch.tensor(np.stack([np.zeros(n), np.log(prob + 1e-6) - np.log(1 - prob + 1e-6)], 1)).float()
    label_tensor = torch.tensor(labels)
    batches = [(logits[i : i + 8], label_tensor[i : i + 8]) for i in range(0, n, 8)]
    metrics = _run_engine(batches, output_style, logits=True)
    reference = _sklearn_reference(labels, torch.softmax(logits, 1)[:, 1].numpy())
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key


def test_ignite_metrics_one_hot_labels_and_probabilities():
    probabilities = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6], [0.7, 0.3]])
    one_hot = torch.tensor([[0, 1], [1, 0], [1, 0], [0, 1]])
    metrics = _run_engine([(probabilities, one_hot)], "dict")
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["sensitivity"] == pytest.approx(0.5)
    assert metrics["specificity"] == pytest.approx(0.5)
    assert metrics["auc"] == pytest.approx(roc_auc_score([1, 0, 0, 1], [0.9, 0.2, 0.6, 0.3]))


def test_ignite_metric_absent_class_is_nan_with_warning(caplog):
    batch = (torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([0, 0]))
    with caplog.at_level(logging.WARNING, logger="naslung.pipeline.metrics"):
        metrics = _run_engine([batch], "dict")
    assert math.isnan(metrics["sensitivity"]) and math.isnan(metrics["auc"])
    assert metrics["specificity"] == pytest.approx(0.5)
    assert "sensitivity is undefined" in caplog.text and "ROC AUC" in caplog.text


def test_single_handlers_and_output_transform():
    metric = BinaryConfusionMetric("specificity", threshold=0.65)
    metric.attach(Engine(lambda e, b: b), "spec")
    metric.update(BinaryOutputTransform(threshold=0.65)((torch.tensor([[0.4, 0.6], [0.2, 0.8]]), torch.tensor([0, 0]))))
    assert metric.compute() == pytest.approx(0.5)
    auc = BinaryROCAUC()
    y_pred, y = BinaryOutputTransform("probability")({"pred": torch.tensor([[0.4, 0.6]]), "label": torch.tensor([1])})
    assert y_pred.shape == (1, 1) and y.shape == (1, 1)
    assert isinstance(auc, BinaryROCAUC)
    with pytest.raises(DataError):
        BinaryOutputTransform()(42)


def test_output_transform_puts_decollated_labels_beside_the_predictions():
    """MONAI's decollation leaves each label a Python number (on the CPU) while predictions stay on the network's
    device; the transform hands both to the metric on the predictions' device (on a GPU, the confusion matrix failed
    with "Expected all tensors to be on the same device"). The meta device stands in for a GPU."""
    output = [{"pred": torch.zeros(2, device="meta"), "label": label} for label in (0, 1, 1)]
    y_pred, y = BinaryOutputTransform("probability", logits=True)(output)
    assert y_pred.device.type == "meta" and y.device.type == "meta"
    assert y.shape == (3, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_metrics_of_decollated_cuda_predictions():
    output = [{"pred": torch.tensor(p, device="cuda"), "label": t} for p, t in (([2.0, 0.0], 0), ([0.0, 2.0], 1))]
    f1, auc = BinaryConfusionMetric("f1", logits=True), BinaryROCAUC(logits=True)
    for metric in (f1, auc):
        metric.update(metric._output_transform(output))
    assert f1.compute() == pytest.approx(1.0) and auc.compute() == pytest.approx(1.0)


SUMMARY_CASES = [
    [[0.8, 0.9], 1, 0.85, np.std([0.8, 0.9], ddof=1)],
    [[0.8, 0.9], 0, 0.85, 0.05],
    [[0.7, 0.7, 0.7], 1, 0.7, 0.0],
    [[0.6, float("nan"), 0.8], 1, 0.7, np.std([0.6, 0.8], ddof=1)],
]


@pytest.mark.parametrize("values, ddof, mean, std", SUMMARY_CASES)
def test_summarise_folds(values, ddof, mean, std):
    summary = summarise_folds([{"f1": v, "accuracy": 0.5} for v in values], ddof=ddof)
    assert summary["f1_mean"] == pytest.approx(mean)
    assert summary["f1_std"] == pytest.approx(std)
    assert summary["f1_std"] == 0.0 or std != 0.0
    assert summary["n_folds"] == len(values)
    assert summary["accuracy_std"] == 0.0


def test_summarise_folds_errors_and_single_fold():
    with pytest.raises(DataError):
        summarise_folds([])
    with pytest.raises(DataError):
        summarise_folds([{"f1": 0.5}, {"accuracy": 0.5}])
    assert math.isnan(summarise_folds([{"f1": 0.5}])["f1_std"])


# ---- published tables (naslung.pipeline.published) ----


def test_published_tables_internal_consistency():
    """Checks recorded in published.py's docstring, so a typo in the transcription fails here."""
    models = np.array([[r.accuracy, r.sensitivity, r.specificity, r.f1, r.params_m] for r in TABLE5[:10]])
    single = TABLE2_AVG[-1]
    assert single.method == "NASLung_single"
    expected = [single.accuracy, single.sensitivity, single.specificity, single.f1, single.params_m]
    assert np.allclose(models.mean(axis=0), expected, atol=0.006)
    softmax = next(row for row in TABLE4 if row["loss"] == "Softmax")
    assert (softmax["S0"] + softmax["S1"]) / softmax["M01"] == pytest.approx(softmax["DBI"], abs=1e-3)
    for row in TABLE1[1:3]:  # [28]'s F1 is the harmonic mean of sensitivity and specificity
        harmonic = 2 * row.sensitivity * row.specificity / (row.sensitivity + row.specificity)
        assert harmonic == pytest.approx(row.f1, abs=0.006)
    # Model-1's F1 fits the usual F1 with LUNA16's 450 malignant / 554 benign nodules
    model1 = TABLE5[0]
    tp, fn, fp = 450 * model1.sensitivity, 450 * (100 - model1.sensitivity), 554 * (100 - model1.specificity)
    assert 200 * tp / (2 * tp + fp + fn) == pytest.approx(model1.f1, abs=0.1)
    assert model1.spec == "[4,4,[4,4],[4,8],[8,8]]"
    with pytest.raises(ConfigError):
        published_rows("table9")


def test_results_table(tmp_path):
    ours = [
        {"method": "NASLung (MONAI)", **summarise_folds([binary_metrics([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.1])] * 2)},
        {"method": "single", "accuracy": 0.875, "f1": 0.8, "params": 140_000, "latency_ms": 0.25},
    ]
    markdown, rows = results_table(ours, tables=("table1", "table5"))
    assert [row["source"] for row in rows[:2]] == ["ours", "ours"]
    assert len(rows) == 2 + len(TABLE1) + len(TABLE5)
    assert rows[0]["accuracy"] == 75.0 and rows[0]["accuracy_std"] == 0.0
    assert rows[1]["params_m"] == 0.14 and rows[1]["sensitivity"] is None
    assert "| NASLung (ours) | published (table1) | 90.77 | 85.37 | 95.04 | 89.29 | 16.84 | – |" in markdown
    assert "75.00 ± 0.00" in markdown
    md_path, csv_path = write_results_table(ours, tmp_path / "results.md", tmp_path / "results.csv")
    assert md_path.read_text(encoding="utf-8") == results_table(ours)[0]
    with open(csv_path, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert tuple(read[0]) == RESULTS_FIELDS and len(read) == 2 + len(TABLE1)
    assert read[1]["latency_ms"] == "0.25" and read[1]["sensitivity"] == ""
    with pytest.raises(ConfigError):
        results_table([{"accuracy": 0.5}])
