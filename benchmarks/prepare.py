"""Benchmark of cube preparation: region-first vs whole-scan resampling, augmented cubes per second, and the
embedded data set's renderer against an earlier revision of it.

Run ``python benchmarks/prepare.py`` (``--help`` for sizes). Everything is generated in memory or in a temp folder;
both extraction paths run side by side on the same scans in one run, so the printed ratio is machine-independent.
``--embedded-baseline REV`` adds the renderer of the embedded data set (``naslung prepare embedded``): the renderer
modules of git revision ``REV`` and of the working tree render the same cubes in turn (ms per cube, ratio, and
whether every cube is the same bytes), then run the whole ``naslung prepare embedded --scans 2`` in turn,
``--embedded-runs`` times each (wall seconds with process start-up, ratio, and whether every file written is the
same bytes); ``--json FILE`` writes that comparison (``benchmarks/results/prepare_embedded.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from monai.data import DataLoader, Dataset
from monai.utils import set_determinism

from naslung.transforms import cut_cube_hu, resample_scan_hu, sample_cube_hu, train_transforms

__all__ = [
    "make_scan",
    "bench_extraction",
    "bench_augmentation",
    "load_baseline_renderer",
    "bench_embedded_cubes",
    "bench_embedded_prepare",
    "main",
]

#: The modules that draw the embedded data set; a baseline revision's copies are imported under another package name.
RENDERER_MODULES = (
    "embedded",
    "synthetic_ct",
    "synthetic_anatomy",
    "synthetic_nodule",
    "synthetic_spec",
    "reader_contours",
)
_BASELINE_PACKAGE = "naslung_baseline_renderer"
_REPO = Path(__file__).resolve().parents[1]


def make_scan(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing_mm: tuple[float, float, float], nodules: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """A synthetic CT: int16 HU (X, Y, Z), air outside a body ellipse, noisy lung, spherical nodules.

    Returns:
        ``(volume, affine_lps, centres_mm)``; the affine has origin (-180, -180, -350) mm and the given spacing.
    """
    affine = np.diag([*spacing_mm, 1.0])
    affine[:3, 3] = (-180.0, -180.0, -350.0)
    x = (np.arange(shape[0]) - shape[0] / 2) / (shape[0] / 2)
    y = (np.arange(shape[1]) - shape[1] / 2) / (shape[1] / 2)
    body = (x[:, None] ** 2 / 0.9**2 + y[None, :] ** 2 / 0.7**2) < 1.0
    volume = np.full(shape, -1000, dtype=np.int16)
    volume[body] = -850
    volume += rng.integers(-40, 40, size=shape, dtype=np.int16)
    centres = []
    for _ in range(nodules):
        index = np.array([rng.uniform(0.3, 0.7) * shape[0], rng.uniform(0.35, 0.65) * shape[1], 0.0])
        index[2] = rng.uniform(0.1, 0.9) * shape[2]
        centre = affine[:3, :3] @ index + affine[:3, 3]
        radius_mm = rng.uniform(3.0, 12.0)
        half = np.ceil(radius_mm / np.asarray(spacing_mm)).astype(int) + 1
        lo = np.maximum(index.astype(int) - half, 0)
        hi = np.minimum(index.astype(int) + half + 1, shape)
        grid = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij")
        world = [g * s + o for g, s, o in zip(grid, spacing_mm, affine[:3, 3], strict=True)]
        inside = sum((w - c) ** 2 for w, c in zip(world, centre, strict=True)) < radius_mm**2
        region = volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        region[inside] = 30
        centres.append(centre + rng.uniform(-2.0, 2.0, size=3))  # annotations are never exactly on a voxel
    return volume, affine, centres


def bench_extraction(scans: int, nodules: int, shape: tuple[int, int, int], spacing_mm: tuple[float, float, float]):
    """Time both extraction paths side by side on the same synthetic scans and print the comparison."""
    rng = np.random.default_rng(0)
    fast_s, slow_s, once_s, max_diff = [], [], [], 0.0
    for scan in range(scans):
        volume, affine, centres = make_scan(rng, shape, spacing_mm, nodules)
        start = time.perf_counter()
        fast = [sample_cube_hu(volume, affine, c, region_first=True) for c in centres]
        fast_s.append(time.perf_counter() - start)

        start = time.perf_counter()
        slow = [sample_cube_hu(volume, affine, c, region_first=False) for c in centres]
        slow_s.append(time.perf_counter() - start)

        # The cheapest possible whole-scan pipeline: resample once per scan, cut every cube at the nearest node.
        start = time.perf_counter()
        resampled, resampled_affine = resample_scan_hu(volume, affine, 1.0)
        for c in centres:
            cut_cube_hu(resampled, resampled_affine, np.asarray(c) - 15.5)
        once_s.append(time.perf_counter() - start)

        diff = max(float(np.abs(a - b).max()) for a, b in zip(fast, slow, strict=True))
        max_diff = max(max_diff, diff)
        print(
            f"scan {scan}: {shape} at {spacing_mm} mm, {nodules} nodules: region-first {fast_s[-1]:.3f} s, "
            f"whole-scan per nodule {slow_s[-1]:.2f} s, whole-scan once {once_s[-1]:.2f} s, max |diff| {diff:.2e} HU"
        )
    fast_mean, slow_mean, once_mean = np.mean(fast_s), np.mean(slow_s), np.mean(once_s)
    print(f"seconds per scan ({nodules} nodules), mean of {scans} scans:")
    print(f"  region-first                         {fast_mean:8.3f} s")
    print(f"  whole-scan, resampled per nodule     {slow_mean:8.3f} s   ratio {slow_mean / fast_mean:8.1f}x")
    print(f"  whole-scan, resampled once per scan  {once_mean:8.3f} s   ratio {once_mean / fast_mean:8.1f}x")
    ok_speed = once_mean / fast_mean >= 5.0
    ok_diff = max_diff <= 1.0
    print(f"goal >= 5x (vs. resampling once): {'met' if ok_speed else 'NOT met'}")
    print(f"largest voxel difference region-first vs whole-scan: {max_diff:.3e} HU ({'<=' if ok_diff else '>'} 1 HU)")
    return ok_speed and ok_diff


def bench_augmentation(cubes: int, workers: int, batch_size: int, epochs: int) -> None:
    """Augmented cubes per second through ``train_transforms`` and a MONAI DataLoader over generated .npy cubes."""
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as folder:
        data = []
        for i in range(cubes):
            path = Path(folder) / f"cube_{i:04d}.npy"
            np.save(path, rng.random((32, 32, 32), dtype=np.float32))
            data.append({"image": str(path), "label": i % 2})
        set_determinism(seed=0)
        loader = DataLoader(Dataset(data, train_transforms()), batch_size=batch_size, shuffle=True, num_workers=workers)
        for epoch in range(epochs):
            start = time.perf_counter()
            seen = 0
            for batch in loader:
                seen += batch["image"].shape[0]
            elapsed = time.perf_counter() - start
            label = "first epoch (incl. worker start-up)" if epoch == 0 else f"epoch {epoch}"
            print(
                f"augmentation, {label}: {seen} cubes in {elapsed:.2f} s = {seen / elapsed:.0f} cubes/s "
                f"(num_workers={workers}, batch {batch_size})"
            )
        set_determinism(seed=None)


def load_baseline_renderer(revision: str, folder: Path):
    """Import the renderer modules of git ``revision`` from ``folder`` as a package of their own; returns its
    ``embedded`` module. Only :data:`RENDERER_MODULES` come from the revision; everything else is the working tree's.
    """
    package = folder / _BASELINE_PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    names = "|".join(RENDERER_MODULES)
    for name in RENDERER_MODULES:
        source = subprocess.run(
            ["git", "-C", str(_REPO), "show", f"{revision}:pipeline/data/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        source = re.sub(rf"naslung\.pipeline\.data\.({names})\b", rf"{_BASELINE_PACKAGE}.\1", source)
        (package / f"{name}.py").write_text(source)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(f"{_BASELINE_PACKAGE}.embedded")


def bench_embedded_cubes(baseline, n_series: int) -> dict:
    """Render the cubes of ``n_series`` series (spread over the cohort) with the baseline and the current renderer in
    turn, in series order as the prepare step does; print ms per cube and the ratio.

    Returns:
        ``{"n_cubes", "baseline_ms_per_cube", "current_ms_per_cube", "ratio", "n_same_bytes", "same_bytes"}``.
    """
    from naslung.pipeline.data import embedded as current
    from naslung.pipeline.data.cohort_table import load_default_cohort

    by_series = defaultdict(list)
    for row in load_default_cohort():
        by_series[str(row["series_uid"])].append(row)
    series = list(by_series.values())
    rows = [row for members in series[:: max(1, len(series) // n_series)][:n_series] for row in members]
    for renderer in (baseline, current):
        renderer.render_cube(rows[0])  # read the readers' contours once per renderer, outside the timing
    seconds = {"baseline": 0.0, "current": 0.0}
    differ = 0
    for i, row in enumerate(rows):
        order = [("baseline", baseline), ("current", current)]
        cubes = {}
        for name, renderer in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            cubes[name] = renderer.render_cube(row)
            seconds[name] += time.perf_counter() - start
        differ += cubes["baseline"].tobytes() != cubes["current"].tobytes()
    old_ms, new_ms = (1000.0 * seconds[k] / len(rows) for k in ("baseline", "current"))
    print(
        f"embedded cubes, {len(rows)} of {len(series)} series' nodules, alternated: baseline {old_ms:.1f} ms/cube, "
        f"current {new_ms:.1f} ms/cube, ratio {old_ms / new_ms:.2f}x; {len(rows) - differ} of {len(rows)} cubes "
        "the same bytes"
    )
    return {
        "n_cubes": len(rows),
        "baseline_ms_per_cube": old_ms,
        "current_ms_per_cube": new_ms,
        "ratio": old_ms / new_ms,
        "n_same_bytes": len(rows) - differ,
        "same_bytes": differ == 0,
    }


_PREPARE_RUNNER = """
import sys

