"""Raw scans (LIDC-IDRI via pylidc, LUNA16 .mhd, any DICOM tree) to labelled 32³ nodule cubes.

:func:`prepare_scans` finds the scans, matches them to cohort nodules by series UID, checks the cohort's
geometry against each scan, cuts one cube per nodule and writes, under ``out_dir``:

- ``cubes/<nodule_id>.npy``: float32 (32, 32, 32) cubes, 1 mm voxels, HU window mapped to [0, 1];
- ``manifest.csv`` (:data:`PREPARE_MANIFEST_COLUMNS`) and ``datalist.json`` (a list of MONAI data dicts);
- ``rejects.csv`` (``path, series_uid, reason``): every scan found that yielded no cubes, with the reason.
  Scans whose series is not in the cohort are listed there too ("not in cohort"), so the file accounts for
  every scan under ``data``;
- ``prepare_state.jsonl``: per-scan fingerprints, so a re-run skips scans that did not change.

A bad scan never stops the run: it is rejected and the loop goes on. Each scan's cubes are computed in
memory first and written (atomically, one file at a time) only when all of that scan's nodules passed.

The scans are found and read by :mod:`~naslung.pipeline.data.raw_scan_discovery`; the nodule centres are checked and
the cubes cut by :mod:`~naslung.pipeline.data.raw_nodule_cubes`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.atomic_io import append_jsonl, read_jsonl, write_csv, write_json
from naslung.pipeline.data.cohort_table import load_default_cohort, read_cohort_csv
from naslung.pipeline.data.datalists import MANIFEST_FIELD_ORDER
from naslung.pipeline.data.folds import assign_folds, read_luna16_subsets
from naslung.pipeline.data.raw_nodule_cubes import (
    CUBE_SIZE,
    CUBE_SPACING_MM,
    check_annotations,
    cut_cube,
    find_annotations,
    nodule_world_centre,
    read_annotations,
    save_cube,
)
from naslung.pipeline.data.raw_scan_discovery import (
    ScanJob,
    discover_dicom,
    discover_lidc,
    discover_luna16,
    pylidc_dicom_root,
    read_pylidc_config_path,
    read_scan_volume,
)
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.progress import Progress, no_progress

__all__ = [
    "prepare_scans",
    "PrepareSummary",
    "PREPARE_KINDS",
    "PREPARE_MANIFEST_COLUMNS",
    "REJECT_COLUMNS",
]

logger = logging.getLogger(__name__)

PREPARE_KINDS: tuple[str, ...] = ("lidc", "luna16", "dicom")
PREPARE_MANIFEST_COLUMNS: tuple[str, ...] = MANIFEST_FIELD_ORDER
REJECT_COLUMNS: tuple[str, ...] = ("path", "series_uid", "reason")
#: Bumped when the cube recipe changes, so re-runs redo every scan.
_RECIPE_VERSION = 1
_REQUIRED_COHORT_COLUMNS = ("nodule_id", "series_uid", "i", "j", "k", "z_mm", "label", "fold")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NOT_IN_COHORT = "not in cohort: the series has no nodule in the cohort, so no cube is cut"

MANIFEST_NAME = "manifest.csv"
DATALIST_NAME = "datalist.json"
REJECTS_NAME = "rejects.csv"
STATE_NAME = "prepare_state.jsonl"
CUBES_DIR = "cubes"


@dataclass
class PrepareSummary:
    """What one :func:`prepare_scans` run did.

    Args:
        kind: ``lidc``, ``luna16`` or ``dicom``.
        out_dir: the output folder.
        scans_found: scans (series) found under the data path.
        scans_read: scans read and cut in this run.
        scans_unchanged: scans whose cubes were kept because neither they nor their cohort rows changed since the
            last run (not read again).
        scans_rejected: scans listed in ``rejects.csv`` (including "not in cohort"); one rejected before and
            unchanged since is not read again.
        nodules: rows in ``manifest.csv``.
        cubes_written: cube files written in this run.
        cubes_kept: cubes already present and identical (or of unchanged scans), not rewritten.
        cohort_series_missing: cohort series UIDs with no scan under the data path.
        annotation_far: nodules farther than their radius from every LUNA16 ``annotations.csv`` entry.
        manifest: path of ``manifest.csv``; datalist: of ``datalist.json``; rejects: of ``rejects.csv``.
    """

    kind: str
    out_dir: str
    scans_found: int = 0
    scans_read: int = 0
    scans_unchanged: int = 0
    scans_rejected: int = 0
    nodules: int = 0
    cubes_written: int = 0
    cubes_kept: int = 0
    cohort_series_missing: int = 0
    annotation_far: int = 0
    manifest: str = ""
    datalist: str = ""
    rejects: str = ""
    reject_reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The summary as a plain dict (for JSON or printing)."""
        return asdict(self)


