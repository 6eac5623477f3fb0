"""The NAS-Lung search space (eqs. 5-7): block channels and depths of stages 3-5, counted, ranked and sampled."""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from naslung.networks.spec import ArchSpec
from naslung.pipeline.errors import ConfigError, SearchError

__all__ = [
    "Arch",
    "SearchSpace",
    "arch_from",
    "arch_to_text",
    "to_arch_spec",
    "DEPTH_RULES",
    "MONOTONE_MODES",
]

logger = logging.getLogger(__name__)

Arch = tuple[tuple[int, ...], ...]
"""Internal candidate: five stages of block channels, ``((c1,), (c2,), stage3, stage4, stage5)``.

Stages 1 and 2 are single convolutions (one entry each); stages 3-5 list the output channels of their residual
blocks, as in the paper notation ``[4,4,[4,4],[4,8],[8,8]]`` (eq. 7 with the two stem widths in front).
"""

DEPTH_RULES = ("paper", "none")
MONOTONE_MODES = ("global", "stage", "none")
NUM_STAGES = 5


def _as_int(value: Any, what: str, spec: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SearchError(f"architecture {spec!r}: {what} must be an integer channel count, got {value!r}")
    return int(value)


def arch_from(spec: Any) -> Arch:
    """Convert any architecture form into the internal :data:`Arch` tuple.

    Args:
        spec: paper-notation text ``"[4,4,[4,4],[4,8],[8,8]]"``, the same as a nested list, an object with
            ``to_list()`` returning that list (``naslung.networks.spec.ArchSpec``), or an :data:`Arch` tuple.
            Eq. (7)'s three-list form ``[[4,4],[4,8],[8,8]]`` gets stages 1-2 of 4 channels, as ``ArchSpec`` does.

    Raises:
        SearchError: when ``spec`` is not five stages in that notation.
    """
    if isinstance(spec, tuple) and len(spec) == NUM_STAGES and all(isinstance(s, tuple) for s in spec):
        obj: Any = spec
    elif isinstance(spec, str):
        try:
            obj = json.loads(spec)
        except json.JSONDecodeError as err:
            raise SearchError(
                f"architecture text {spec!r} is not paper notation like '[4,4,[4,4],[4,8],[8,8]]' ({err})"
            ) from None
    elif hasattr(spec, "to_list"):
        obj = spec.to_list()
    else:
        obj = spec
    if isinstance(obj, (list, tuple)) and len(obj) == 3 and all(isinstance(s, (list, tuple)) for s in obj):
        obj = [4, 4, *obj]  # eq. (7) lists only stages 3-5; stages 1-2 have the paper's fixed 4 channels
    if not isinstance(obj, (list, tuple)) or len(obj) != NUM_STAGES:
        raise SearchError(
            f"architecture {spec!r} must have 5 entries: stage-1 and stage-2 channels, then the block channel "
            "lists of stages 3, 4 and 5, e.g. [4,4,[4,4],[4,8],[8,8]]"
        )
    stages: list[tuple[int, ...]] = []
    for index, entry in enumerate(obj):
        if index < 2:
            if isinstance(entry, (list, tuple)):
                if len(entry) != 1:
                    raise SearchError(f"architecture {spec!r}: stage {index + 1} is one convolution, got {entry!r}")
                entry = entry[0]
            stages.append((_as_int(entry, f"stage {index + 1}", spec),))
        else:
            if not isinstance(entry, (list, tuple)):
                raise SearchError(f"architecture {spec!r}: stage {index + 1} must be a list of block channels")
            stages.append(tuple(_as_int(c, f"a block of stage {index + 1}", spec) for c in entry))
    return tuple(stages)


def arch_to_text(arch: Any) -> str:
    """Paper notation of an architecture without spaces, e.g. ``"[4,4,[4,4],[4,8],[8,8]]"``.

    A spec whose blocks name kernel sizes (``[4,4,[4,[8,5]],[8],[8]]``, found by the DNAS search) is not an
    :data:`Arch` of this space but is printed as ``ArchSpec`` prints it, so candidates of either search train,
    profile and journal alike.
    """
    try:
        a = arch_from(arch)
    except SearchError as err:
        try:
            spec = ArchSpec.coerce(arch)
        except ConfigError:
            raise err from None
        if spec == spec.with_default_kernels():
            raise
        return str(spec)
    blocks = ",".join("[" + ",".join(str(c) for c in stage) + "]" for stage in a[2:])
    return f"[{a[0][0]},{a[1][0]},{blocks}]"


def to_arch_spec(arch: Any) -> ArchSpec:
    """Convert an architecture to ``naslung.networks.spec.ArchSpec`` (the form networks are built from).

    This is the one place where the search core meets the network code; the search itself works on :data:`Arch`.
    """
    if isinstance(arch, ArchSpec):
        return arch
    return ArchSpec.parse(arch_to_text(arch))


def _multiset_count(length: int, values: int) -> int:
    """Number of non-decreasing sequences of ``length`` over ``values`` ordered symbols."""
    if length == 0:
        return 1
    if values <= 0:
        return 0
    return math.comb(length + values - 1, length)


class _SequenceCounter:
    """Counts, ranks and unranks channel-index sequences, non-decreasing or free, in lexicographic order."""

    def __init__(self, num_values: int, monotone: bool) -> None:
        self.num_values = num_values
        self.monotone = monotone

    def count(self, length: int, start: int = 0) -> int:
        if self.monotone:
            return _multiset_count(length, self.num_values - start)
        return self.num_values**length

    def unrank(self, index: int, length: int, start: int = 0) -> tuple[int, ...]:
        out: list[int] = []
        low = start
        for position in range(length):
            rest = length - position - 1
            for value in range(low if self.monotone else 0, self.num_values):
                block = self.count(rest, value) if self.monotone else self.num_values**rest
                if index < block:
                    out.append(value)
                    if self.monotone:
                        low = value
                    break
                index -= block
        return tuple(out)

    def rank(self, seq: Sequence[int], start: int = 0) -> int:
        index = 0
        low = start
        for position, value in enumerate(seq):
            rest = len(seq) - position - 1
            for smaller in range(low if self.monotone else 0, value):
                index += self.count(rest, smaller) if self.monotone else self.num_values**rest
            if self.monotone:
                low = value
        return index

    def iterate(self, length: int) -> Iterator[tuple[int, ...]]:
        if self.monotone:
            return itertools.combinations_with_replacement(range(self.num_values), length)
        return itertools.product(range(self.num_values), repeat=length)


def _randbelow(rng: np.random.Generator, n: int) -> int:
    """A uniform integer in ``[0, n)`` for any Python int ``n`` >= 1."""
    if n <= 2**62:
        return int(rng.integers(n))
    bits = n.bit_length()
    nbytes = (bits + 7) // 8
    while True:
        value = int.from_bytes(rng.bytes(nbytes), "little") >> (nbytes * 8 - bits)
        if value < n:
            return value


class SearchSpace:
    """The NAS-Lung search space of CBAM-3D residual networks (Jiang et al., NAS-Lung, sec. 3.4, eqs. 5-7).

    A candidate is ``[c1, c2, [C^3_1..C^3_L], [C^4_1..C^4_M], [C^5_1..C^5_N]]``: stage 1 and 2 widths fixed to
    ``stem``, and one output-channel count per residual block of stages 3, 4 and 5, with

    - ``C^s_i`` in ``channels`` (eq. 6: {4, 8, 16, 32, 64, 128});
    - ``min_blocks <= L + M + N <= max_blocks`` (eq. 6: 3..9);
    - ``depth_rule="paper"``: ``floor(T/4) <= D <= ceil(T/2)`` for each ``D`` in ``{L, M, N}``, ``T = L+M+N``
      (eq. 5); ``"none"`` drops eq. 5; a callable ``T -> (low, high)`` sets other bounds;
    - every stage has at least ``min_stage_blocks`` blocks (default 1: eq. 5 alone allows an empty stage when
      ``T = 3``, but the network of Fig. 1 has residual blocks in each of stages 3-5, and the reference code's
      ``get_all_search_space`` splits the blocks into three non-empty stages);
    - ``monotone="global"``: the width of a block is no narrower than the block before it, across stage
      boundaries. The paper does not state it; the NAS-Lung reference code does (``searchspace/res_search_space.py``,
      "the width of a block to be no narrower than its preceding block": it generates non-decreasing channel lists
      over all blocks, then splits them into stages), and all the paper's examples obey it, so it is the default.
      ``"stage"`` asks it only within each stage, ``"none"`` not at all. The stem is not part of the chain.

    Candidates convert to ``naslung.networks.spec.ArchSpec`` with :func:`to_arch_spec`, which needs at least one
    block per stage (``min_stage_blocks >= 1``).

    The space is never materialised: :meth:`size` is a closed-form count per depth triple (multiset
    coefficients), :meth:`unrank` / :meth:`rank` map between candidates and ``range(size())`` (depth triples
    sorted by ``(T, L, M, N)``, then channel lists lexicographically), :meth:`sample` draws an index uniformly and
    unranks it, and :meth:`iter` yields candidates lazily in rank order.

    Args:
        channels: allowed block widths; sorted, distinct, positive.
        min_blocks: the least total number of residual blocks ``L + M + N``.
        max_blocks: the most total number of residual blocks.
        stem: widths of stages 1 and 2 (fixed in the search).
        depth_rule: ``"paper"`` (eq. 5), ``"none"``, or a callable ``total -> (low, high)`` bounding each stage.
        min_stage_blocks: the least number of blocks in each of stages 3-5.
        monotone: ``"global"``, ``"stage"`` or ``"none"`` (see above).

    Raises:
        SearchError: when an option is invalid or the space is empty.
    """

    def __init__(
        self,
        channels: Sequence[int] = (4, 8, 16, 32, 64, 128),
        min_blocks: int = 3,
        max_blocks: int = 9,
        stem: Sequence[int] = (4, 4),
        depth_rule: str | Callable[[int], tuple[int, int]] = "paper",
        min_stage_blocks: int = 1,
        monotone: str = "global",
    ) -> None:
        chans = [int(c) for c in channels]
        if not chans or any(c <= 0 for c in chans) or sorted(set(chans)) != chans:
            raise SearchError(f"channels {tuple(channels)!r} must be distinct positive integers in increasing order")
        if len(stem) != 2 or any(int(c) <= 0 for c in stem):
            raise SearchError(f"stem {tuple(stem)!r} must be two positive channel counts (stages 1 and 2)")
        if min_stage_blocks < 0:
            raise SearchError(f"min_stage_blocks must be >= 0, got {min_stage_blocks}")
        if min_blocks < 0 or min_blocks > max_blocks:
            raise SearchError(
                f"need 0 <= min_blocks <= max_blocks, got min_blocks={min_blocks}, max_blocks={max_blocks}"
            )
        if not callable(depth_rule) and depth_rule not in DEPTH_RULES:
            raise SearchError(
                f"depth_rule {depth_rule!r} is not one of {DEPTH_RULES} or a callable total -> (low, high)"
            )
        if monotone not in MONOTONE_MODES:
            raise SearchError(f"monotone {monotone!r} is not one of {MONOTONE_MODES}")
        self.channels: tuple[int, ...] = tuple(chans)
        self.min_blocks = int(min_blocks)
        self.max_blocks = int(max_blocks)
        self.stem: tuple[int, int] = (int(stem[0]), int(stem[1]))
        self.depth_rule = depth_rule
        self.min_stage_blocks = int(min_stage_blocks)
        self.monotone = monotone
        self._index = {c: i for i, c in enumerate(self.channels)}
        self._seq = _SequenceCounter(len(self.channels), monotone != "none")
        self._depths = self._enumerate_depths()
        self._depth_counts = [self._count_for_depths(d) for d in self._depths]
        self._size = sum(self._depth_counts)
        if self._size == 0:
            raise SearchError(f"the search space {self!r} is empty; widen min_blocks..max_blocks or the depth rule")

    # -- structure -------------------------------------------------------------------------------------------------
    def depth_bounds(self, total: int) -> tuple[int, int]:
        """Bounds ``(low, high)`` on the number of blocks of each of stages 3-5 when ``L + M + N = total``."""
        if callable(self.depth_rule):
            low, high = self.depth_rule(total)
        elif self.depth_rule == "paper":
            low, high = total // 4, -(-total // 2)
        else:
            low, high = 0, total
        return max(int(low), self.min_stage_blocks), int(high)

    def _enumerate_depths(self) -> list[tuple[int, int, int]]:
        depths = []
        for total in range(self.min_blocks, self.max_blocks + 1):
            low, high = self.depth_bounds(total)
            for first in range(low, high + 1):
                for second in range(low, high + 1):
                    third = total - first - second
                    if low <= third <= high:
                        depths.append((first, second, third))
        return depths

    @property
    def depths(self) -> list[tuple[int, int, int]]:
        """The allowed ``(L, M, N)`` triples in rank order."""
        return list(self._depths)

    def _count_for_depths(self, depths: tuple[int, int, int]) -> int:
        if self.monotone == "global":
            return self._seq.count(sum(depths))
        return math.prod(self._seq.count(d) for d in depths)

    def size(self) -> int:
        """The exact number of candidates (an arbitrary-precision int); nothing is materialised."""
        return self._size

    def __len__(self) -> int:
        return self._size

    def count_by_depths(self) -> dict[tuple[int, int, int], int]:
        """Number of candidates for each allowed ``(L, M, N)``."""
        return dict(zip(self._depths, self._depth_counts, strict=True))

    # -- membership ------------------------------------------------------------------------------------------------
    def validate(self, spec: Any) -> Arch:
        """Return ``spec`` as an :data:`Arch` if it lies in the space.

        Raises:
            SearchError: naming the rule the candidate breaks.
        """
        arch = arch_from(spec)
        text = arch_to_text(arch)
        if (arch[0][0], arch[1][0]) != self.stem:
            raise SearchError(f"candidate {text}: stages 1-2 must have {self.stem} channels in this search space")
        blocks = [c for stage in arch[2:] for c in stage]
        bad = sorted({c for c in blocks if c not in self._index})
        if bad:
            raise SearchError(f"candidate {text}: block channels {bad} are not in the allowed set {self.channels}")
        depths = tuple(len(stage) for stage in arch[2:])
        total = sum(depths)
        if not self.min_blocks <= total <= self.max_blocks:
            raise SearchError(
                f"candidate {text}: {total} residual blocks, outside {self.min_blocks}..{self.max_blocks} (eq. 6)"
            )
        low, high = self.depth_bounds(total)
        for name, depth in zip("LMN", depths, strict=True):
            if not low <= depth <= high:
                raise SearchError(
                    f"candidate {text}: {name}={depth} blocks, outside {low}..{high} for L+M+N={total} "
                    f"(eq. 5 with at least {self.min_stage_blocks} block(s) per stage)"
                )
        if self.monotone == "global" and any(a > b for a, b in zip(blocks, blocks[1:], strict=False)):
            raise SearchError(f"candidate {text}: a block is narrower than the block before it (monotone='global')")
        if self.monotone == "stage" and any(a > b for s in arch[2:] for a, b in zip(s, s[1:], strict=False)):
            raise SearchError(f"candidate {text}: a block is narrower than the one before it in its stage")
        return arch

    def contains(self, spec: Any) -> bool:
        """Whether ``spec`` is a candidate of this space (malformed specs are simply not contained)."""
        try:
            self.validate(spec)
        except SearchError:
            return False
        return True

    def __contains__(self, spec: Any) -> bool:
        return self.contains(spec)

    # -- ranking ---------------------------------------------------------------------------------------------------
    def _build(self, seqs: Sequence[tuple[int, ...]]) -> Arch:
        stages = tuple(tuple(self.channels[i] for i in seq) for seq in seqs)
        return ((self.stem[0],), (self.stem[1],)) + stages

    def _split(self, flat: tuple[int, ...], depths: tuple[int, int, int]) -> list[tuple[int, ...]]:
        a, b = depths[0], depths[0] + depths[1]
        return [flat[:a], flat[a:b], flat[b:]]

    def unrank(self, index: int) -> Arch:
        """The candidate of rank ``index`` in ``range(size())``."""
        if not 0 <= index < self._size:
            raise SearchError(f"rank {index} is outside 0..{self._size - 1} of this search space")
        position = 0
        while index >= self._depth_counts[position]:
            index -= self._depth_counts[position]
            position += 1
        depths = self._depths[position]
        if self.monotone == "global":
            return self._build(self._split(self._seq.unrank(index, sum(depths)), depths))
        seqs = []
        for depth_pos, depth in enumerate(depths):
            radix = math.prod(self._seq.count(d) for d in depths[depth_pos + 1 :])
            seqs.append(self._seq.unrank(index // radix, depth))
            index %= radix
        return self._build(seqs)

    def rank(self, spec: Any) -> int:
        """The rank of a candidate (inverse of :meth:`unrank`).

        Raises:
            SearchError: when ``spec`` is not in the space.
        """
        arch = self.validate(spec)
        depths = tuple(len(s) for s in arch[2:])
        offset = 0
        for d, count in zip(self._depths, self._depth_counts, strict=True):
            if d == depths:
                break
            offset += count
        idx = [tuple(self._index[c] for c in stage) for stage in arch[2:]]
        if self.monotone == "global":
            return offset + self._seq.rank(idx[0] + idx[1] + idx[2])
        index = 0
        for depth, seq in zip(depths, idx, strict=True):
            index = index * self._seq.count(depth) + self._seq.rank(seq)
        return offset + index

    # -- enumeration and sampling ----------------------------------------------------------------------------------
    def iter(self) -> Iterator[Arch]:
        """Yield every candidate lazily, in rank order."""
        for depths in self._depths:
            if self.monotone == "global":
                for flat in self._seq.iterate(sum(depths)):
                    yield self._build(self._split(flat, depths))
            else:
                for seqs in itertools.product(*(list(self._seq.iterate(d)) for d in depths)):
                    yield self._build(seqs)

    def __iter__(self) -> Iterator[Arch]:
        return self.iter()

    def sample(self, rng: np.random.Generator | int | None = None) -> Arch:
        """One candidate drawn exactly uniformly over the space (a uniform rank, unranked).

        Args:
            rng: a numpy ``Generator`` (or a seed for one).
        """
        generator = np.random.default_rng(rng)
        return self.unrank(_randbelow(generator, self._size))

    def describe(self) -> dict[str, Any]:
        """The options and size of the space, for logs and run records."""
        return {
            "channels": list(self.channels),
            "min_blocks": self.min_blocks,
            "max_blocks": self.max_blocks,
            "stem": list(self.stem),
            "depth_rule": self.depth_rule if isinstance(self.depth_rule, str) else repr(self.depth_rule),
            "min_stage_blocks": self.min_stage_blocks,
            "monotone": self.monotone,
            "size": self._size,
        }

    def __repr__(self) -> str:
        return (
            f"SearchSpace(channels={self.channels}, min_blocks={self.min_blocks}, max_blocks={self.max_blocks}, "
            f"stem={self.stem}, depth_rule={self.depth_rule!r}, min_stage_blocks={self.min_stage_blocks}, "
            f"monotone={self.monotone!r})"
        )