if __name__ == "__main__":
    renderer, out = sys.argv[1], sys.argv[2]
    if renderer != "current":
        sys.path.insert(0, renderer)
        import {package}.embedded as baseline
        import naslung.pipeline.commands.prepare as command

        command.render_embedded = baseline.render_embedded
    from naslung.pipeline.cli import main

    raise SystemExit(main(["-q", "prepare", "embedded", "--out", out, "--scans", "2"]))
"""


def _file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` but ``embedded.json`` (it records timings)."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "embedded.json"
    }


def bench_embedded_prepare(baseline_folder: Path, runs: int) -> dict:
    """Run the whole ``naslung prepare embedded --scans 2`` (a fresh process each) with the baseline and the current
    renderer in turn, ``runs`` times each; print wall seconds and the ratio.

    Returns:
        ``{"runs", "baseline_seconds", "current_seconds", "ratio", "n_files", "same_bytes"}`` (seconds per run).
    """
    runner = baseline_folder / "run_prepare.py"
    runner.write_text(_PREPARE_RUNNER.format(package=_BASELINE_PACKAGE))
    seconds: dict[str, list[float]] = {"baseline": [], "current": []}
    digests: dict[str, dict[str, str]] = {}
    for run in range(runs):
        for name in ("baseline", "current") if run % 2 == 0 else ("current", "baseline"):
            with tempfile.TemporaryDirectory() as out:
                renderer = str(baseline_folder) if name == "baseline" else "current"
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, str(runner), renderer, out], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"naslung prepare embedded with the {name} renderer failed:\n{proc.stderr}")
                seconds[name].append(time.perf_counter() - start)
                digests[name] = _file_digests(Path(out))
            print(f"  prepare run {run + 1}, {name}: {seconds[name][-1]:.1f} s")
    old_s, new_s = (float(np.mean(seconds[k])) for k in ("baseline", "current"))
    same = digests["baseline"] == digests["current"]
    print(
        f"embedded prepare (--scans 2, 2 workers, process start-up included), mean of {runs} alternated runs: "
        f"baseline {old_s:.1f} s, current {new_s:.1f} s, ratio {old_s / new_s:.2f}x; "
        f"{len(digests['current'])} files, {'all the same bytes' if same else 'SOME DIFFER'}"
    )
    return {
        "runs": runs,
        "baseline_seconds": seconds["baseline"],
        "current_seconds": seconds["current"],
        "ratio": old_s / new_s,
        "n_files": len(digests["current"]),
        "same_bytes": same,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scans", type=int, default=2)
    parser.add_argument("--nodules", type=int, default=4, help="nodules per scan")
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 150))
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.7, 0.7, 2.0))
    parser.add_argument("--cubes", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--embedded-baseline", metavar="REV", help="also compare the embedded renderer with git revision REV's"
    )
    parser.add_argument("--embedded-series", type=int, default=60, help="series whose cubes are rendered side by side")
    parser.add_argument("--embedded-runs", type=int, default=2, help="whole prepares per renderer")
    parser.add_argument("--only-embedded", action="store_true", help="skip the extraction and augmentation benchmarks")
    parser.add_argument("--json", type=Path, default=None, help="also write the embedded comparison to this file")
    args = parser.parse_args(argv)
    ok = True
    if not args.only_embedded:
        ok = bench_extraction(args.scans, args.nodules, tuple(args.shape), tuple(args.spacing))
        bench_augmentation(args.cubes, args.workers, args.batch_size, args.epochs)
    if args.embedded_baseline:
        with tempfile.TemporaryDirectory() as folder:
            baseline = load_baseline_renderer(args.embedded_baseline, Path(folder))
            result = {"baseline": args.embedded_baseline, "cubes": bench_embedded_cubes(baseline, args.embedded_series)}
            if args.embedded_runs > 0:
                result["prepare"] = bench_embedded_prepare(Path(folder), args.embedded_runs)
            ok = ok and all(part["same_bytes"] for part in result.values() if isinstance(part, dict))
            if args.json is not None:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