# ------------------------------------------------------------------------------------------------ cohort


def _load_cohort(cohort: Any) -> list[dict[str, Any]]:
    """Cohort rows from ``None`` (packaged default), a CSV path, or a sequence of dict rows."""
    if cohort is None:
        rows = list(load_default_cohort())
        source = "the packaged default cohort"
    elif isinstance(cohort, (str, os.PathLike)):
        rows = list(read_cohort_csv(cohort))
        source = str(cohort)
    else:
        rows = [dict(r) for r in cohort]
        source = "the given cohort rows"
    if not rows:
        raise DataError(f"{source} holds no nodules; derive one with `naslung prepare cohort`")
    missing = [c for c in _REQUIRED_COHORT_COLUMNS if c not in rows[0]]
    if missing:
        raise DataError(
            f"{source} lacks column(s) {missing}; a cohort written by `naslung prepare cohort` has "
            f"{list(_REQUIRED_COHORT_COLUMNS)}"
        )
    seen: set[str] = set()
    for row in rows:
        nodule_id = str(row["nodule_id"])
        if not _SAFE_ID.fullmatch(nodule_id):
            raise DataError(
                f"{source}: nodule_id {nodule_id!r} cannot be used as a file name (letters, digits, '.', '_', '-' "
                "only); fix the cohort"
            )
        if nodule_id in seen:
            raise DataError(f"{source}: nodule_id {nodule_id!r} appears twice; nodule ids must be unique")
        seen.add(nodule_id)
    return rows


def _apply_subsets(rows: list[dict[str, Any]], subsets_csv: str | os.PathLike | None) -> list[dict[str, Any]]:
    """Folds from a LUNA16 subset table when one is given, else the cohort's (assigned by patient if it has none).

    With a subset table, nodules of series the table does not list are dropped (LUNA16 excluded those scans).
    """
    if subsets_csv is not None:
        return [dict(r) for r in assign_folds(rows, subsets=read_luna16_subsets(subsets_csv))]
    if any(r.get("fold") in (None, "", "None") for r in rows):
        logger.info("the cohort has nodules without a fold; assigning 10 folds by patient (seed 0)")
        return [dict(r) for r in assign_folds(rows)]
    return rows


