"""ArchSpec: the paper's notation parses, prints, round-trips, validates and serialises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from naslung.networks import PAPER_MODEL_1, ArchSpec
from naslung.pipeline.errors import ConfigError

VALID_CASES = [
    ["[4,4,[4,4],[4,8],[8,8]]", "[4,4,[4,4],[4,8],[8,8]]", (2, 2, 2)],
    ["[4, 4, [4, 4], [4, 8], [8, 8]]", "[4,4,[4,4],[4,8],[8,8]]", (2, 2, 2)],
    ["[8,16,[32],[64,64,64],[128]]", "[8,16,[32],[64,64,64],[128]]", (1, 3, 1)],
    ["[[16],[32,32],[64]]", "[4,4,[16],[32,32],[64]]", (1, 2, 1)],  # eq. (7) form: stages 1-2 default to 4
]

MALFORMED_CASES = [
    ["[4,4,[4,4],[4,8]]", "expected 5 entries"],
    ["[4,4,[4,4],[4,8],[8,8]", "not a nested list of integers"],
    ["[4,4,[],[4],[8]]", "stage3 has no residual block"],
    ["[4,0,[4],[4],[8]]", "stage2 channels must be a positive integer"],
    ["[4,4,[4],[-4],[8]]", "stage4 block channels must be positive integers"],
    ["[4,4,[4],[4],[8.5]]", "stage5 block channels must be positive integers"],
    ["[4,4,[4],[4],[true]]", "stage5 block channels must be positive integers"],
    ["[4,[4],[4],[4],[8]]", "stage2 channels must be a positive integer"],
    ["[4,4,4,[4],[8]]", "stage3 must be a list of block channels"],
    ['"[4,4,[4],[4],[8]]"', "expected a list"],
    ["", "not a nested list of integers"],
]


@pytest.mark.parametrize("text, canonical, depths", VALID_CASES)
def test_parse_and_print(text, canonical, depths):
    spec = ArchSpec.parse(text)
    assert str(spec) == canonical
    assert spec.to_json() == canonical
    assert spec.depths == depths
    assert ArchSpec.parse(str(spec)) == spec
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert ArchSpec.from_json(spec.to_list()) == spec
    assert json.loads(json.dumps(spec.to_list())) == spec.to_list()  # plain primitives for bundle configs
    assert eval(repr(spec), {"ArchSpec": ArchSpec}) == spec


@pytest.mark.parametrize("text, message", MALFORMED_CASES)
def test_malformed_specs_are_rejected_with_a_clear_message(text, message):
    with pytest.raises(ConfigError, match=message) as raised:
        ArchSpec.parse(text)
    assert "[4,4,[4,4],[4,8],[8,8]]" in str(raised.value)  # every message shows the expected notation


def test_model_1_fields():
    spec = ArchSpec.parse("[4,4,[4,4],[4,8],[8,8]]")
    assert spec == PAPER_MODEL_1
    assert (spec.stage1, spec.stage2) == (4, 4)
    assert spec.stages == ((4, 4), (4, 8), (8, 8))
    assert spec.num_blocks == 6 and spec.out_channels == 8
    assert list(spec.block_channels()) == [(3, 4), (3, 4), (4, 4), (4, 8), (5, 8), (5, 8)]


def test_hashable_and_immutable():
    a = ArchSpec.parse("[4,4,[4,4],[4,8],[8,8]]")
    b = ArchSpec(4, 4, [4, 4], [4, 8], [8, 8])  # lists become tuples
    c = ArchSpec.parse("[4,4,[4,4],[4,8],[8,16]]")
    assert a == b and hash(a) == hash(b) and a != c
    assert len({a, b, c}) == 2
    assert {a: 1}[b] == 1
    with pytest.raises(AttributeError):
        a.stage1 = 8  # type: ignore[misc]


def test_coerce_accepts_every_form():
    spec = PAPER_MODEL_1
    assert ArchSpec.coerce(spec) is spec
    assert ArchSpec.coerce(str(spec)) == spec
    assert ArchSpec.coerce(spec.to_list()) == spec
    assert ArchSpec.coerce((4, 4, (4, 4), (4, 8), (8, 8))) == spec


channels = st.integers(min_value=1, max_value=512)
blocks = st.lists(channels, min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(channels, channels, blocks, blocks, blocks)
def test_round_trip_property(c1, c2, s3, s4, s5):
    spec = ArchSpec(c1, c2, s3, s4, s5)
    text = str(spec)
    assert " " not in text
    assert ArchSpec.parse(text) == spec
    assert str(ArchSpec.parse(text)) == text
    assert ArchSpec.from_list(json.loads(text)) == spec
    assert spec.depths == (len(s3), len(s4), len(s5))


KERNEL_CASES = [
    # [text, kernels, printed]
    ["[4,4,[4,[8,5]],[8],[8]]", ((3, 5), (3,), (3,)), "[4,4,[4,[8,5]],[8],[8]]"],
    ["[4,4,[4,[8,3]],[8],[[16,7]]]", ((3, 3), (3,), (7,)), "[4,4,[4,8],[8],[[16,7]]]"],
    ["[4,4,[4,4],[4,8],[8,8]]", ((3, 3), (3, 3), (3, 3)), "[4,4,[4,4],[4,8],[8,8]]"],
]


@pytest.mark.parametrize("text, kernels, printed", KERNEL_CASES)
def test_block_kernel_notation(text, kernels, printed):
    spec = ArchSpec.parse(text)
    assert spec.kernel_sizes == kernels
    assert str(spec) == printed
    assert ArchSpec.parse(str(spec)) == spec
    assert ArchSpec.from_list(spec.to_list()) == spec
    assert spec.with_default_kernels().kernel_sizes == tuple((3,) * len(s) for s in spec.stages)
    assert spec.with_default_kernels().stages == spec.stages


def test_default_kernels_equal_explicit_threes():
    explicit = ArchSpec(4, 4, (4, 4), (4, 8), (8, 8), kernels=((3, 3), (3, 3), (3, 3)))
    assert explicit == PAPER_MODEL_1 and hash(explicit) == hash(PAPER_MODEL_1)
    assert explicit != ArchSpec(4, 4, (4, 4), (4, 8), (8, 8), kernels=((3, 5), (3, 3), (3, 3)))


@pytest.mark.parametrize("text", ["[4,4,[4,[8,4]],[8],[8]]", "[4,4,[4,[8,0]],[8],[8]]", "[4,4,[4,[8,true]],[8],[8]]"])
def test_bad_kernel_names_the_rule(text):
    with pytest.raises(ConfigError, match="odd positive"):
        ArchSpec.parse(text)


def test_kernels_must_match_the_blocks():
    with pytest.raises(ConfigError, match="kernel size"):
        ArchSpec(4, 4, (4, 4), (8,), (8,), kernels=((3,), (3,), (3,)))
