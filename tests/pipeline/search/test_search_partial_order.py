"""Property tests of the POP partial order (reflexive, antisymmetric, transitive) and its one-step moves."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from naslung.pipeline.search.partial_order import comparable, precedes, stage_embeds, strictly_precedes
from naslung.pipeline.search.space import SearchSpace

CHANNELS = (4, 8, 16, 32)
stages = st.lists(st.sampled_from(CHANNELS), min_size=0, max_size=4).map(tuple)
archs = st.tuples(
    st.sampled_from(CHANNELS).map(lambda c: (c,)), st.sampled_from(CHANNELS).map(lambda c: (c,)), stages, stages, stages
)
SETTINGS = settings(max_examples=150, deadline=None)


def _shrink(arch, data):
    """A random architecture below ``arch``: delete some blocks of each stage, then narrow some channels."""
    out = []
    for index, stage in enumerate(arch):
        keep = stage if index < 2 else tuple(c for c in stage if data.draw(st.booleans()))
        out.append(tuple(data.draw(st.sampled_from([x for x in CHANNELS if x <= c])) for c in keep))
    return tuple(out)


def _embeds_brute_force(small, large):
    return any(
        all(s <= large[j] for s, j in zip(small, positions, strict=True))
        for positions in itertools.combinations(range(len(large)), len(small))
    )


@SETTINGS
@given(archs)
def test_reflexive(a):
    assert precedes(a, a)
    assert not strictly_precedes(a, a)


@SETTINGS
@given(archs, archs)
def test_antisymmetric(a, b):
    if precedes(a, b) and precedes(b, a):
        assert a == b


@SETTINGS
@given(archs, st.data())
def test_antisymmetric_on_related_pairs(c, data):
    b = _shrink(c, data)
    assert precedes(b, c)
    assert precedes(c, b) == (b == c)


@SETTINGS
@given(archs, st.data())
def test_transitive_on_chains(c, data):
    b = _shrink(c, data)
    a = _shrink(b, data)
    assert precedes(a, b) and precedes(b, c)
    assert precedes(a, c)


@SETTINGS
@given(archs, archs, archs)
def test_transitive_on_random_triples(a, b, c):
    if precedes(a, b) and precedes(b, c):
        assert precedes(a, c)


@SETTINGS
@given(stages, stages)
def test_greedy_embedding_matches_brute_force(small, large):
    assert stage_embeds(small, large) == _embeds_brute_force(small, large)


# [lower, upper, lower precedes upper]
TEST_CASES = [
    ["[4,4,[4,4],[4,8],[8,8]]", "[4,4,[4,4],[4,8],[8,8]]", True],
    ["[4,4,[4,4],[4,8],[8,8]]", "[4,4,[8,8],[8,8],[8,16]]", True],  # narrower, same depths
    ["[4,4,[4],[8],[8]]", "[4,4,[4,4],[4,8],[8,8]]", True],  # shallower
    ["[4,4,[8],[8],[8]]", "[4,4,[4,16],[8],[8]]", True],  # shallower and narrower composed
    ["[4,4,[8],[8],[8]]", "[4,4,[4,4],[4,8],[8,8]]", False],  # a stage-3 block wider than any of the upper's
    ["[4,4,[4,4,4],[8],[8]]", "[4,4,[4,4],[4,8],[8,8]]", False],  # blocks may not move across stages
    ["[4,4,[16,4],[8],[8]]", "[4,4,[4,16],[8],[8]]", False],  # order inside a stage is kept
    ["[8,4,[4],[8],[8]]", "[4,4,[4],[8],[8]]", False],  # a wider stem is not below
]


@pytest.mark.parametrize("lower, upper, expected", TEST_CASES)
def test_examples(lower, upper, expected):
    assert precedes(lower, upper) == expected
    assert comparable(lower, upper) == (expected or precedes(upper, lower))


def test_reference_one_step_moves_are_in_the_order():
    """Every 'narrower' and 'shallower' neighbour of the NAS-Lung reference code lies below its origin."""
    space = SearchSpace(channels=(4, 8, 16), min_blocks=3, max_blocks=5)
    listed = list(space.iter())
    for upper in listed[::7]:
        for lower in listed:
            same_depths = [len(s) for s in lower] == [len(s) for s in upper]
            narrower = same_depths and all(
                x <= y for s, t in zip(lower, upper, strict=True) for x, y in zip(s, t, strict=True)
            )
            if narrower:
                assert precedes(lower, upper)
        for stage in range(2, 5):
            for drop in range(len(upper[stage])):
                if len(upper[stage]) > 1:
                    shallower = list(upper)
                    shallower[stage] = upper[stage][:drop] + upper[stage][drop + 1 :]
                    assert strictly_precedes(tuple(shallower), upper)
