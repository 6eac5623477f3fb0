"""A candidate is scored at its best validation epoch, and two searches with one seed select the same networks."""

from __future__ import annotations

import json
import math

import pytest
from cube_data import make_cubes

from naslung.pipeline.errors import ConfigError, SearchError
from naslung.pipeline.search import candidate
from naslung.pipeline.search.candidate import CandidateEvaluator, best_validation_epoch
from naslung.pipeline.search.runner import run_search_step


def _row(epoch, **metrics):
    return {"epoch": epoch, "train_loss": 0.7, **{f"val_{k}": v for k, v in metrics.items()}}


# [history, metric, expected (epoch, value of metric)]
BEST_EPOCH_CASES = [
    [[_row(1, auc=0.6, f1=0.0), _row(2, auc=0.9, f1=0.0), _row(3, auc=0.7, f1=0.5)], "auc", (2, 0.9)],
    [[_row(1, auc=0.6, f1=0.0), _row(2, auc=0.9, f1=0.0), _row(3, auc=0.7, f1=0.5)], "f1", (3, 0.5)],
    [[_row(1, auc=0.8), _row(2, auc=0.8)], "auc", (1, 0.8)],  # ties: the earlier epoch
    [[_row(1, auc=math.nan), _row(2, auc=0.55)], "auc", (2, 0.55)],  # undefined values are skipped
]


@pytest.mark.parametrize("history, metric, expected", BEST_EPOCH_CASES)
def test_best_validation_epoch(history, metric, expected):
    epoch, metrics = best_validation_epoch(history, metric)
    assert (epoch, metrics[metric]) == expected and "train_loss" not in metrics


@pytest.mark.parametrize("history", [[], [_row(1, auc=math.nan)], [{"epoch": 1, "train_loss": 0.5}]])
def test_no_finite_validation_has_no_best_epoch(history):
    assert best_validation_epoch(history, "auc") is None


METRICS_1 = {"f1": 0.0, "accuracy": 0.5, "sensitivity": 0.0, "specificity": 1.0, "auc": 0.6}
METRICS_2 = {"f1": 0.0, "accuracy": 0.5, "sensitivity": 0.0, "specificity": 1.0, "auc": 0.9}
METRICS_3 = {"f1": 0.4, "accuracy": 0.6, "sensitivity": 0.3, "specificity": 0.9, "auc": 0.7}


def _fake_training(history_metrics, checkpoint_epoch=1):
    """A ``train_fold`` stand-in: the checkpoint (picked by F1, ties earlier) and one validation per epoch."""

    def train_fold(datalist, test_fold, out_dir, config=None, overrides=None, show_progress=False):
        history = [_row(i + 1, **m) for i, m in enumerate(history_metrics)]
        return {"val": dict(history_metrics[checkpoint_epoch - 1]), "best_epoch": checkpoint_epoch, "history": history}

    return train_fold


# [score_metric, expected best epoch, expected record metrics]
SCORE_CASES = [
    ["auc", 2, METRICS_2],  # F1 is 0 at epochs 1-2, but AUC ranks: epoch 2
    ["f1", 3, METRICS_3],
]


@pytest.mark.parametrize("score_metric, epoch, expected", SCORE_CASES)
def test_a_candidate_is_scored_at_its_best_validation_epoch(monkeypatch, tmp_path, score_metric, epoch, expected):
    monkeypatch.setattr(candidate, "train_fold", _fake_training([METRICS_1, METRICS_2, METRICS_3]))
    evaluator = CandidateEvaluator([{"fold": 0}], tmp_path, epochs=3, score_metric=score_metric)
    record = evaluator("[4,4,[4],[4],[4]]")
    assert {k: record[k] for k in expected} == expected
    assert record["best_epoch"] == epoch and record["checkpoint_epoch"] == 1 and record["score_metric"] == score_metric


