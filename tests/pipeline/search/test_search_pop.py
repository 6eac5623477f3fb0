"""Tests of Partial Order Pruning with a synthetic oracle: sound pruning, the exact front at a fraction of the cost,
stop rules, batches and journal resume after a kill."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from naslung.pipeline.errors import SearchError
from naslung.pipeline.search.journal import SearchJournal
from naslung.pipeline.search.pareto import pareto_front
from naslung.pipeline.search.partial_order import precedes
from naslung.pipeline.search.pop import PartialOrderPruning, iteration_rng, run_search
from naslung.pipeline.search.space import SearchSpace, arch_from, arch_to_text

STAGE_COST = (4.0, 2.0, 1.0)  # stage 3 runs on the largest feature maps
STAGE_VALUE = (1.0, 1.2, 1.5)


def oracle_latency(spec) -> float:
    """Latency (ms): a per-block overhead plus a width cost, summed; grows with every block and every channel."""
    arch = arch_from(spec)
    return 0.05 + sum(
        w * sum(0.02 + (c / 32) ** 1.5 for c in stage) for w, stage in zip(STAGE_COST, arch[2:], strict=True)
    )


def oracle_score(spec) -> float:
    """F1 as a saturating (concave) function of capacity, plus a small order-respecting term, on a 0.001 grid."""
    arch = arch_from(spec)
    capacity = sum(v * sum(math.log2(c) for c in stage) for v, stage in zip(STAGE_VALUE, arch[2:], strict=True))
    return round(0.93 - 0.45 * math.exp(-capacity / 12.0) + 0.002 * len(arch[4]), 3)


def oracle_evaluate(spec) -> dict:
    return {"latency_ms": oracle_latency(spec), "f1": oracle_score(spec), "seed": 0}


SMALL = {"channels": (4, 8, 16, 32, 64), "min_blocks": 3, "max_blocks": 6}
TINY = {"channels": (4, 8, 16), "min_blocks": 3, "max_blocks": 5}


def _exhaustive(space):
    records = [{"spec": arch_to_text(a), **oracle_evaluate(a)} for a in space.iter()]
    return records, {r["spec"] for r in pareto_front(records)}


def test_oracle_obeys_the_partial_order():
    space = SearchSpace(**TINY)
    listed = list(space.iter())
    for upper in listed[::5]:
        for lower in listed:
            if precedes(lower, upper) and lower != upper:
                assert oracle_latency(lower) < oracle_latency(upper)
                assert oracle_score(lower) <= oracle_score(upper)


def test_pruning_rule_on_a_hand_made_example():
    space = SearchSpace(**TINY)
    state = PartialOrderPruning(space, oracle_latency, spec_factory=arch_to_text, exhaustive_limit=0)
    big = "[4,4,[16,16],[16],[16,16]]"  # trained, score 0.9
    fast = "[4,4,[8],[8],[16]]"  # trained, faster and as accurate
    state.observe({"spec": big, "latency_ms": 10.0, "f1": 0.9})
    state.observe({"spec": fast, "latency_ms": 1.0, "f1": 0.9})
    assert state.threshold(big) == state.threshold(fast) == 1.0
    below_big = "[4,4,[16],[16],[16]]"
    assert precedes(below_big, big) and oracle_latency(below_big) > 1.0
    assert state.is_pruned(below_big)  # slower than `fast`, and no more accurate than `big`
    tiny = "[4,4,[4],[4],[4]]"
    assert oracle_latency(tiny) < 1.0 and not state.is_pruned(tiny)  # faster than every threshold: kept
    not_below = "[4,4,[16],[16],[16,16,16]]"
    assert not precedes(not_below, big) and not state.is_pruned(not_below)
    assert not state.is_pruned(big) and state.is_trained(big) and not state.is_remaining(big)
    with pytest.raises(SearchError, match="already observed"):
        state.observe({"spec": big, "latency_ms": 10.0, "f1": 0.9})


def test_pruning_never_removes_a_front_candidate():
    """(a) After every observation, no candidate of the exhaustive front is pruned; lazy and explicit agree."""
    space = SearchSpace(**SMALL)
    _, true_front = _exhaustive(space)
    state = PartialOrderPruning(space, oracle_latency, spec_factory=arch_to_text)
    lazy = PartialOrderPruning(space, oracle_latency, spec_factory=arch_to_text, exhaustive_limit=0)
    assert state.exhaustive and not lazy.exhaustive
    rng = np.random.default_rng(0)
    checkpoints = 0
    while True:
        batch = state.propose_archs(4, rng)
        if not batch:
            break
        for arch in batch:
            record = {"spec": arch_to_text(arch), **oracle_evaluate(arch)}
            state.observe(record)
            lazy.observe(record)
        state.end_iteration()
        assert not any(state.is_pruned(spec) for spec in true_front)
        if state.iteration % 25 == 1:
            checkpoints += 1
            for arch in list(space.iter())[::3]:
                assert state.is_pruned(arch) == lazy.is_pruned(arch)
    assert checkpoints >= 2
    assert state.remaining_size() == 0 and state.pruned_size() > 0.5 * space.size()


@pytest.mark.parametrize("seed", [0, 1])
def test_pop_finds_the_exhaustive_front_with_a_quarter_of_the_training(seed):
    """(b) Same front as training everything, with at most a quarter of the candidates trained."""
    space = SearchSpace(**SMALL)
    all_records, true_front = _exhaustive(space)
    result = run_search(space, oracle_evaluate, oracle_latency, rng_seed=seed, patience=None, spec_factory=arch_to_text)
    found = {r["spec"] for r in result.front}
    print(
        f"seed {seed}: exhaustive trained {len(all_records)} candidates, front {len(true_front)}; "
        f"POP trained {result.evaluated} ({result.evaluated / len(all_records):.1%}), front {len(found)}, "
        f"pruned {result.pruned}, stop: {result.stop_reason}"
    )
    assert found == true_front
    assert result.evaluated <= len(all_records) / 4
    assert result.evaluated + result.pruned == space.size() and result.remaining == 0
    assert len({r["spec"] for r in result.records}) == result.evaluated


def test_lazy_mode_finds_the_same_front():
    space = SearchSpace(**TINY)
    _, true_front = _exhaustive(space)
    result = run_search(
        space, oracle_evaluate, oracle_latency, patience=None, exhaustive_limit=0, spec_factory=arch_to_text
    )
    assert {r["spec"] for r in result.front} == true_front
    assert result.remaining is None and result.evaluated < space.size()


# [stop options, expected stop reason prefix, expected number trained (None: not checked)]
STOP_CASES = [
    [{"max_candidates": 7, "batch_size": 3}, "budget", 7],
    [{"max_seconds": 0.0}, "budget", 0],
    [{"patience": 2, "batch_size": 1}, "stable", None],
]


@pytest.mark.parametrize("options, reason, trained", STOP_CASES)
def test_stop_rules(options, reason, trained):
    space = SearchSpace(**SMALL)
    options = {"patience": None, **options}
    result = run_search(space, oracle_evaluate, oracle_latency, spec_factory=arch_to_text, **options)
    assert result.stop_reason.startswith(reason)
    if trained is not None:
        assert result.evaluated == trained
    if reason == "stable":
        assert result.summary["stable_iterations"] == 2 and result.remaining > 0


def test_batches_are_distinct_remaining_candidates_and_order_of_completion_does_not_matter():
    space = SearchSpace(**TINY)

    def reversed_map(function, items):
        return reversed([function(item) for item in list(items)])

    state = PartialOrderPruning(space, oracle_latency, spec_factory=arch_to_text)
    batch = state.propose(5, iteration_rng(0, 0))
    assert len(set(batch)) == 5 and all(state.is_remaining(s) for s in batch)
    plain = run_search(space, oracle_evaluate, oracle_latency, batch_size=4, spec_factory=arch_to_text, patience=None)
    shuffled = run_search(
        space, oracle_evaluate, oracle_latency, batch_size=4, spec_factory=arch_to_text, patience=None,
        map_fn=reversed_map,
    )  # fmt: skip
    assert [r["spec"] for r in plain.records] == [r["spec"] for r in shuffled.records]


class KilledError(RuntimeError):
    pass


class CountingEvaluate:
    """The oracle, counting calls, raising (a simulated kill) on call number ``kill_at`` + 1."""

    def __init__(self, kill_at=None):
        self.kill_at = kill_at
        self.calls: list[str] = []

    def __call__(self, spec):
        if self.kill_at is not None and len(self.calls) == self.kill_at:
            raise KilledError("killed")
        self.calls.append(arch_to_text(spec))
        return {**oracle_evaluate(spec), "seconds": 1.0}


def _journal_without_timing(journal):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in journal.records()]


RESUME_OPTIONS = {"rng_seed": 5, "patience": 10, "max_candidates": 60, "spec_factory": arch_to_text}


@pytest.mark.parametrize("batch_size, draw", [(1, 0), (3, 1), (3, 2)])
def test_resume_after_a_kill_loses_and_repeats_nothing(tmp_path, batch_size, draw):
    """(c) Kill at a random point, resume: same journal as an uninterrupted run, no candidate trained twice."""
    space = SearchSpace(**SMALL)
    full = SearchJournal(tmp_path / "full.jsonl")
    uninterrupted = CountingEvaluate()
    reference = run_search(space, uninterrupted, oracle_latency, journal=full, batch_size=batch_size, **RESUME_OPTIONS)
    kill_at = random.Random(draw).randrange(1, reference.evaluated)
    journal = SearchJournal(tmp_path / "killed.jsonl")
    first = CountingEvaluate(kill_at=kill_at)
    with pytest.raises(KilledError):
        run_search(space, first, oracle_latency, journal=journal, batch_size=batch_size, **RESUME_OPTIONS)
    assert len(journal.records()) == kill_at
    if draw == 2:  # also a torn last line: that candidate is not finished, so it is trained again
        with open(journal.path, "a", encoding="utf-8") as handle:
            handle.write('{"spec": "[4,4,[4],[4],[4]]", "f1"')
    second = CountingEvaluate()
    resumed = run_search(space, second, oracle_latency, journal=journal, batch_size=batch_size, **RESUME_OPTIONS)
    print(f"batch {batch_size}: killed after {kill_at} of {reference.evaluated}, resumed {resumed.resumed}")
    assert resumed.resumed == kill_at and resumed.evaluated == reference.evaluated - kill_at
    assert not set(first.calls) & set(second.calls)
    assert first.calls + second.calls == uninterrupted.calls
    assert _journal_without_timing(journal) == _journal_without_timing(full)
    assert resumed.stop_reason == reference.stop_reason
    assert [r["spec"] for r in resumed.front] == [r["spec"] for r in reference.front]
    again = run_search(space, CountingEvaluate(kill_at=0), oracle_latency, journal=journal, batch_size=batch_size,
                       **RESUME_OPTIONS)  # fmt: skip
    assert again.evaluated == 0 and again.resumed == reference.evaluated


def test_resume_with_noisy_latency_replays_from_the_sidecar(tmp_path):
    space = SearchSpace(**SMALL)
    noise = np.random.default_rng()  # unseeded on purpose: measurements differ between runs

    def noisy_latency(spec):
        return oracle_latency(spec) * (1.0 + 0.05 * noise.random())

    journal = SearchJournal(tmp_path / "journal.jsonl")
    with pytest.raises(KilledError):
        run_search(space, CountingEvaluate(kill_at=20), noisy_latency, journal=journal, **RESUME_OPTIONS)
    assert journal.latencies()
    second = CountingEvaluate()
    resumed = run_search(space, second, noisy_latency, journal=journal, **RESUME_OPTIONS)
    assert resumed.resumed == 20 and len(journal.records()) == 20 + resumed.evaluated


def test_resume_with_another_seed_is_refused(tmp_path):
    space = SearchSpace(**TINY)
    journal = SearchJournal(tmp_path / "journal.jsonl")
    run_search(space, oracle_evaluate, oracle_latency, journal=journal, max_candidates=3, spec_factory=arch_to_text)
    with pytest.raises(SearchError, match="rng_seed"):
        run_search(space, oracle_evaluate, oracle_latency, journal=journal, rng_seed=1, spec_factory=arch_to_text)


def test_default_spec_factory_hands_arch_specs_to_evaluate_and_latency():
    spec_module = pytest.importorskip("naslung.networks.spec")
    seen = []

    def evaluate(spec):
        assert isinstance(spec, spec_module.ArchSpec)
        seen.append(spec)
        return oracle_evaluate(spec)

    def latency(spec):
        assert isinstance(spec, spec_module.ArchSpec)
        return oracle_latency(spec)

    result = run_search(SearchSpace(**TINY), evaluate, latency, max_candidates=6, batch_size=2)
    assert len(seen) == 6 and [r["spec"] for r in result.records] == [str(s) for s in seen]
