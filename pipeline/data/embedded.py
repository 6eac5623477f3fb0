"""The embedded default data set: 32³ cubes and a few whole scans of synthetic CT on the real LIDC-IDRI annotations.

Every cohort nodule is drawn by :mod:`naslung.pipeline.data.synthetic_ct` from its readers' real contours and ratings
and cut with the same extraction as real scans (``sample_cube_hu`` -> ``hu_to_unit``). The images are synthetic, so
accuracy on this data set checks the pipeline and is not comparable to the NAS-Lung paper's results.

Layout of ``out_dir``::

    cubes/<nodule_id>.npy          float32 (32, 32, 32), (x, y, z) order, values in [0, 1]
    manifest.csv                   one row per nodule (nodule_id, ..., image, label, fold, x_mm, y_mm, z_mm, ...)
    cohort.csv                     the cohort rows rendered, readers' ratings included (the ratings ceiling reads them)
    datalist.json                  MONAI-style list of {"image", "label", "fold", "nodule_id"}
    embedded.json                  the parameters and a summary of the last run
    scans/dicom/<series_uid>/      whole synthetic scans as DICOM CT series
    scans/mhd/<series_uid>.mhd     the same scans as MetaImage (+ .raw)
    scans/annotations.csv          LUNA16 format: seriesuid, coordX, coordY, coordZ, diameter_mm
    scans/truth.csv                nodule_id, seriesuid, world centre, voxel centre in the written scan, label
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import multiprocessing
import os
import shutil
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.atomic_io import atomic_path, write_csv, write_json
from naslung.pipeline.data.cohort_table import load_default_cohort, write_cohort_csv
from naslung.pipeline.data.datalists import MANIFEST_FIELD_ORDER
from naslung.pipeline.data.scan_writers import write_dicom_series, write_mhd
from naslung.pipeline.data.synthetic_ct import RENDER_VERSION, render_nodule_region, render_scan
from naslung.pipeline.data.synthetic_spec import nodule_spec, scan_geometry
from naslung.pipeline.errors import DataError
from naslung.pipeline.progress import Progress, no_progress
from naslung.transforms.nodule_cube import hu_to_unit, sample_cube_hu

__all__ = [
    "CUBE_SIZE",
    "COHORT_FILE",
    "MANIFEST_FIELDS",
    "LUNA16_ANNOTATION_FIELDS",
    "TRUTH_FIELDS",
    "render_embedded",
    "render_cube",
    "write_rendered_cohort",
    "select_scans",
    "cube_path",
]

logger = logging.getLogger(__name__)

#: Edge of the nodule cubes in voxels (1 mm spacing), as in the paper.
CUBE_SIZE = 32
MANIFEST_FIELDS = list(MANIFEST_FIELD_ORDER)
#: The cohort rows a data set was rendered from, beside its manifest (where
#: :func:`naslung.pipeline.ensemble.reference_models.load_reference_data` looks for the readers' ratings).
COHORT_FILE = "cohort.csv"
LUNA16_ANNOTATION_FIELDS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
TRUTH_FIELDS = [
    "nodule_id",
    "seriesuid",
    "coordX",
    "coordY",
    "coordZ",
    "diameter_mm",
    "label",
    "voxel_x",
    "voxel_y",
    "voxel_z",
]
_RENDER_VERSION = RENDER_VERSION  # synthetic_ct bumps it when the drawing changes, so resumed runs re-render


def cube_path(out_dir: str | os.PathLike, nodule_id: str) -> Path:
    """Where the cube of ``nodule_id`` lives under ``out_dir``."""
    return Path(out_dir) / "cubes" / f"{nodule_id}.npy"


def render_cube(row: Mapping[str, Any], seed: int = 0, size: int = CUBE_SIZE) -> np.ndarray:
    """Render one nodule's cube: native-spacing region -> ``sample_cube_hu`` (1 mm) -> ``hu_to_unit``.

    Args:
        row: a cohort row.
        seed: global seed.
        size: cube edge in voxels at 1 mm.

    Returns:
        float32 (size, size, size) in (x, y, z) order with values in [0, 1].
    """
    # only the voxels the cube interpolates from are drawn (the others are NaN, which sample_cube_hu refuses)
    hu, affine, centre_mm = render_nodule_region(
        row, size_mm=size + 8.0, seed=seed, cube_size=size, cube_spacing_mm=1.0
    )
    cube = sample_cube_hu(hu, affine, centre_mm, size=size, spacing_mm=1.0)
    return np.asarray(hu_to_unit(cube), dtype=np.float32)


def write_rendered_cohort(out_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write the cohort rows a data set is rendered from to ``out_dir/cohort.csv``, atomically.

    Every column of the rows is kept, the readers' ratings (``subtlety`` ... ``malignancy``, ``;``-joined) included,
    so the data folder carries the ratings of its own nodules: the ratings ceiling of
    :mod:`naslung.pipeline.reference_models` reads them from here rather than from whatever cohort is packaged.

    Args:
        out_dir: the data set folder.
        rows: the cohort rows, in manifest order.

    Returns:
        the path written.
    """
    return write_cohort_csv(rows, Path(out_dir) / COHORT_FILE)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def _pool_context() -> multiprocessing.context.BaseContext:
    """``fork`` where it is safe, else ``spawn``: forked workers start at once, spawned ones import numpy, scipy,
    torch and naslung again (~7 s on a 2-core machine). Safe means this process has not imported pylidc (its
    SQLite connection must not cross a fork) and runs no other thread (a lock held by one would stay held).
    """
    if "fork" in multiprocessing.get_all_start_methods() and "pylidc" not in sys.modules:
        if threading.active_count() == 1:
            return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _init_worker() -> None:
    """Run torch on one thread in a worker: an OpenMP pool that the parent used does not survive a fork (a parallel
    region would hang; torch's DataLoader workers do the same), and the workers already share the cores."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _worker_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of ``workers`` processes started as :func:`_pool_context` says, set up by :func:`_init_worker`."""
    context = _pool_context()
    logger.debug("embedded: %d %s workers", workers, context.get_start_method())
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)


