"""Splitting oversized pylidc clusters by mask overlap: two touching nodules, a reader's split contour, a collision."""

from __future__ import annotations

import re

import pytest

from naslung.pipeline.data.cluster_split import split_oversized_cluster
from naslung.pipeline.data.cohort_rules import LIDC_READERS
from naslung.pipeline.errors import DataError


def _box(x0, x1, y0=0, y1=8, z0=0, z1=6):
    return {(x, y, z) for x in range(x0, x1) for y in range(y0, y1) for z in range(z0, z1)}


def _cluster(*contours):
    """Annotation records of a cluster from ``(id, reading session, voxel set)``, as the cluster cache holds them."""
    records = []
    for annotation_id, session, voxels in contours:
        common = {str(other): len(voxels & theirs) for other, _, theirs in contours if other != annotation_id}
        records.append(
            {
                "id": annotation_id,
                "reader": session,
                "voxels": len(voxels),
                "common": {k: v for k, v in common.items() if v},
            }
        )
    return records


def _ids(groups):
    return [[r["id"] for r in g] for g in groups]


#: Two touching nodules (x 0-9 and 12-19) outlined by sessions 0-3 and 0, 1, 3; session 2 drew one contour
#: around both (id 8) besides its own of nodule A; session 1 outlined nodule B twice (ids 6 and 7).
TWO_NODULES = _cluster(
    (1, 0, _box(0, 10)),
    (2, 0, _box(12, 20)),
    (3, 1, _box(1, 10)),
    (4, 2, _box(0, 9)),
    (5, 3, _box(0, 10, 1, 8)),
    (6, 1, _box(12, 19)),
    (7, 1, _box(13, 18, 2, 6)),
    (8, 2, _box(0, 20)),
    (9, 3, _box(12, 20, 0, 7)),
)

SPLIT_CASES = [
    [TWO_NODULES, [[1, 3, 4, 5], [2, 6, 9]], [7, 8]],
    # one nodule, one reader's contour split in two parts (the larger part stays)
    [
        _cluster(
            (1, 0, _box(0, 10)), (2, 1, _box(0, 10)), (3, 2, _box(1, 10)), (4, 3, _box(0, 6)), (5, 3, _box(6, 10))
        ),
        [[1, 2, 3, 4]],
        [5],
    ],
    # a separate small finding next to the nodule stays its own group (then dropped by the readers rule)
    [
        _cluster(
            (1, 0, _box(0, 10)), (2, 1, _box(0, 10)), (3, 2, _box(1, 10)), (4, 3, _box(0, 9)), (5, 3, _box(30, 33))
        ),
        [[1, 2, 3, 4], [5]],
        [],
    ],
]


@pytest.mark.parametrize("cluster, groups, discarded", SPLIT_CASES)
def test_split_oversized_cluster(cluster, groups, discarded):
    split = split_oversized_cluster(cluster)
    assert split.reason is None
    assert _ids(split.groups) == groups and [r["id"] for r in split.discarded] == discarded
    assert all(len({r["reader"] for r in g}) == len(g) <= LIDC_READERS for g in split.groups)


def test_split_oversized_cluster_drops_what_it_cannot_separate():
    """Sessions 0-2 each outline two lesions that overlap by half: no group may hold a session twice."""
    lesion_a, lesion_b = _box(0, 10), _box(5, 25)
    cluster = _cluster(*[(1 + n, n, lesion_a) for n in range(3)], *[(4 + n, n, lesion_b) for n in range(3)])
    split = split_oversized_cluster(cluster)
    assert split.groups == [] and split.discarded == []
    assert re.search(r"annotations \[1, 2, 3\] and \[4, 5, 6\] share 50%", split.reason), split.reason
    with pytest.raises(DataError, match="cache"):
        split_oversized_cluster([{"id": 1, "reader": 0}, {"id": 2, "reader": 1}])
