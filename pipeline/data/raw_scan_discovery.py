"""Finding raw scans to cut (any DICOM tree, LUNA16 .mhd files, pylidc's LIDC-IDRI layout) and reading each one.

Each scan found becomes a :class:`ScanJob` with a cheap fingerprint of its files, so a re-run of
:func:`naslung.pipeline.data.prepare_raw.prepare_scans` can tell which scans changed.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from naslung.pipeline.data.dicom_series import (
    is_dicom_file,
    list_dicom_series,
    read_dicom_series,
    volume_from_dicom_datasets,
)
from naslung.pipeline.data.pylidc_compat import import_pylidc
from naslung.pipeline.data.scan_io import read_mhd
from naslung.pipeline.data.scan_volume import MHD_SUFFIXES, ScanVolume
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.progress import Progress, no_progress

__all__ = [
    "ScanJob",
    "discover_dicom",
    "discover_luna16",
    "discover_lidc",
    "read_pylidc_config_path",
    "pylidc_dicom_root",
    "read_scan_volume",
]

logger = logging.getLogger(__name__)


@dataclass
class ScanJob:
    """One scan to process: where it is, which series, and how to read it."""

    path: Path
    series_uid: str
    reader: str  # "dicom" | "mhd" | "lidc"
    fingerprint: str = ""
    lidc_scan: Any = None
    reject: str | None = None  # set during discovery when the scan cannot even be listed


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


def discover_dicom(
    data: Path, state: Mapping[str, Mapping[str, Any]], progress: Progress = no_progress
) -> tuple[list[ScanJob], list[dict[str, Any]]]:
    """One job per (folder, series) in any folder tree holding DICOM files.

    Returns:
        (jobs, state records of folders listed afresh: their fingerprint and series UIDs).
    """
    jobs: list[ScanJob] = []
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
                jobs.append(ScanJob(folder, "", "dicom", fingerprint, reject=err.reason))
                continue
            listed.append({"key": f"folder::{folder}", "fingerprint": fingerprint, "series": series})
        for uid in series:
            jobs.append(ScanJob(folder, uid, "dicom", fingerprint))
    return jobs, listed


def discover_luna16(data: Path) -> list[ScanJob]:
    """One job per .mhd/.mha under ``data`` (LUNA16's ``subset*/`` layout or any tree)."""
    if data.is_file() and data.name.lower().endswith(MHD_SUFFIXES):
        candidates = [data]
    else:
        candidates = [folder / n for folder, names in _walk(data) for n in names if n.lower().endswith(MHD_SUFFIXES)]
    jobs = []
    for path in candidates:
        stem = path.name[: -len(path.suffix)]
        companions = [path] + [p for p in (path.with_suffix(".raw"), path.with_suffix(".zraw")) if p.exists()]
        jobs.append(ScanJob(path, stem, "mhd", _fingerprint(companions)))
    return jobs


def read_pylidc_config_path() -> str:
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
    pl = import_pylidc()
    scan_module = importlib.import_module("pylidc.Scan")
    original = scan_module._get_dicom_file_path_from_config_file
    scan_module._get_dicom_file_path_from_config_file = lambda: str(root)
    try:
        yield pl
    finally:
        scan_module._get_dicom_file_path_from_config_file = original


def discover_lidc(pl: Any, series_uids: Sequence[str]) -> tuple[list[ScanJob], list[str]]:
    """One job per cohort series found in pylidc's database and on disk; returns (jobs, missing uids)."""
    jobs: list[ScanJob] = []
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
        jobs.append(ScanJob(folder, uid, "lidc", _fingerprint(files), lidc_scan=scan))
    return jobs, missing


def read_scan_volume(job: ScanJob) -> ScanVolume:
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
