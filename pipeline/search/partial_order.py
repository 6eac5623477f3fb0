"""The partial order of Partial Order Pruning: one architecture is below another when it is narrower and/or shallower.

Definition (used throughout :mod:`naslung.pipeline.search`). For architectures ``a`` and ``b`` with the same five
stages, ``a`` precedes ``b`` (``a <= b``: "``a`` is below ``b``") when, in every stage ``s``, the blocks of ``a``
can be matched, in order, to distinct blocks of ``b`` that are at least as wide: there is a strictly increasing map
``phi_s`` from the blocks of ``a``'s stage ``s`` into the blocks of ``b``'s stage ``s`` with
``a_s[i] <= b_s[phi_s(i)]``. Equivalently, ``a`` is obtained from ``b`` by deleting residual blocks (blocks stay in
their stage) and reducing channel counts. Stages 1 and 2 are single convolutions, so there it reads ``a <= b``.

This is a genuine partial order on architectures: reflexive (identity map), transitive (compose the maps) and
antisymmetric (mutual embeddings force equal stage lengths, then the maps are identities, so the channels are
equal). It is the transitive closure of the two one-step relations of the NAS-Lung reference code
(``get_narrower_module``: same depths, channel-wise <=; ``get_shallower_module``: delete one block from a stage of
two or more). It formalises POP's assumption (Li et al., CVPR 2019; NAS-Lung sec. 3.4: "a narrower network is
always more efficient and less accurate than a wider one"), read for width and depth alike. Intermediate
architectures of a chain need not lie in the search space.

Checking an embedding is greedy per stage (match each block of ``a`` to the earliest remaining block of ``b`` that is
wide enough), which is exact for this "subsequence with <=" problem, and takes ``O(len(b))`` per stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from naslung.pipeline.search.space import Arch, arch_from

__all__ = ["precedes", "strictly_precedes", "comparable", "stage_embeds", "arch_precedes"]


def stage_embeds(small: Sequence[int], large: Sequence[int]) -> bool:
    """Whether the blocks ``small`` embed in order into ``large`` with ``small[i] <= large[phi(i)]``.

    Args:
        small: channels of the blocks of one stage of the lower architecture.
        large: channels of the blocks of the same stage of the upper architecture.
    """
    n_small, n_large = len(small), len(large)
    if n_small > n_large:
        return False
    j = 0
    for width in small:
        while j < n_large and large[j] < width:
            j += 1
        if j == n_large:
            return False
        j += 1
    return True


def arch_precedes(a: Arch, b: Arch) -> bool:
    """:func:`precedes` for two internal :data:`~naslung.pipeline.search.space.Arch` tuples (no conversion)."""
    if len(a) != len(b):
        return False
    for stage_a, stage_b in zip(a, b, strict=True):
        if len(stage_a) > len(stage_b):
            return False
    return all(stage_embeds(stage_a, stage_b) for stage_a, stage_b in zip(a, b, strict=True))


def precedes(a: Any, b: Any) -> bool:
    """Whether ``a`` is below ``b`` in the partial order (``a`` narrower and/or shallower than, or equal to ``b``).

    Args:
        a: an architecture in any form :func:`~naslung.pipeline.search.space.arch_from` accepts.
        b: likewise.
    """
    return arch_precedes(arch_from(a), arch_from(b))


def strictly_precedes(a: Any, b: Any) -> bool:
    """``a`` below ``b`` and different from it."""
    arch_a, arch_b = arch_from(a), arch_from(b)
    return arch_a != arch_b and arch_precedes(arch_a, arch_b)


def comparable(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are ordered one way or the other."""
    arch_a, arch_b = arch_from(a), arch_from(b)
    return arch_precedes(arch_a, arch_b) or arch_precedes(arch_b, arch_a)