def _cube_task(rows: Sequence[Mapping[str, Any]], out_dir: str, seed: int, size: int) -> int:
    """Worker: render and save the cubes of ``rows`` (one series); returns how many were written."""
    for row in rows:
        _save_npy(cube_path(out_dir, str(row["nodule_id"])), render_cube(row, seed=seed, size=size))
    return len(rows)


def _scan_task(
    series_uid: str, rows: Sequence[Mapping[str, Any]], out_dir: str, seed: int, matrix: int, max_slices: int | None
) -> dict[str, Any]:
    """Worker: render one whole scan and write it as DICOM and MetaImage; returns its frame."""
    hu, spacing, origin = render_scan(series_uid, rows, matrix=matrix, max_slices=max_slices, seed=seed)
    scans = Path(out_dir) / "scans"
    patient_id = str(rows[0].get("patient_id", series_uid))
    write_mhd(hu, spacing, origin, scans / "mhd" / f"{series_uid}.mhd")
    write_dicom_series(hu, spacing, origin, scans / "dicom" / series_uid, patient_id=patient_id, series_uid=series_uid)
    return {"series_uid": series_uid, "shape": list(hu.shape), "spacing_mm": list(spacing), "origin_mm": list(origin)}


def select_scans(
    rows: Sequence[Mapping[str, Any]], n_scans: int, matrix: int = 256, max_slices: int | None = 64
) -> list[str]:
    """Pick ``n_scans`` series with several nodules that all fit in a ``matrix`` x ``matrix`` x ``max_slices`` crop.

    Series with more nodules come first; ties go to the smaller pixel spacing, then the series uid (deterministic).
    """
    by_series: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_series[str(row["series_uid"])].append(row)
    candidates = []
    for uid, members in by_series.items():
        specs = [nodule_spec(r) for r in members]
        centres = np.array([s.centre_index for s in specs])
        span = centres.max(axis=0) - centres.min(axis=0)
        margin_xy = 40.0 / specs[0].pixel_spacing_mm  # room for the 32 mm cube around every nodule
        margin_z = 20.0 / specs[0].slice_spacing_mm
        fits = span[0] + margin_xy <= matrix and span[1] + margin_xy <= matrix
        fits = fits and (max_slices is None or span[2] + margin_z <= max_slices)
        candidates.append((not fits, -len(members), specs[0].pixel_spacing_mm, uid))
    candidates.sort()
    return [c[3] for c in candidates[: max(0, n_scans)]]


