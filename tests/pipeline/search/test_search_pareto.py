"""Tests of Pareto dominance and fronts (lower latency, higher score)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from naslung.pipeline.errors import SearchError
from naslung.pipeline.search.pareto import dominates, is_dominated, pareto_front


def _records(points):
    return [{"spec": f"net{i}", "latency_ms": lat, "f1": score} for i, (lat, score) in enumerate(points)]


# [(latency_ms, f1) points, names expected on the front, in latency order]
TEST_CASES = [
    [[(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (0.5, 0.4)], ["net3", "net0", "net1"]],
    [[(1.0, 0.5), (1.0, 0.6)], ["net1"]],  # same latency: the better score wins
    [[(1.0, 0.5), (2.0, 0.5)], ["net0"]],  # same score: the faster wins
    [[(1.0, 0.5), (1.0, 0.5), (2.0, 0.9)], ["net0", "net1", "net2"]],  # identical points do not dominate each other
    [[(5.0, 0.9)], ["net0"]],
    [[], []],
]


@pytest.mark.parametrize("points, expected", TEST_CASES)
def test_front(points, expected):
    assert [r["spec"] for r in pareto_front(_records(points))] == expected


def test_dominates_and_custom_keys():
    a = {"lat": 1.0, "acc": 0.9}
    b = {"lat": 2.0, "acc": 0.9}
    assert dominates(a, b, "lat", "acc") and not dominates(b, a, "lat", "acc")
    assert not dominates(a, a, "lat", "acc")
    assert is_dominated(b, [a], "lat", "acc") and not is_dominated(a, [b], "lat", "acc")
    assert pareto_front([a, b], latency_key="lat", score_key="acc") == [a]


@pytest.mark.parametrize(
    "bad", [{"latency_ms": 1.0}, {"latency_ms": math.nan, "f1": 0.5}, {"latency_ms": "x", "f1": 1}]
)
def test_missing_or_non_finite_objectives_raise(bad):
    with pytest.raises(SearchError):
        pareto_front([{"spec": "s", **bad}])


points = st.lists(st.tuples(st.integers(0, 6).map(float), st.integers(0, 6).map(lambda x: x / 6)), max_size=25)


@settings(max_examples=200, deadline=None)
@given(points)
def test_front_is_exactly_the_non_dominated_set(pts):
    records = _records(pts)
    expected = [r for r in records if not is_dominated(r, records)]
    front = pareto_front(records)
    assert sorted(r["spec"] for r in front) == sorted(r["spec"] for r in expected)
    latencies = [r["latency_ms"] for r in front]
    assert latencies == sorted(latencies)
