"""The search step: real tiny searches write the journal and outputs, resume after a kill, never see a test fold."""

from __future__ import annotations

import csv
import functools
import json
import operator
import sys

import pytest
from cube_data import make_cubes

from naslung.pipeline.errors import ConfigError, DataError, SearchError
from naslung.pipeline.search import SearchSpace, candidate
from naslung.pipeline.search.executors import (
    RayExecutor,
    SequentialExecutor,
    make_executor,
    ray_available,
    shared_ray_instance,
)
from naslung.pipeline.search.runner import load_search_config, run_search_step, select_candidates

TEST_FOLDS = [1]

#: A 19-candidate space (3-4 blocks of width 4 or 8), 2 candidates of one epoch, cheap latency, in this process.
#: Its three widest 4-block candidates are incomparable, so one trained candidate never prunes the whole space: the
#: search always reaches its second training.
TINY = {
    "space": {"channels": [4, 8], "min_blocks": 3, "max_blocks": 4},
    "max_candidates": 2,
    "test_folds": TEST_FOLDS,
    "epochs_per_candidate": 1,
    "executor": "sequential",
    "batch_size": 1,
    "latency_warmup": 1,
    "latency_repeats": 2,
    "select_top_n": 1,
    "train": {"val_fraction": 0.3, "batch_size": 8},
}
RECORD_FIELDS = {"spec", "params", "macs", "latency_ms", "f1", "accuracy", "seconds", "seed"}


class Killed(RuntimeError):
    """A simulated kill of the search process."""


class TrainingCounter:
    """Stands in for ``train_fold`` in the candidate module: records what is trained, can die before a training."""

    def __init__(self, real):
        self.real, self.calls, self.folds_seen, self.die_at = real, [], set(), None

    def __call__(self, datalist, test_fold, out_dir, config=None, overrides=None, show_progress=False):
        if self.die_at is not None and len(self.calls) == self.die_at:
            raise Killed("simulated kill")
        self.calls.append(overrides["arch"])
        self.folds_seen |= {int(d["fold"]) for d in datalist}
        assert test_fold is None
        return self.real(datalist, test_fold, out_dir, config, overrides, show_progress)


@pytest.fixture(scope="module")
def cube_dir(tmp_path_factory):
    return make_cubes(tmp_path_factory.mktemp("search_cubes"), n=16, folds=4)


