"""Tests of the NAS-Lung search space: exact counts against brute force, ranking, validation, uniform sampling."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from naslung.pipeline.errors import SearchError
from naslung.pipeline.search.space import SearchSpace, arch_from, arch_to_text


def _brute_force(channels, min_blocks, max_blocks, depth_rule, min_stage_blocks, monotone):
    """Every candidate, by filtering all channel lists of every stage length (independent of the implementation)."""
    out = set()
    stage_lists = {d: list(itertools.product(channels, repeat=d)) for d in range(max_blocks + 1)}
    for depths in itertools.product(range(max_blocks + 1), repeat=3):
        total = sum(depths)
        if not min_blocks <= total <= max_blocks or min(depths) < min_stage_blocks:
            continue
        if depth_rule == "paper" and not all(math.floor(total / 4) <= d <= math.ceil(total / 2) for d in depths):
            continue
        for stages in itertools.product(*(stage_lists[d] for d in depths)):
            flat = [c for s in stages for c in s]
            if monotone == "global" and flat != sorted(flat):
                continue
            if monotone == "stage" and any(list(s) != sorted(s) for s in stages):
                continue
            out.add(((4,), (4,)) + tuple(stages))
    return out


# [channels, min_blocks, max_blocks, depth_rule, min_stage_blocks, monotone]
TEST_CASES = [
    [(4, 8), 3, 4, "paper", 1, "global"],
    [(4, 8, 16), 3, 6, "paper", 1, "global"],
    [(4, 8, 16), 3, 5, "paper", 1, "stage"],
    [(4, 8, 16), 3, 5, "paper", 1, "none"],
    [(4, 8, 16), 1, 5, "none", 0, "global"],
    [(4, 8), 0, 5, "paper", 0, "stage"],
    [(4, 8, 16), 2, 4, "none", 1, "none"],
]


@pytest.mark.parametrize("channels, min_blocks, max_blocks, depth_rule, min_stage_blocks, monotone", TEST_CASES)
def test_counts_ranks_and_iteration_match_brute_force(
    channels, min_blocks, max_blocks, depth_rule, min_stage_blocks, monotone
):
    space = SearchSpace(channels, min_blocks, max_blocks, (4, 4), depth_rule, min_stage_blocks, monotone)
    expected = _brute_force(channels, min_blocks, max_blocks, depth_rule, min_stage_blocks, monotone)
    listed = list(space.iter())
    assert space.size() == len(expected) == len(listed)
    assert set(listed) == expected
    assert [space.rank(a) for a in listed] == list(range(space.size()))
    assert [space.unrank(i) for i in range(space.size())] == listed
    assert all(space.contains(a) for a in listed)
    for arch in _brute_force(channels, 0, min(max_blocks + 1, 5), "none", 0, "none") - expected:
        assert not space.contains(arch)


def test_default_space_size_matches_brute_force_and_holds_model_1():
    space = SearchSpace()
    total = 0
    for t in range(3, 10):
        splits = [
            d
            for d in itertools.product(range(1, 10), repeat=3)
            if sum(d) == t and all(t // 4 <= x <= math.ceil(t / 2) for x in d)
        ]
        total += len(splits) * sum(1 for _ in itertools.combinations_with_replacement(space.channels, t))
    assert space.size() == total == 42426
    assert "[4,4,[4,4],[4,8],[8,8]]" in space  # NAS-Lung Model-1 (Table 5)
    assert space.size() == sum(space.count_by_depths().values())
    assert SearchSpace(monotone="none").size() == sum(6 ** sum(d) for d in space.depths)


def test_callable_depth_rule():
    space = SearchSpace((4, 8), 3, 3, depth_rule=lambda total: (1, 1))
    assert space.depths == [(1, 1, 1)] and space.size() == math.comb(4, 3)


SPEC_TEXTS = ["[4,4,[4,4],[4,8],[8,8]]", "[4,4,[128],[128,128,128],[128,128]]", "[4,4,[4],[8],[16]]"]


@pytest.mark.parametrize("text", SPEC_TEXTS)
def test_text_round_trip(text):
    arch = arch_from(text)
    assert arch_to_text(arch) == text
    assert arch_from(arch) == arch
    assert arch_from(eval(text)) == arch  # nested list form
    assert arch_to_text(" [4, 4, [4, 4], [4, 8], [8, 8]] ") == "[4,4,[4,4],[4,8],[8,8]]"


# [spec, fragment of the error message]
INVALID_CASES = [
    ["[8,4,[4],[8],[8]]", "stages 1-2"],
    ["[4,4,[4,12],[16],[16]]", "not in the allowed set"],
    ["[4,4,[4],[8]]", "5 entries"],
    ["[4,4,[4,4,4,4,4,4],[8,8],[8,8]]", "10 residual blocks"],
    ["[4,4,[4,4,4,4,4],[8],[8]]", "L=5"],
    ["[4,4,[4],[],[8,8]]", "M=0"],
    ["[4,4,[8,4],[8],[8]]", "narrower"],
    ["[4,4,[4,8],[4],[8]]", "narrower"],
    ["not json", "paper notation"],
    ["[4,4,[4.5],[8],[8]]", "integer"],
]


@pytest.mark.parametrize("spec, fragment", INVALID_CASES)
def test_validate_names_the_broken_rule(spec, fragment):
    space = SearchSpace()
    with pytest.raises(SearchError, match=fragment.replace("[", r"\[")):
        space.validate(spec)
    assert not space.contains(spec)


def test_stage_monotone_allows_drop_between_stages():
    assert SearchSpace(monotone="stage").contains("[4,4,[4,8],[4],[8]]")
    assert SearchSpace(monotone="none").contains("[4,4,[8,4],[4],[8]]")


@pytest.mark.parametrize("options", [{}, {"min_blocks": 5, "max_blocks": 4}, {"channels": (8, 4)}, {"monotone": "x"}])
def test_bad_options_raise(options):
    if not options:
        SearchSpace()
        return
    with pytest.raises(SearchError):
        SearchSpace(**options)


# [space options, draws per candidate]
UNIFORM_CASES = [
    [{"channels": (4, 8), "min_blocks": 3, "max_blocks": 4}, 300],
    [{"channels": (4, 8), "min_blocks": 3, "max_blocks": 4, "monotone": "stage"}, 200],
]


@pytest.mark.parametrize("options, per_cell", UNIFORM_CASES)
def test_sampling_is_uniform(options, per_cell):
    space = SearchSpace(**options)
    rng = np.random.default_rng(1234)
    n = space.size() * per_cell
    counts = np.zeros(space.size(), dtype=int)
    for _ in range(n):
        counts[space.rank(space.sample(rng))] += 1
    statistic, p_value = stats.chisquare(counts)
    assert counts.min() > 0
    assert statistic < stats.chi2.ppf(0.999, space.size() - 1), (statistic, p_value)
    # depth triples are weighted by how many candidates they hold, not picked uniformly
    assert space.size() > len(space.depths)


def test_huge_space_is_counted_and_sampled_without_materialising():
    space = SearchSpace(channels=tuple(range(1, 11)), min_blocks=3, max_blocks=60, depth_rule="none", monotone="none")
    assert space.size() > 10**60
    rng = np.random.default_rng(0)
    for _ in range(5):
        arch = space.sample(rng)
        assert space.contains(arch)
        assert 0 <= space.rank(arch) < space.size()
        assert space.unrank(space.rank(arch)) == arch
    assert space.contains(next(iter(space)))


def test_arch_spec_interop():
    spec_module = pytest.importorskip("naslung.networks.spec")
    from naslung.pipeline.search.space import to_arch_spec

    space = SearchSpace()
    for arch in [space.unrank(i) for i in range(0, space.size(), 997)]:
        spec = to_arch_spec(arch)
        assert isinstance(spec, spec_module.ArchSpec)
        assert str(spec) == arch_to_text(arch)
        assert arch_from(spec) == arch and space.rank(spec) == space.rank(arch)
    assert arch_from("[[4,4],[4,8],[8,8]]") == arch_from(spec_module.PAPER_MODEL_1)