def _geometry_digest(rows: Sequence[Mapping[str, Any]]) -> str:
    """Hash of what decides a scan's cubes: the recipe and each nodule's id and voxel/z position."""
    keys = [
        (str(r["nodule_id"]), float(r["i"]), float(r["j"]), float(r["k"]), float(r["z_mm"]))
        for r in sorted(rows, key=lambda r: str(r["nodule_id"]))
    ]
    text = json.dumps([_RECIPE_VERSION, CUBE_SIZE, CUBE_SPACING_MM, keys])
    return hashlib.sha1(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------------------ the run


def _remove_stale_temps(cubes_dir: Path) -> None:
    """Delete temp files a killed earlier run left in ``cubes/`` (our own ``.<id>.npy.*.tmp.npy`` names)."""
    if not cubes_dir.is_dir():
        return
    for tmp in cubes_dir.glob(".*.npy.*.tmp.npy"):
        logger.info("removing %s left by an interrupted run", tmp)
        tmp.unlink(missing_ok=True)


def _latest_state(out_dir: Path) -> dict[str, dict[str, Any]]:
    state: dict[str, dict[str, Any]] = {}
    for record in read_jsonl(out_dir / STATE_NAME):
        state[str(record.get("key"))] = record
    return state


def _manifest_row(row: Mapping[str, Any], centre: Sequence[float], job_path: Path, patient_id: str) -> dict:
    return {
        "nodule_id": str(row["nodule_id"]),
        "patient_id": str(row.get("patient_id") or patient_id),
        "series_uid": str(row["series_uid"]),
        "image": f"{CUBES_DIR}/{row['nodule_id']}.npy",
        "label": int(float(row["label"])),
        "fold": int(float(row["fold"])),
        "diameter_mm": row.get("diameter_mm", ""),
        "malignancy_mean": row.get("malignancy_mean", ""),
        "x_mm": round(float(centre[0]), 3),
        "y_mm": round(float(centre[1]), 3),
        "z_mm": round(float(centre[2]), 3),
        "i": row["i"],
        "j": row["j"],
        "k": row["k"],
        "source": str(job_path),
    }


def prepare_scans(
    kind: str,
    data: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    cohort: Any = None,
    subsets_csv: str | os.PathLike | None = None,
    progress: Progress = no_progress,
) -> PrepareSummary:
    """Cut labelled 32³ cubes from raw scans for every cohort nodule.

    Args:
        kind: ``"dicom"`` (any folder tree of DICOM series), ``"luna16"`` (``subset*/*.mhd`` or any tree of
            ``.mhd``; an ``annotations.csv`` found under ``data`` is used to cross-check nodule centres) or
            ``"lidc"`` (pylidc's LIDC-IDRI layout; ``data`` overrides the root in ``~/.pylidcrc``).
        data: the scans' root folder (for ``lidc``, ``None`` uses pylidc's configured path).
        out_dir: where cubes, ``manifest.csv``, ``datalist.json`` and ``rejects.csv`` go.
        cohort: ``None`` (the packaged default cohort), a cohort CSV path, or cohort rows (dicts with
            ``nodule_id, series_uid, patient_id, i, j, k, z_mm, label, fold, diameter_mm, malignancy_mean``).
        subsets_csv: a LUNA16 subset table; when given, folds are re-assigned from it.
        progress: wraps the scan loop (the CLI passes a tqdm bar).

    Returns:
        the run's :class:`PrepareSummary`.

    Raises:
        ConfigError: unknown ``kind``, or ``lidc`` without ``data`` and without a configured pylidc path.
        DataError: ``data`` missing, or the cohort unreadable. Problems with single scans never raise: they are
            listed in ``rejects.csv``.
    """
    if kind not in PREPARE_KINDS:
        raise ConfigError(f"unknown scan kind {kind!r}; choose one of {', '.join(PREPARE_KINDS)}")
    out = Path(out_dir)
    if kind == "lidc":
        root = Path(data if data is not None else read_pylidc_config_path()).expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(f"LIDC-IDRI folder {root} does not exist; fix --data or the path in ~/.pylidcrc")
        data_path = root
    else:
        if data is None:
            raise ConfigError(f"prepare {kind} needs --data PATH (the folder holding the scans)")
        data_path = Path(data).expanduser().resolve()
        if not data_path.exists():
            raise DataError(f"data path does not exist; point --data at the {kind} scans", path=str(data_path))
    rows = _apply_subsets(_load_cohort(cohort), subsets_csv)
    by_series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_series.setdefault(str(row["series_uid"]).strip(), []).append(row)

    out.mkdir(parents=True, exist_ok=True)
    cubes_dir = out / CUBES_DIR
    cubes_dir.mkdir(exist_ok=True)
    _remove_stale_temps(cubes_dir)
    state = _latest_state(out)
    summary = PrepareSummary(kind=kind, out_dir=str(out))

    with contextlib.ExitStack() as stack:
        missing: list[str] = []
        if kind == "dicom":
            jobs, listed = discover_dicom(data_path, state, progress)
            for folder_record in listed:
                append_jsonl(out / STATE_NAME, folder_record)
        elif kind == "luna16":
            jobs = discover_luna16(data_path)
        else:
            pl = stack.enter_context(pylidc_dicom_root(data_path))
            jobs, missing = discover_lidc(pl, sorted(by_series))
        summary.scans_found = len(jobs)
        annotations: dict[str, list[tuple[np.ndarray, float]]] = {}
        if kind == "luna16":
            annotations_csv = find_annotations(data_path)
            if annotations_csv is not None:
                logger.info("cross-checking nodule centres against %s", annotations_csv)
                annotations = read_annotations(annotations_csv)

        manifest: list[dict[str, Any]] = []
        rejects: list[dict[str, Any]] = []
        found_uids: dict[str, Path] = {}

        def reject(job: ScanJob, reason: str) -> None:
            rejects.append({"path": str(job.path), "series_uid": job.series_uid, "reason": reason})
            label = reason.split(":", 1)[0] if reason.startswith(("not in cohort", "duplicate")) else "bad scan"
            summary.reject_reasons[label] = summary.reject_reasons.get(label, 0) + 1

        for job in progress(jobs, total=len(jobs), desc=f"{kind} scans"):
            if job.reject is not None:
                logger.warning("rejected %s: %s", job.path, job.reject)
                reject(job, job.reject)
                continue
            nodules = by_series.get(job.series_uid, [])
            if not nodules:
                logger.info("%s (series %s): not in cohort", job.path, job.series_uid)
                reject(job, _NOT_IN_COHORT)
                continue
            if job.series_uid in found_uids:
                reject(job, f"duplicate: series already read from {found_uids[job.series_uid]}")
                continue
            found_uids[job.series_uid] = job.path
            key = f"scan::{job.path}::{job.series_uid}"
            digest = _geometry_digest(nodules)
            cached = state.get(key)
            if (
                cached
                and cached.get("fingerprint") == job.fingerprint
                and cached.get("digest") == digest
                and (cached.get("reason") or all((cubes_dir / f"{r['nodule_id']}.npy").is_file() for r in nodules))
            ):
                if cached.get("reason"):  # rejected before and unchanged: not read again
                    reject(job, str(cached["reason"]))
                    continue
                summary.scans_unchanged += 1
                centres = cached["centres"]
                for row in nodules:
                    manifest.append(_manifest_row(row, centres[str(row["nodule_id"])], job.path, cached["patient_id"]))
                summary.cubes_kept += len(nodules)
                continue
            record: dict[str, Any] = {"key": key, "fingerprint": job.fingerprint, "digest": digest}
            try:
                volume = read_scan_volume(job)
                cubes: dict[str, np.ndarray] = {}
                centres: dict[str, list[float]] = {}
                for row in sorted(nodules, key=lambda r: str(r["nodule_id"])):
                    centre = nodule_world_centre(volume, row)
                    try:
                        cubes[str(row["nodule_id"])] = cut_cube(volume, centre)
                    except DataError as err:
                        raise DataError(f"nodule {row['nodule_id']}: {err.reason}", path=str(job.path)) from err
                    centres[str(row["nodule_id"])] = [float(v) for v in centre]
                summary.annotation_far += check_annotations(job, nodules, centres, annotations)
            except DataError as err:
                reason = err.reason if err.path is not None else str(err)
                logger.warning("rejected %s: %s", job.path, reason)
                reject(job, reason)
                append_jsonl(out / STATE_NAME, {**record, "reason": reason})
                continue
            except Exception as err:  # a bad scan never stops the run
                reason = f"unexpected {type(err).__name__} while reading: {err}"
                logger.warning("rejected %s: %s", job.path, reason, exc_info=logger.isEnabledFor(logging.DEBUG))
                reject(job, reason)
                continue
            summary.scans_read += 1
            for nodule_id, cube in cubes.items():
                if save_cube(cubes_dir / f"{nodule_id}.npy", cube):
                    summary.cubes_written += 1
                else:
                    summary.cubes_kept += 1
            for row in nodules:
                manifest.append(_manifest_row(row, centres[str(row["nodule_id"])], job.path, volume.patient_id))
            append_jsonl(out / STATE_NAME, {**record, "centres": centres, "patient_id": volume.patient_id})

    summary.cohort_series_missing = len(missing) + len(set(by_series) - set(found_uids) - set(missing))
    if summary.cohort_series_missing:
        logger.info("%d cohort series have no scan under %s", summary.cohort_series_missing, data_path)
    manifest.sort(key=lambda r: r["nodule_id"])
    summary.nodules = len(manifest)
    summary.scans_rejected = len(rejects)
    summary.manifest = str(write_csv(out / MANIFEST_NAME, manifest, PREPARE_MANIFEST_COLUMNS))
    summary.datalist = str(write_json(out / DATALIST_NAME, _datalist(manifest)))
    summary.rejects = str(write_csv(out / REJECTS_NAME, rejects, REJECT_COLUMNS))
    logger.info(
        "prepare %s: %d nodules from %d scans (%d read, %d unchanged), %d rejected; cubes in %s",
        kind,
        summary.nodules,
        summary.scans_read + summary.scans_unchanged,
        summary.scans_read,
        summary.scans_unchanged,
        summary.scans_rejected,
        cubes_dir,
    )
    return summary


def _datalist(manifest: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The MONAI-style datalist: one ``{"image", "label", "fold", "nodule_id"}`` per cube (as ``prepare embedded``)."""
    return [{k: row[k] for k in ("image", "label", "fold", "nodule_id")} for row in manifest]