def test_a_score_undefined_at_every_epoch_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(candidate, "train_fold", _fake_training([{**METRICS_1, "auc": math.nan}]))
    with pytest.raises(SearchError, match="val_fraction"):
        CandidateEvaluator([{"fold": 0}], tmp_path, epochs=1)("[4,4,[4],[4],[4]]")


def test_an_unknown_score_metric_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="score_metric"):
        CandidateEvaluator([{"fold": 0}], tmp_path, score_metric="loss")


#: 3 candidates of 2 epochs from a 19-candidate space, sequential, single-thread trials.
SEARCH = {
    "space": {"channels": [4, 8], "min_blocks": 3, "max_blocks": 4},
    "max_candidates": 3,
    "test_folds": [1],
    "epochs_per_candidate": 2,
    "executor": "sequential",
    "threads_per_trial": 1,
    "batch_size": 1,
    "latency_warmup": 1,
    "latency_repeats": 2,
    "select_top_n": 2,
    "train": {"val_fraction": 0.3, "batch_size": 8},
}


def _read(out):
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text(encoding="utf-8").splitlines()]
    selected = json.loads((out / "selected.json").read_text(encoding="utf-8"))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return journal, selected, summary


KEPT = ("spec", "latency_ms", "auc", "f1", "accuracy", "best_epoch", "iteration")


def test_two_searches_with_one_seed_select_the_same_networks(tmp_path):
    data = make_cubes(tmp_path / "data", n=16, folds=4)
    config = {**SEARCH, "latency_table": str(tmp_path / "latency.json")}
    for run in ("run1", "run2"):  # fresh run folders, one machine's latency table
        run_search_step(tmp_path / run / "search", config, data_dir=data)
    journal1, selected1, summary1 = _read(tmp_path / "run1" / "search")
    journal2, selected2, summary2 = _read(tmp_path / "run2" / "search")
    assert summary1["latency"]["measured"] > 0 and summary2["latency"]["measured"] == 0  # run 2 timed nothing
    assert summary2["latency"]["from_table"] == summary1["latency"]["measured"]
    # same latencies, so the same pruning and proposals; same seed, so the same weights and scores
    assert [{k: r[k] for k in KEPT} for r in journal1] == [{k: r[k] for k in KEPT} for r in journal2]
    assert selected1["specs"] == selected2["specs"] and len(selected1["specs"]) == 2
    assert summary1["pruned"] == summary2["pruned"]
    for record in journal1:  # each score is its training's best validation epoch
        history = [
            json.loads(line)
            for path in (tmp_path / "run1" / "search" / "candidates").glob("*/all/history.jsonl")
            if json.loads((path.parent / "config.json").read_text(encoding="utf-8"))["arch"] == record["spec"]
            for line in path.read_text(encoding="utf-8").splitlines()
        ]
        assert len(history) == 2 and record["auc"] == max(h["val_auc"] for h in history)


@pytest.mark.slow
def test_the_ray_executor_trains_what_the_sequential_one_does(tmp_path):
    pytest.importorskip("ray")
    data = make_cubes(tmp_path / "data", n=16, folds=4)
    config = {**SEARCH, "latency_table": str(tmp_path / "latency.json"), "max_candidates": 2, "batch_size": 2}
    run_search_step(tmp_path / "sequential", config, data_dir=data)
    run_search_step(tmp_path / "ray", {**config, "executor": "ray", "workers": 2}, data_dir=data)
    journal_s, selected_s, _ = _read(tmp_path / "sequential")
    journal_r, selected_r, summary_r = _read(tmp_path / "ray")
    assert summary_r["executor"]["executor"] == "ray"

    def by_spec(journal):
        return sorted(({k: r[k] for k in KEPT} for r in journal), key=lambda r: r["spec"])

    assert by_spec(journal_s) == by_spec(journal_r)  # trials finish in any order; their records are the same
    assert selected_s["specs"] == selected_r["specs"]
