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
"""

from __future__ import annotations

import configparser
import contextlib
import csv
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.atomic_io import append_jsonl, atomic_path, read_jsonl, write_csv, write_json
from naslung.pipeline.data.datalists import MANIFEST_FIELD_ORDER
from naslung.pipeline.data.dicom_series import (
    is_dicom_file,
    list_dicom_series,
    read_dicom_series,
    volume_from_dicom_datasets,
)
from naslung.pipeline.data.scan_io import read_mhd
from naslung.pipeline.data.scan_volume import MHD_SUFFIXES, ScanVolume
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.progress import Progress, no_progress

__all__ = [
    "prepare_scans",
    "PrepareSummary",
    "PREPARE_KINDS",
    "PREPARE_MANIFEST_COLUMNS",
    "REJECT_COLUMNS",
    "CUBE_SIZE",
    "CUBE_SPACING_MM",
    "nodule_world_centre",
    "pylidc_dicom_root",
]

logger = logging.getLogger(__name__)

PREPARE_KINDS: tuple[str, ...] = ("lidc", "luna16", "dicom")
PREPARE_MANIFEST_COLUMNS: tuple[str, ...] = MANIFEST_FIELD_ORDER
REJECT_COLUMNS: tuple[str, ...] = ("path", "series_uid", "reason")
#: Cube edge (voxels) and voxel size (mm), as NAS-Lung's 32³ inputs at 1 mm.
CUBE_SIZE = 32
CUBE_SPACING_MM = 1.0
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


@dataclass
class _ScanJob:
    """One scan to process: where it is, which series, and how to read it."""

    path: Path
    series_uid: str
    reader: str  # "dicom" | "mhd" | "lidc"
    fingerprint: str = ""
    lidc_scan: Any = None
    reject: str | None = None  # set during discovery when the scan cannot even be listed


# ------------------------------------------------------------------------------------------------ cohort


def _load_cohort(cohort: Any) -> list[dict[str, Any]]:
    """Cohort rows from ``None`` (packaged default), a CSV path, or a sequence of dict rows."""
    if cohort is None:
        from naslung.pipeline.data.cohort_table import load_default_cohort

        rows = list(load_default_cohort())
        source = "the packaged default cohort"
    elif isinstance(cohort, (str, os.PathLike)):
        from naslung.pipeline.data.cohort_table import read_cohort_csv

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
    from naslung.pipeline.data.folds import assign_folds, read_luna16_subsets

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


# ------------------------------------------------------------------------------------------------ geometry


def nodule_world_centre(volume: ScanVolume, row: Mapping[str, Any]) -> np.ndarray:
    """World LPS centre (mm) of a cohort nodule in ``volume``, after checking the cohort against the scan.

    ``x_mm``/``y_mm`` come from the cohort's voxel ``(i, j)`` through the scan's origin, spacing and direction;
    ``z_mm`` is the cohort's. The cohort's slice index ``k`` counts slices in ascending z (pylidc's order); the
    scan's z at ``k`` must agree with the cohort's ``z_mm`` within half a slice.

    Args:
        volume: the scan.
        row: a cohort row with ``nodule_id``, ``i`` (column), ``j`` (row), ``k`` (slice) and ``z_mm``.

    Returns:
        (3,) float64 world centre in mm.

    Raises:
        DataError: the scan is not axial, ``k`` is outside the scan, or ``k`` and ``z_mm`` disagree.
    """
    i, j, k, z_mm = float(row["i"]), float(row["j"]), float(row["k"]), float(row["z_mm"])
    n_slices = volume.hu.shape[2]
    dz = float(volume.affine[2, 2])
    if abs(dz) < 1e-6 or abs(dz) < 0.5 * float(np.linalg.norm(volume.affine[:3, 2])):
        raise DataError(
            "the slice axis is not along z (a sagittal/coronal or strongly tilted scan); the cohort indexes axial "
            "slices, so this scan cannot be matched",
            path=str(volume.source),
        )
    if not -0.5 <= k <= n_slices - 0.5:
        raise DataError(
            f"nodule {row['nodule_id']}: cohort slice index k={k:g} is outside this scan's {n_slices} slices; the "
            "cohort was derived from a different version of the series",
            path=str(volume.source),
        )
    k_scan = k if dz > 0 else (n_slices - 1) - k
    centre = volume.voxel_to_world([i, j, k_scan])
    half_slice = 0.5 * abs(dz)
    if abs(centre[2] - z_mm) > half_slice + 1e-3:
        raise DataError(
            f"nodule {row['nodule_id']}: cohort slice index k={k:g} lies at z={centre[2]:.2f} mm in this scan but "
            f"the cohort says z_mm={z_mm:.2f} (more than half a slice, {half_slice:.2f} mm, apart); the scan's slice "
            "positions differ from those the cohort was derived from (missing/extra slices or another export)",
            path=str(volume.source),
        )
    centre[2] = z_mm
    return centre


def _cut_cube(volume: ScanVolume, centre_mm: np.ndarray) -> np.ndarray:
    """One (32, 32, 32) float32 cube in [0, 1] around ``centre_mm``."""
    from naslung.transforms.nodule_cube import hu_to_unit, sample_cube_hu

    hu = sample_cube_hu(volume.hu, volume.affine, centre_mm, size=CUBE_SIZE, spacing_mm=CUBE_SPACING_MM)
    cube = np.asarray(hu_to_unit(hu), dtype=np.float32)
    if cube.shape != (CUBE_SIZE,) * 3 or not np.isfinite(cube).all():
        raise DataError(f"cube around {centre_mm.tolist()} has shape {cube.shape} or non-finite values")
    return cube


# ------------------------------------------------------------------------------------------------ discovery


def _fingerprint(paths: Sequence[Path]) -> str:
    """Hash of the files' names, sizes and modification times (cheap change detection)."""
    digest = hashlib.sha1()
    for path in sorted(paths):
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _folder_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


def _has_dicom_files(files: Sequence[str]) -> bool:
    return any(f.lower().endswith((".dcm", ".dicom", ".ima")) for f in files)


def _walk(data: Path) -> Iterator[tuple[Path, list[str]]]:
    """Walk ``data`` in sorted order, skipping hidden folders; yields (folder, file names)."""
    for root, dirs, files in os.walk(data):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield Path(root), sorted(f for f in files if not f.startswith("."))


def _discover_dicom(
    data: Path, state: Mapping[str, Mapping[str, Any]], progress: Progress = no_progress
) -> tuple[list[_ScanJob], list[dict[str, Any]]]:
    """One job per (folder, series) in any folder tree holding DICOM files.

    Returns:
        (jobs, state records of folders listed afresh: their fingerprint and series UIDs).
    """
    jobs: list[_ScanJob] = []
    listed: list[dict[str, Any]] = []
    folders = [(folder, names) for folder, names in _walk(data) if names]
    for folder, names in progress(folders, total=len(folders), desc="finding DICOM series"):
        if not _has_dicom_files(names) and not any(is_dicom_file(folder / n) for n in names[:5]):
            continue
        files = _folder_files(folder)
        fingerprint = _fingerprint(files)
        cached = state.get(f"folder::{folder}")
        if cached and cached.get("fingerprint") == fingerprint:
            series = list(cached.get("series", []))
        else:
            try:
                series = sorted(list_dicom_series(folder))
            except DataError as err:
                jobs.append(_ScanJob(folder, "", "dicom", fingerprint, reject=err.reason))
                continue
            listed.append({"key": f"folder::{folder}", "fingerprint": fingerprint, "series": series})
        for uid in series:
            jobs.append(_ScanJob(folder, uid, "dicom", fingerprint))
    return jobs, listed


def _discover_luna16(data: Path) -> list[_ScanJob]:
    """One job per .mhd/.mha under ``data`` (LUNA16's ``subset*/`` layout or any tree)."""
    if data.is_file() and data.name.lower().endswith(MHD_SUFFIXES):
        candidates = [data]
    else:
        candidates = [folder / n for folder, names in _walk(data) for n in names if n.lower().endswith(MHD_SUFFIXES)]
    jobs = []
    for path in candidates:
        stem = path.name[: -len(path.suffix)]
        companions = [path] + [p for p in (path.with_suffix(".raw"), path.with_suffix(".zraw")) if p.exists()]
        jobs.append(_ScanJob(path, stem, "mhd", _fingerprint(companions)))
    return jobs


def _read_pylidc_config_path() -> str:
    """The ``[dicom] path`` of pylidc's config file, read without pylidc (which writes a template if absent)."""
    name = "pylidc.conf" if sys.platform.startswith("win") else ".pylidcrc"
    config_file = Path(os.path.expanduser("~")) / name
    hint = (
        f"pylidc has no DICOM path configured; write {config_file} with the lines\n  [dicom]\n  path = "
        "/path/to/LIDC-IDRI\n(the folder holding LIDC-IDRI-0001, ...) or pass --data PATH"
    )
    if not config_file.is_file():
        raise ConfigError(hint)
    parser = configparser.ConfigParser()
    try:
        parser.read(config_file)
        path = parser.get("dicom", "path").strip()
    except (configparser.Error, UnicodeDecodeError) as err:
        raise ConfigError(f"{hint}\n({config_file}: {err})") from err
    if not path:
        raise ConfigError(hint)
    return path


@contextlib.contextmanager
def pylidc_dicom_root(root: str | os.PathLike) -> Iterator[Any]:
    """Import pylidc (through the compat shim) with its DICOM root set to ``root`` for the block.

    pylidc reads its root from ``~/.pylidcrc`` inside ``Scan.get_path_to_dicom_files``; this points that
    lookup at ``root`` without touching the user's config file, and restores it afterwards.

    Yields:
        the ``pylidc`` module.
    """
    import importlib

    from naslung.pipeline.data.pylidc_compat import import_pylidc

    pl = import_pylidc()
    scan_module = importlib.import_module("pylidc.Scan")
    original = scan_module._get_dicom_file_path_from_config_file
    scan_module._get_dicom_file_path_from_config_file = lambda: str(root)
    try:
        yield pl
    finally:
        scan_module._get_dicom_file_path_from_config_file = original


def _discover_lidc(pl: Any, series_uids: Sequence[str]) -> tuple[list[_ScanJob], list[str]]:
    """One job per cohort series found in pylidc's database and on disk; returns (jobs, missing uids)."""
    jobs: list[_ScanJob] = []
    missing: list[str] = []
    scans = {
        s.series_instance_uid: s
        for s in pl.query(pl.Scan).filter(pl.Scan.series_instance_uid.in_(list(series_uids))).all()
    }
    for uid in series_uids:
        scan = scans.get(uid)
        if scan is None:
            logger.warning("series %s of the cohort is not in pylidc's database; skipped", uid)
            missing.append(uid)
            continue
        try:
            folder = Path(scan.get_path_to_dicom_files())
        except (OSError, RuntimeError) as err:
            logger.info("series %s (%s): no DICOM files found (%s)", uid, scan.patient_id, err)
            missing.append(uid)
            continue
        files = [p for p in _folder_files(folder) if p.name.lower().endswith(".dcm")]
        jobs.append(_ScanJob(folder, uid, "lidc", _fingerprint(files), lidc_scan=scan))
    return jobs, missing


# ------------------------------------------------------------------------------------------------ annotations


def _find_annotations(data: Path) -> Path | None:
    """LUNA16's ``annotations.csv`` under ``data`` (the shallowest one), if present."""
    if data.is_file():
        return None
    found = sorted(data.rglob("annotations.csv"), key=lambda p: (len(p.parts), str(p)))
    return found[0] if found else None


def _read_annotations(path: Path) -> dict[str, list[tuple[np.ndarray, float]]]:
    """LUNA16 annotations: series uid -> [(world centre mm (3,), diameter mm)]."""
    table: dict[str, list[tuple[np.ndarray, float]]] = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        need = {"seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"}
        if not need <= set(reader.fieldnames or []):
            raise DataError(f"annotations.csv needs columns {sorted(need)} (LUNA16 format)", path=str(path))
        for line, row in enumerate(reader, start=2):
            try:
                centre = np.array([float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])])
                diameter = float(row["diameter_mm"])
            except ValueError as err:
                raise DataError(f"line {line}: {err}; fix or remove the row", path=str(path)) from err
            table.setdefault(row["seriesuid"].strip(), []).append((centre, diameter))
    return table