def _scan_tables(
    series_uids: Sequence[str], by_series: Mapping[str, Sequence[Mapping[str, Any]]], frames: Mapping[str, Mapping]
) -> tuple[list[dict], list[dict]]:
    annotations, truth = [], []
    for uid in series_uids:
        members = by_series[uid]
        geometry = scan_geometry(members)
        frame = frames.get(uid)
        for row in members:
            spec = nodule_spec(row)
            world = geometry.index_to_world(spec.centre_index)
            coords = {"seriesuid": uid, "coordX": world[0], "coordY": world[1], "coordZ": world[2]}
            coords["diameter_mm"] = float(row.get("diameter_mm") or spec.diameter_mm)
            annotations.append(coords)
            voxel = [math.nan] * 3
            if frame is not None:
                voxel = list((world - np.asarray(frame["origin_mm"])) / np.asarray(frame["spacing_mm"]))
            truth.append(
                {
                    **coords,
                    "nodule_id": spec.nodule_id,
                    "label": row.get("label"),
                    "voxel_x": voxel[0],
                    "voxel_y": voxel[1],
                    "voxel_z": voxel[2],
                }
            )
    return annotations, truth


def _manifest_row(row: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    spec = nodule_spec(row)
    world = scan_geometry([row]).index_to_world(spec.centre_index)
    return {
        "nodule_id": spec.nodule_id,
        "patient_id": row.get("patient_id", ""),
        "series_uid": spec.series_uid,
        "image": cube_path(out_dir, spec.nodule_id).relative_to(out_dir).as_posix(),
        "label": int(float(row["label"])),
        "fold": int(float(row["fold"])) if row.get("fold") not in (None, "") else -1,
        "diameter_mm": row.get("diameter_mm", ""),
        "malignancy_mean": row.get("malignancy_mean", ""),
        "x_mm": float(world[0]),
        "y_mm": float(world[1]),
        "z_mm": float(world[2]),
        "i": spec.centre_index[0],
        "j": spec.centre_index[1],
        "k": spec.centre_index[2],
        "source": "embedded",
    }


def _read_params(path: Path) -> dict[str, Any] | None:
    import json

    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("params", {}))
    except (OSError, ValueError, AttributeError):
        return None


