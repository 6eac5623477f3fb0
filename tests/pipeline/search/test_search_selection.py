"""Selection of the networks to retrain: successive latency/score Pareto fronts (default) or the top n by score."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from naslung.pipeline.errors import ConfigError
from naslung.pipeline.search.pareto import dominates, non_dominated_fronts
from naslung.pipeline.search.selection import select_candidates

# A constructed journal. Fronts of (lower latency, higher auc):
#   front 1: fast (1 ms, .60), mid (3 ms, .80), best (9 ms, .95)
#   front 2: slow_fast (2 ms, .55), mid2 (4 ms, .78)
#   front 3: bad (5 ms, .50), twin (5 ms, .50)  (identical points, neither dominates the other)
JOURNAL = [
    {"spec": "bad", "latency_ms": 5.0, "auc": 0.50, "accuracy": 0.6, "f1": 0.1},
    {"spec": "best", "latency_ms": 9.0, "auc": 0.95, "accuracy": 0.8, "f1": 0.0},
    {"spec": "mid2", "latency_ms": 4.0, "auc": 0.78, "accuracy": 0.7, "f1": 0.9},
    {"spec": "fast", "latency_ms": 1.0, "auc": 0.60, "accuracy": 0.5, "f1": 0.0},
    {"spec": "slow_fast", "latency_ms": 2.0, "auc": 0.55, "accuracy": 0.5, "f1": 0.0},
    {"spec": "mid", "latency_ms": 3.0, "auc": 0.80, "accuracy": 0.7, "f1": 0.0},
    {"spec": "twin", "latency_ms": 5.0, "auc": 0.50, "accuracy": 0.7, "f1": 0.2},
]

# [kwargs of select_candidates, expected specs in order, expected front ranks (pareto) or None (top_n)]
SELECT_CASES = [
    # the front alone when it holds n, listed by score
    [{"top_n": 3}, ["best", "mid", "fast"], [1, 1, 1]],
    # fewer than n on the front: fill by the next fronts, each listed by score
    [{"top_n": 5}, ["best", "mid", "fast", "mid2", "slow_fast"], [1, 1, 1, 2, 2]],
    # the first front that does not fit gives its best scores (ties: accuracy, then latency, then spec)
    [{"top_n": 6}, ["best", "mid", "fast", "mid2", "slow_fast", "twin"], [1, 1, 1, 2, 2, 3]],
    [{"top_n": 2}, ["best", "mid"], [1, 1]],
    [{"top_n": 99}, ["best", "mid", "fast", "mid2", "slow_fast", "twin", "bad"], [1, 1, 1, 2, 2, 3, 3]],
    # the budget is applied first ("best" is out); "mid2" stays behind "mid" (slower and lower)
    [{"top_n": 3, "latency_budget_ms": 4.0}, ["mid", "fast", "mid2"], [1, 1, 2]],
    [{"top_n": 0}, [], []],
    # top_n: score only, whatever the latency
    [{"top_n": 3, "rule": "top_n"}, ["best", "mid", "mid2"], None],
    [{"top_n": 2, "rule": "top_n", "score_key": "f1"}, ["mid2", "twin"], None],
    [{"top_n": 9, "rule": "top_n", "latency_budget_ms": 1.0}, ["fast"], None],
]


@pytest.mark.parametrize("kwargs, expected, ranks", SELECT_CASES)
def test_select_candidates(kwargs, expected, ranks):
    selected = select_candidates(JOURNAL, **kwargs)
    assert [r["spec"] for r in selected] == expected
    if ranks is not None:
        assert [r["front_rank"] for r in selected] == ranks
    else:
        assert all("front_rank" not in r for r in selected)


def test_pareto_and_top_n_differ_on_a_slow_high_scorer_pair():
    # the second-best score is slower than the best: top_n takes it, the Pareto rule takes a faster network
    journal = [
        {"spec": "a", "latency_ms": 1.0, "auc": 0.7, "accuracy": 0.7},
        {"spec": "b", "latency_ms": 5.0, "auc": 0.9, "accuracy": 0.7},
        {"spec": "c", "latency_ms": 6.0, "auc": 0.8, "accuracy": 0.7},
    ]
    assert [r["spec"] for r in select_candidates(journal, 2, rule="top_n")] == ["b", "c"]
    assert [r["spec"] for r in select_candidates(journal, 2, rule="pareto")] == ["b", "a"]


def test_selection_does_not_depend_on_journal_order():
    forward = select_candidates(JOURNAL, 5)
    backward = select_candidates(list(reversed(JOURNAL)), 5)
    assert [r["spec"] for r in forward] == [r["spec"] for r in backward]


def test_candidates_without_a_finite_score_come_last():
    journal = [*JOURNAL[:2], {"spec": "nan", "latency_ms": 0.1, "auc": math.nan, "accuracy": 0.9}]
    assert [r["spec"] for r in select_candidates(journal, 3)] == ["best", "bad", "nan"]
    assert [r["front_rank"] for r in select_candidates(journal, 3)] == [1, 1, 2]


@pytest.mark.parametrize("kwargs, message", [[{"top_n": -1}, "select_top_n"], [{"top_n": 1, "rule": "best"}, "best"]])
def test_bad_selection_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        select_candidates(JOURNAL, **kwargs)


def test_fronts_of_the_constructed_journal():
    fronts = non_dominated_fronts(JOURNAL, score_key="auc")
    assert [[r["spec"] for r in front] for front in fronts] == [
        ["fast", "mid", "best"],
        ["slow_fast", "mid2"],
        ["bad", "twin"],
    ]


points = st.lists(st.tuples(st.integers(0, 5).map(float), st.integers(0, 5).map(lambda x: x / 5)), max_size=20)


@settings(max_examples=150, deadline=None)
@given(points)
def test_fronts_are_a_non_dominated_sorting(pts):
    records = [{"spec": f"n{i}", "latency_ms": lat, "auc": score} for i, (lat, score) in enumerate(pts)]
    fronts = non_dominated_fronts(records, score_key="auc")
    assert sorted(r["spec"] for front in fronts for r in front) == sorted(r["spec"] for r in records)
    for k, front in enumerate(fronts):
        later = [r for f in fronts[k:] for r in f]
        assert not any(dominates(o, r, score_key="auc") for r in front for o in later)  # non-dominated among the rest
        if k:
            assert all(any(dominates(o, r, score_key="auc") for o in fronts[k - 1]) for r in front)