# ------------------------------------------------------------------------------------------------ the run


def _read_volume(job: _ScanJob) -> ScanVolume:
    if job.reader == "dicom":
        return read_dicom_series(job.path, series_uid=job.series_uid)
    if job.reader == "mhd":
        return read_mhd(job.path)
    try:
        images = job.lidc_scan.load_all_dicom_images(verbose=False)
    except DataError:
        raise
    except Exception as err:  # pydicom errors on damaged files
        raise DataError(
            f"pylidc could not load the series ({type(err).__name__}: {err}); a file is damaged: copy it again",
            path=str(job.path),
        ) from err
    return volume_from_dicom_datasets(images, job.path)


def _save_cube(path: Path, cube: np.ndarray) -> bool:
    """Write ``cube`` atomically unless an identical one is there; returns True when written."""
    if path.exists():
        try:
            if np.array_equal(np.load(path), cube):
                return False
        except (OSError, ValueError):
            pass
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, cube)
    return True


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
        root = Path(data if data is not None else _read_pylidc_config_path()).expanduser().resolve()
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
            jobs, listed = _discover_dicom(data_path, state, progress)
            for folder_record in listed:
                append_jsonl(out / STATE_NAME, folder_record)
        elif kind == "luna16":
            jobs = _discover_luna16(data_path)
        else:
            pl = stack.enter_context(pylidc_dicom_root(data_path))
            jobs, missing = _discover_lidc(pl, sorted(by_series))
        summary.scans_found = len(jobs)
        annotations: dict[str, list[tuple[np.ndarray, float]]] = {}
        if kind == "luna16":
            annotations_csv = _find_annotations(data_path)
            if annotations_csv is not None:
                logger.info("cross-checking nodule centres against %s", annotations_csv)
                annotations = _read_annotations(annotations_csv)

        manifest: list[dict[str, Any]] = []
        rejects: list[dict[str, Any]] = []
        found_uids: dict[str, Path] = {}

        def reject(job: _ScanJob, reason: str) -> None:
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
                volume = _read_volume(job)
                cubes: dict[str, np.ndarray] = {}
                centres: dict[str, list[float]] = {}
                for row in sorted(nodules, key=lambda r: str(r["nodule_id"])):
                    centre = nodule_world_centre(volume, row)
                    try:
                        cubes[str(row["nodule_id"])] = _cut_cube(volume, centre)
                    except DataError as err:
                        raise DataError(f"nodule {row['nodule_id']}: {err.reason}", path=str(job.path)) from err
                    centres[str(row["nodule_id"])] = [float(v) for v in centre]
                summary.annotation_far += _check_annotations(job, nodules, centres, annotations)
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
                if _save_cube(cubes_dir / f"{nodule_id}.npy", cube):
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


def _check_annotations(
    job: _ScanJob,
    nodules: Sequence[Mapping[str, Any]],
    centres: Mapping[str, Sequence[float]],
    annotations: Mapping[str, list[tuple[np.ndarray, float]]],
) -> int:
    """Count (and log) nodules farther than their radius + 2 mm from every LUNA16 annotation of their scan."""
    entries = annotations.get(job.series_uid)
    if not entries:
        return 0
    far = 0
    for row in nodules:
        centre = np.asarray(centres[str(row["nodule_id"])])
        distance = min(float(np.linalg.norm(centre - c)) for c, _ in entries)
        radius = max([d for _, d in entries] + [float(row.get("diameter_mm") or 0.0)]) / 2.0
        if distance > radius + 2.0:
            far += 1
            logger.warning(
                "nodule %s in %s is %.1f mm from the nearest annotations.csv entry of its series; check the "
                "cohort's geometry for this scan",
                row["nodule_id"],
                job.path,
                distance,
            )
    return far


def _datalist(manifest: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The MONAI-style datalist: one ``{"image", "label", "fold", "nodule_id"}`` per cube (as ``prepare embedded``)."""
    return [{k: row[k] for k in ("image", "label", "fold", "nodule_id")} for row in manifest]