def render_embedded(
    out_dir: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]] | None = None,
    n_scans: int = 2,
    seed: int = 0,
    workers: int = 2,
    progress: Progress = no_progress,
    *,
    scan_matrix: int = 256,
    scan_max_slices: int | None = 64,
    cube_size: int = CUBE_SIZE,
) -> dict[str, Any]:
    """Render the embedded data set into ``out_dir`` (see the module docstring for the layout).

    Cubes that exist are kept (resume) as long as ``embedded.json`` records the same seed, cube size and
    renderer version (and scans the same crop too); otherwise the stale cubes/ (scans/) folder is deleted and
    rendered again. Every file is written atomically. Work runs in a process
    pool of ``workers`` (``workers <= 1``: in this process; forked where that is safe, see :func:`_pool_context`),
    scans first, then cubes grouped by series.

    Args:
        out_dir: the data set folder (created).
        rows: cohort rows; None loads the default cohort (``naslung.pipeline.data.cohort_table.load_default_cohort``).
        n_scans: how many whole scans to write (series with the most nodules that fit the crop).
        seed: global seed of the renderer; the same seed gives the same bytes.
        workers: worker processes.
        progress: progress reporter wrapped around the task loop.
        scan_matrix: in-plane size of the whole scans (a crop of the 512 matrix at the real spacing).
        scan_max_slices: at most this many slices per whole scan (None: all).
        cube_size: cube edge in 1 mm voxels.

    Returns:
        a summary: counts (``n_nodules``, ``n_rendered``, ``n_skipped``), ``seconds`` (wall time),
        ``render_seconds`` (wall time of the rendering tasks), ``scans`` (their frames) and the written paths
        (``manifest``, ``datalist``, ``cohort``: the rows rendered, see :func:`write_rendered_cohort`).

    Raises:
        DataError: duplicate nodule ids, a row the renderer cannot use, or ``out_dir`` holding cubes without
            an ``embedded.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rows is None:
        rows = load_default_cohort()
    rows = list(rows)
    ids = [str(r["nodule_id"]) for r in rows]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise DataError(f"duplicate nodule ids in the cohort rows: {dupes}; every nodule needs its own id")
    params = {"seed": int(seed), "cube_size": int(cube_size), "render_version": _RENDER_VERSION}
    scan_params = {**params, "scan_matrix": int(scan_matrix), "scan_max_slices": scan_max_slices}
    summary_path = out / "embedded.json"
    previous = _read_params(summary_path)
    resume = previous is not None and all(previous.get(k) == v for k, v in params.items())
    resume_scans = previous is not None and all(previous.get(k) == v for k, v in scan_params.items())
    cubes_dir, scans_dir = out / "cubes", out / "scans"
    if previous is None and cubes_dir.is_dir() and any(cubes_dir.glob("*.npy")):
        raise DataError(
            "holds cubes but no embedded.json saying how they were made; "
            "give an empty folder or delete its cubes/ and scans/ folders",
            path=str(out),
        )
    if previous is not None and not resume:
        logger.info("embedded data set at %s was made with %s; re-rendering with %s", out, previous, params)
        shutil.rmtree(cubes_dir, ignore_errors=True)  # stale cubes must not survive an interrupted re-render
    if previous is not None and not resume_scans:
        shutil.rmtree(scans_dir, ignore_errors=True)
    # record the parameters before rendering, so an interrupted run resumes with matching files only
    write_json(summary_path, {"params": scan_params, "complete": False})

    by_series: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_series[str(row["series_uid"])].append(row)
    scan_uids = select_scans(rows, n_scans, scan_matrix, scan_max_slices) if n_scans > 0 else []

    todo_cubes: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    n_skipped = 0
    for row in rows:
        if resume and cube_path(out, str(row["nodule_id"])).exists():
            n_skipped += 1
        else:
            todo_cubes[str(row["series_uid"])].append(row)
    todo_scans = [
        uid
        for uid in scan_uids
        if not (resume_scans and (scans_dir / "mhd" / f"{uid}.mhd").exists() and (scans_dir / "dicom" / uid).is_dir())
    ]
    logger.info(
        "embedded: %d nodules (%d to render, %d kept), %d scans to write, %d workers",
        len(rows),
        len(rows) - n_skipped,
        n_skipped,
        len(todo_scans),
        workers,
    )

    start = time.perf_counter()
    frames: dict[str, dict[str, Any]] = {}
    jobs = [(_scan_task, (uid, by_series[uid], str(out), seed, scan_matrix, scan_max_slices)) for uid in todo_scans]
    jobs += [(_cube_task, (members, str(out), seed, cube_size)) for members in todo_cubes.values()]
    if workers <= 1:
        results = (fn(*args) for fn, args in jobs)
        for result in progress(results, total=len(jobs), desc="embedded data set"):
            if isinstance(result, dict):
                frames[result["series_uid"]] = result
    else:
        with _worker_pool(workers) as pool:
            futures = [pool.submit(fn, *args) for fn, args in jobs]
            done = concurrent.futures.as_completed(futures)
            for future in progress(done, total=len(futures), desc="embedded data set"):
                result = future.result()
                if isinstance(result, dict):
                    frames[result["series_uid"]] = result
    render_seconds = time.perf_counter() - start

    # frames of scans kept from an earlier run
    for uid in scan_uids:
        if uid not in frames:
            frames[uid] = _frame_from_mhd(scans_dir / "mhd" / f"{uid}.mhd", uid)

    manifest = [_manifest_row(r, out) for r in rows]
    write_csv(out / "manifest.csv", manifest, MANIFEST_FIELDS)
    datalist = [
        {"image": m["image"], "label": m["label"], "fold": m["fold"], "nodule_id": m["nodule_id"]} for m in manifest
    ]
    write_json(out / "datalist.json", datalist)
    cohort_path = write_rendered_cohort(out, rows)
    annotations, truth = _scan_tables(scan_uids, by_series, frames)
    if scan_uids:
        write_csv(scans_dir / "annotations.csv", annotations, LUNA16_ANNOTATION_FIELDS)
        write_csv(scans_dir / "truth.csv", truth, TRUTH_FIELDS)

    seconds = time.perf_counter() - start
    summary = {
        "out_dir": str(out),
        "n_nodules": len(rows),
        "n_rendered": len(rows) - n_skipped,
        "n_skipped": n_skipped,
        "n_scans": len(scan_uids),
        "scans": [frames[u] for u in scan_uids],
        "seconds": round(seconds, 3),
        "render_seconds": round(render_seconds, 3),
        "workers": workers,
        "manifest": str(out / "manifest.csv"),
        "datalist": str(out / "datalist.json"),
        "cohort": str(cohort_path),
    }
    write_json(summary_path, {"params": scan_params, "complete": True, "summary": summary})
    logger.info("embedded data set written to %s in %.1f s", out, seconds)
    return summary


def _frame_from_mhd(path: Path, series_uid: str) -> dict[str, Any]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return {
        "series_uid": series_uid,
        "shape": list(reader.GetSize()),
        "spacing_mm": list(reader.GetSpacing()),
        "origin_mm": list(reader.GetOrigin()),
    }
