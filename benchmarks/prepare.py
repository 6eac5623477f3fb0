"""Benchmark of cube preparation: region-first vs whole-scan resampling, and augmented cubes per second.

Run ``python benchmarks/prepare.py`` (``--help`` for sizes). Everything is generated in memory or in a temp folder;
both extraction paths run side by side on the same scans in one run, so the printed ratio is machine-independent.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from monai.data import DataLoader, Dataset
from monai.utils import set_determinism

from naslung.transforms import cut_cube_hu, resample_scan_hu, sample_cube_hu, train_transforms

__all__ = ["make_scan", "bench_extraction", "bench_augmentation", "main"]


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
    args = parser.parse_args(argv)
    ok = bench_extraction(args.scans, args.nodules, tuple(args.shape), tuple(args.spacing))
    bench_augmentation(args.cubes, args.workers, args.batch_size, args.epochs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