@pytest.fixture(scope="module")
def killed_and_resumed(cube_dir, tmp_path_factory):
    """Run 1 dies before its 2nd training; run 2 (same command) finishes; run 3 (same command) has nothing to do."""
    out = tmp_path_factory.mktemp("search_out")
    patch = pytest.MonkeyPatch()
    counter = TrainingCounter(candidate.train_fold)
    patch.setattr(candidate, "train_fold", counter)
    runs = []
    try:
        counter.die_at = 1
        with pytest.raises(Killed):
            run_search_step(out, TINY, data_dir=cube_dir)
        journal_after_kill = [
            json.loads(line) for line in (out / "journal.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        runs.append(list(counter.calls))
        for _ in range(2):
            counter.calls, counter.die_at = [], None
            summary = run_search_step(out, TINY, data_dir=cube_dir)
            runs.append(list(counter.calls))
    finally:
        patch.undo()
    return {"out": out, "runs": runs, "journal_after_kill": journal_after_kill, "summary": summary, "counter": counter}


def test_kill_then_resume_loses_and_repeats_nothing(killed_and_resumed):
    first, second, third = killed_and_resumed["runs"]
    after_kill = [r["spec"] for r in killed_and_resumed["journal_after_kill"]]
    journal = [
        json.loads(line)
        for line in (killed_and_resumed["out"] / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    specs = [r["spec"] for r in journal]
    assert first == after_kill and len(first) == 1  # every finished candidate was journaled before the kill
    assert not set(second) & set(first)  # nothing trained twice
    assert second and specs == first + second and len(set(specs)) == len(specs) == 2  # nothing lost, nothing duplicated
    assert third == [] and killed_and_resumed["summary"]["skipped"]  # an identical re-run trains nothing


def test_journal_records_and_outputs(killed_and_resumed):
    out = killed_and_resumed["out"]
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text(encoding="utf-8").splitlines()]
    space = SearchSpace(**TINY["space"])
    assert journal and all(RECORD_FIELDS <= set(r) for r in journal)
    assert all(r["spec"] in space and r["latency_ms"] > 0 and r["params"] > 0 and r["macs"] > 0 for r in journal)
    assert all(r["epochs"] == 1 and r["attention"] == "channel_first" and r["loss_name"] == "asoftmax" for r in journal)
    with open(out / "pareto.csv", newline="") as handle:
        front = list(csv.DictReader(handle))
    assert front and {"spec", "latency_ms", "f1", "accuracy"} <= set(front[0])
    assert {row["spec"] for row in front} <= {r["spec"] for r in journal}
    assert (out / "pareto.png").stat().st_size > 1000
    selected = json.loads((out / "selected.json").read_text(encoding="utf-8"))
    expected = sorted(journal, key=lambda r: (-r["auc"], -r["accuracy"], r["latency_ms"], r["spec"]))[:1]
    assert selected["specs"] == [r["spec"] for r in expected]  # one network: the best score is on the front
    assert selected["score_key"] == "auc" and selected["select"] == "pareto"
    assert selected["candidates"][0]["front_rank"] == 1
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["space"]["size"] == space.size() == 19 and summary["trained"] == len(journal)


def test_search_never_sees_a_test_fold(killed_and_resumed):
    assert killed_and_resumed["counter"].folds_seen and not killed_and_resumed["counter"].folds_seen & set(TEST_FOLDS)


def test_resume_with_other_settings_is_refused(killed_and_resumed, cube_dir):
    with pytest.raises(SearchError, match="epochs_per_candidate"):
        run_search_step(killed_and_resumed["out"], {**TINY, "epochs_per_candidate": 2}, data_dir=cube_dir)


SEARCH_DATALIST_CASES = [
    [[1, 2, 3, 4, 5], {6, 7}],
    [[1], {2, 3, 4, 5, 6, 7}],
]


@pytest.mark.parametrize("test_folds, expected_folds", SEARCH_DATALIST_CASES)
def test_search_datalist_drops_test_folds(test_folds, expected_folds):
    datalist = [{"nodule_id": f"n{k}", "fold": 1 + k % 7, "label": k % 2} for k in range(28)]
    assert {d["fold"] for d in candidate.search_datalist(datalist, test_folds)} == expected_folds


def test_search_datalist_refuses_only_test_folds():
    with pytest.raises(DataError, match="test_folds"):
        candidate.search_datalist([{"fold": 1}, {"fold": 2}], [1, 2, 3, 4, 5])


RECORDS = [
    {"spec": "a", "f1": 0.8, "accuracy": 0.7, "latency_ms": 3.0},
    {"spec": "b", "f1": 0.9, "accuracy": 0.7, "latency_ms": 9.0},
    {"spec": "c", "f1": 0.8, "accuracy": 0.9, "latency_ms": 5.0},
    {"spec": "d", "f1": 0.8, "accuracy": 0.9, "latency_ms": 4.0},
]
SELECT_CASES = [
    [{"top_n": 2}, ["b", "d"]],
    [{"top_n": 3, "latency_budget_ms": 5.0}, ["d", "c", "a"]],
    [{"top_n": 9, "latency_budget_ms": 1.0}, []],
    [{"top_n": 0}, []],
]


@pytest.mark.parametrize("kwargs, expected", SELECT_CASES)
def test_select_candidates_top_n_by_f1(kwargs, expected):
    assert [r["spec"] for r in select_candidates(RECORDS, **kwargs, score_key="f1", rule="top_n")] == expected


CONFIG_ERROR_CASES = [
    [{"no_such_key": 1}, "no_such_key"],
    [{"space": {"channels": [4], "width": 3}}, "width"],
    [{"score_metric": "loss"}, "score_metric"],
    [{"select": "best"}, "select"],
]


@pytest.mark.parametrize("config, message", CONFIG_ERROR_CASES)
def test_bad_config_is_refused(config, message):
    with pytest.raises(ConfigError, match=message):
        load_search_config(config)


def test_packaged_config_is_the_paper_space():
    config = load_search_config()
    assert SearchSpace(**config["space"]).size() == 42426
    assert config["epochs_per_candidate"] == 10 and config["test_folds"] == [0, 1, 2, 3, 4]
    assert config["attention"] == "channel_first" and config["loss_name"] == "asoftmax"
    assert config["score_metric"] == "auc" and config["select"] == "pareto" and config["latency_table"] is None


def test_sequential_executor_keeps_order_and_sets_threads():
    import torch

    before = torch.get_num_threads()
    with SequentialExecutor(num_threads=1) as executor:
        assert list(executor.map(lambda x: (x, torch.get_num_threads()), [3, 1, 2])) == [(3, 1), (1, 1), (2, 1)]
    assert torch.get_num_threads() == before


def test_without_ray_the_search_falls_back_to_sequential(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert not ray_available()
    with caplog.at_level("WARNING"):
        executor = make_executor("ray", workers=2, threads_per_trial=1)
    assert isinstance(executor, SequentialExecutor) and "sequential" in caplog.text
    with pytest.raises(ConfigError, match="ray_address"):
        make_executor("ray", address="ray://nowhere:10001")


def test_unknown_executor_is_refused():
    with pytest.raises(ConfigError, match="executor"):
        make_executor("dask")


@pytest.mark.slow
def test_ray_search_writes_the_same_journal_and_keeps_finished_trials(tmp_path):
    ray = pytest.importorskip("ray")
    data = make_cubes(tmp_path / "data", n=12, folds=3)
    config = {**TINY, "executor": "ray", "workers": 2, "threads_per_trial": 1, "batch_size": 2, "max_candidates": 2}
    with RayExecutor(workers=2, threads_per_trial=1) as executor:
        finished = []
        with pytest.raises(SearchError, match="failed"):
            for value in executor.map(functools.partial(operator.truediv, 1.0), [1.0, 0.0, 4.0]):
                finished.append(value)
        assert sorted(finished) == [0.25, 1.0]  # the failing trial does not lose the others
        summary = run_search_step(tmp_path / "out", config, data_dir=data)  # runs on the instance already started
        assert ray.is_initialized()
    assert not ray.is_initialized()
    journal = [
        json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(journal) == 2 == summary["evaluated"] and all(RECORD_FIELDS <= set(r) for r in journal)
    assert {k: summary["executor"][k] for k in ("executor", "workers", "threads_per_trial")} == {
        "executor": "ray",
        "workers": 2,
        "threads_per_trial": 1,
    }
    assert (tmp_path / "out" / "pareto.csv").is_file() and (tmp_path / "out" / "selected.json").is_file()


@pytest.mark.slow
def test_a_shared_instance_outlives_its_executors_and_ends_with_the_block():
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    with shared_ray_instance():
        with RayExecutor(workers=2, threads_per_trial=1) as first:
            assert sorted(first.map(functools.partial(operator.mul, 2), [1, 2])) == [2, 4]
        assert ray.is_initialized()  # kept for the next step
        node = ray.get_runtime_context().get_node_id()
        with RayExecutor(workers=2, threads_per_trial=1) as second:
            assert list(second.map(functools.partial(operator.mul, 3), [1])) == [3]
            assert ray.get_runtime_context().get_node_id() == node  # the same instance, not a new one
        assert ray.is_initialized()
    assert not ray.is_initialized()
    with shared_ray_instance():  # an outer block with no executor inside starts nothing
        pass
    assert not ray.is_initialized()


def test_pareto_figure_plots_the_search_score(tmp_path):
    from naslung.pipeline.search.figures import plot_pareto

    records = [{"spec": f"n{i}", "latency_ms": 1.0 + i, "auc": 0.6 + i / 10, "accuracy": 0.5} for i in range(3)]
    assert plot_pareto(records, records, tmp_path / "auc.png", score_key="auc").stat().st_size > 1000  # no f1 needed
    with pytest.raises(DataError, match="'auc'"):
        plot_pareto(
            [{"spec": "n", "latency_ms": 1.0, "f1": 0.5, "accuracy": 0.5}], [], tmp_path / "x.png", score_key="auc"
        )
