"""Training throughput on CPU and the share of each step spent waiting for data, side by side; and a learning check.

Run: ``python benchmarks/train_step.py [--cubes 96] [--batch-size 16] [--epochs 3] [--workers 0 1 2] [--threads 2]``.

For Table 5's Model-1 ``[4,4,[4,4],[4,8],[8,8]]`` and a spec of about 2 M parameters, a MONAI ``SupervisedTrainer``
(A-Softmax head and loss, Adam) runs over generated 32³ ``.npy`` cubes through the training transforms
(:func:`naslung.transforms.train_transforms`: load, pad to 36³, random crop, flips) with a MONAI ``DataLoader``, for
``Dataset`` and ``CacheDataset`` (which caches the loading and padding) and each number of workers (the packaged
training config's choice is marked ``*``); and, for comparison, ``CacheDataset`` with the chain run with MetaTensor
tracking on (``meta``, the chain before it ran untracked: MONAI's per-transform metadata bookkeeping costs ~5x the
crop and flips themselves) and with a ``ThreadDataLoader`` (the next batch made in a background thread). Ignite's
:class:`~ignite.handlers.Timer` handlers measure, per epoch, the time between ``GET_BATCH_STARTED`` and
``GET_BATCH_COMPLETED`` (waiting for the loader, including starting its workers) against the whole step
(``GET_BATCH_STARTED`` to ``ITERATION_COMPLETED``). The first epoch is a warm-up and is not reported. Printed:
training samples per second (over the epochs' wall time) and the data-wait share of step time (goal: under 5%).

First, the training-path table (``--path-specs``, default Model-1; ``--rounds`` alternated runs of each): the path
before this table existed (one job with all torch threads, float32, PyTorch's kernels), the same with bfloat16
autocast, and with the narrow-channel kernels (:mod:`naslung.networks.blocks.narrow_channels`), and two single-thread
jobs at once without and with those kernels, as ``naslung run``'s ``train.parallel`` trains (network, fold) jobs;
each path's median samples/s and its ratio to the first (goal for Model-1: >= 2x) are printed and written to
``benchmarks/results/train_step.json``.

``--learning-check`` then trains Model-1 with A-Softmax (the packaged training config) with one fold held out and
prints its test accuracy and AUC beside a chance classifier's (always the majority class of the training folds;
AUC 0.5) with a one-sided binomial p-value. ``--data DIR`` uses a prepared data set (``DIR/manifest.csv``, e.g. from
``naslung prepare embedded``); otherwise generated cubes with overlapping nodule sizes are used.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events
from ignite.handlers import Timer
from monai.data import CacheDataset, DataLoader, Dataset, ThreadDataLoader
from monai.engines import SupervisedTrainer
from monai.inferers import SimpleInferer
from monai.utils import set_determinism

from naslung.networks import build_loss, build_network, count_parameters
from naslung.networks.blocks.narrow_channels import narrow_channel_kernels, use_narrow_channel_kernels
from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.cpu_allocator import retain_freed_memory
from naslung.pipeline.training.inferers import AutocastInferer, cpu_bf16_supported
from naslung.transforms import train_transforms

__all__ = ["main", "make_cubes", "run_timed", "bench_loader", "bench_paths", "packaged_loader"]

#: Where the side-by-side comparison of the training step's precision is written.
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "train_step.json"

PAPER_MODEL_1 = "[4,4,[4,4],[4,8],[8,8]]"
SPEC_2M = "[4,4,[16,32],[64,64],[128,128]]"  # 2,010,569 parameters with the angular head


def make_cubes(folder: Path, count: int, seed: int = 0, folds: int = 5) -> list[dict]:
    """Write ``count`` 32³ float32 cubes: a noisy lung-like background with one nodule each, and a datalist.

    Malignant nodules (label 1) have radii drawn from 4.5-9 voxels and a lobulated edge; benign ones 3-7 voxels and
    a smooth edge, so sizes overlap and the classes are not separable by size alone.
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(32) - 15.5] * 3, indexing="ij"))
    distance = np.sqrt((grid**2).sum(0))
    theta, phi = np.arccos(np.clip(grid[2] / np.maximum(distance, 1e-6), -1, 1)), np.arctan2(grid[1], grid[0])
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for n in range(count):
        label = n % 2
        background = gaussian_filter(rng.normal(0.0, 1.0, (32, 32, 32)), 1.5)
        cube = 0.15 + 0.08 * background / background.std()
        radius = rng.uniform(4.5, 9.0) if label else rng.uniform(3.0, 7.0)
        if label:  # lobulated: the radius varies with direction
            k1, k2 = rng.integers(2, 5, size=2)
            edge = radius * (1 + 0.18 * np.sin(k1 * phi + rng.uniform(0, 6)) * np.sin(k2 * theta))
        else:
            edge = np.full_like(distance, radius)
        nodule = 1 / (1 + np.exp((distance - edge) / 0.7))
        cube = cube + rng.uniform(0.35, 0.55) * nodule
        path = folder / f"n{n:04d}.npy"
        np.save(path, np.clip(cube, 0, 1).astype(np.float32))
        items.append({"image": str(path), "label": label, "nodule_id": f"n{n:04d}", "patient_id": f"p{n // 2}"})
        items[-1]["fold"] = (n // 2) % folds + 1
    return items


def run_timed(trainer: SupervisedTrainer, batch_size: int, cuda: bool = False) -> dict[str, float]:
    """Run ``trainer``, timing each epoch with Ignite timers: the wait for batches, whole steps (waiting included) and
    the epoch's wall time; the first epoch is a warm-up and is left out unless it is the only one.

    Args:
        trainer: a MONAI ``SupervisedTrainer``, not yet run.
        batch_size: its loader's batch size.
        cuda: synchronise the GPU before reading each epoch's timers.

    Returns:
        ``samples_per_s`` (over the epochs' wall time), ``data_fraction`` (waiting share of step time) and ``step_ms``.
    """
    data_timer, step_timer, epoch_timer = Timer(), Timer(), Timer()
    data_timer.attach(
        trainer, start=Events.EPOCH_STARTED, resume=Events.GET_BATCH_STARTED, pause=Events.GET_BATCH_COMPLETED
    )
    step_timer.attach(
        trainer, start=Events.EPOCH_STARTED, resume=Events.GET_BATCH_STARTED, pause=Events.ITERATION_COMPLETED
    )
    epoch_timer.attach(trainer, start=Events.EPOCH_STARTED, pause=Events.EPOCH_COMPLETED)
    epochs_seen: list[tuple[float, float, float, int]] = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def _record(engine) -> None:
        if cuda:
            torch.cuda.synchronize()
        epochs_seen.append(
            (data_timer.value(), step_timer.value(), epoch_timer.value(), engine.state.epoch_length * batch_size)
        )

    trainer.run()
    timed = epochs_seen[1:] or epochs_seen
    data_s, step_s, wall_s = (sum(e[i] for e in timed) for i in range(3))
    samples = sum(e[3] for e in timed)
    return {
        "samples_per_s": samples / wall_s,
        "data_fraction": data_s / step_s,
        "step_ms": 1e3 * step_s / (samples / batch_size),
    }


def bench_loader(
    spec: str,
    items: list[dict],
    cache: bool,
    workers: int,
    batch_size: int,
    epochs: int,
    thread: bool = False,
    track_meta: bool = False,
    bf16: bool = False,
    narrow: bool = True,
) -> dict[str, float]:
    """Train ``spec`` for ``epochs`` epochs; return samples/s and the data-wait share of the epochs after the first.

    ``thread``: load with MONAI's ``ThreadDataLoader`` (one batch prefetched in a background thread);
    ``track_meta``: run the transforms on MetaTensors (``train_transforms(track_meta=True)``);
    ``bf16``: the forward pass under bfloat16 autocast (:class:`~naslung.pipeline.training.inferers.AutocastInferer`);
    ``narrow``: with :mod:`naslung.networks.blocks.narrow_channels`' kernels (batch norm and CBAM on 2-4-channel
    channels-last maps), as the packaged training config trains; ``False``: PyTorch's kernels throughout.
    Weights are channels-last (``channels_last_3d``) as in the packaged training config.
    """
    with narrow_channel_kernels(narrow):
        return _bench_loader(spec, items, cache, workers, batch_size, epochs, thread, track_meta, bf16, narrow)


def _bench_loader(
    spec: str,
    items: list[dict],
    cache: bool,
    workers: int,
    batch_size: int,
    epochs: int,
    thread: bool,
    track_meta: bool,
    bf16: bool,
    narrow: bool,
) -> dict[str, float]:
    """Body of :func:`bench_loader`, run with the narrow-channel kernels switched as asked."""
    if narrow:  # as naslung's CLI and Ray trials do; the process keeps it (paths run in fresh processes or after)
        retain_freed_memory()
    set_determinism(seed=0)
    network = build_network(spec, head="angular").to(memory_format=torch.channels_last_3d)
    if narrow:
        use_narrow_channel_kernels(network)
    transform = train_transforms(track_meta=track_meta)
    start = time.perf_counter()
    dataset = (
        CacheDataset(items, transform, cache_rate=1.0, num_workers=0, progress=False)
        if cache
        else Dataset(items, transform)
    )
    cache_s = time.perf_counter() - start
    loader_type = ThreadDataLoader if thread else DataLoader
    loader = loader_type(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), 2e-4, betas=(0.5, 0.999)),
        loss_function=build_loss("asoftmax"),
        inferer=AutocastInferer("cpu", "bfloat16", enabled=True) if bf16 else SimpleInferer(),
    )
    return {**run_timed(trainer, batch_size), "cache_s": cache_s}


def _path_run(args: tuple) -> dict[str, float]:
    """Body of one training job of a path: set torch's threads, then :func:`bench_loader` (a picklable top-level)."""
    spec, items, batch_size, epochs, bf16, narrow, threads = args
    torch.set_num_threads(threads)
    return bench_loader(spec, items, True, 0, batch_size, epochs, bf16=bf16, narrow=narrow)


#: The training paths compared side by side: (name, parallel single-thread jobs or 0 for one job, bf16 autocast,
#: narrow-channel kernels). The first is the path before this table existed; the last is what ``naslung run``'s
#: quick and standard profiles train with (float32: bf16 cost validation AUC, see ``pipeline/configs/train.json``).
TRAINING_PATHS = (
    ("1 job, all threads, float32 (before)", 0, False, False),
    ("1 job, all threads, bf16 autocast", 0, True, False),
    ("1 job, all threads, float32, narrow kernels", 0, False, True),
    ("2 jobs x 1 thread, float32", 2, False, False),
    ("2 jobs x 1 thread, float32, narrow kernels", 2, False, True),
)


def bench_paths(spec: str, items: list[dict], batch_size: int, epochs: int, rounds: int) -> dict[str, object]:
    """Training samples/s of Model-1's paths of :data:`TRAINING_PATHS`, alternated ``rounds`` times each.

    All use the packaged config's data path (``CacheDataset`` + ``DataLoader``, no workers), channels-last weights
    and the same batch size. "2 jobs" runs two trainings at once in two processes with one torch thread each, as
    ``naslung run``'s ``train.parallel`` does with (network, fold) jobs; its samples/s is the sum of both jobs'
    (aggregate throughput, what buys epochs), each job's own rate is half of it. Alternating the paths keeps a busy
    machine's slow spells from favouring one. Returns every run, the medians and each median's ratio to the first
    path's.
    """
    import multiprocessing

    runs: dict[str, list[float]] = {name: [] for name, *_ in TRAINING_PATHS}
    context = multiprocessing.get_context("spawn")
    for _ in range(rounds):
        for name, jobs, bf16, narrow in TRAINING_PATHS:
            # every path in fresh processes, so no path inherits another's allocator settings or warm caches
            threads = 1 if jobs else torch.get_num_threads()
            with context.Pool(max(jobs, 1)) as pool:
                rows = pool.map(_path_run, [(spec, items, batch_size, epochs, bf16, narrow, threads)] * max(jobs, 1))
            runs[name].append(sum(row["samples_per_s"] for row in rows))
    medians = {name: float(np.median(values)) for name, values in runs.items()}
    before = medians[TRAINING_PATHS[0][0]]
    return {
        "spec": spec,
        "batch_size": batch_size,
        "runs_samples_per_s": runs,
        "median_samples_per_s": medians,
        "ratio_to_before": {name: value / before for name, value in medians.items()},
    }


def packaged_loader() -> tuple[str, str, int]:
    """(dataset class, loader class, workers) of the packaged training config's training data path."""
    from naslung.pipeline.training.step import load_train_config

    config = load_train_config()
    return config["train"]["dataset"]["_target_"], config["train"]["dataloader"]["_target_"], int(config["num_workers"])


def learning_check(args: argparse.Namespace, scratch: Path) -> None:
    """Train Model-1 with A-Softmax with one fold held out; print its test metrics beside a chance classifier's."""
    from scipy.stats import binomtest

    from naslung.pipeline.training.step import train_fold

    if args.data:
        from naslung.pipeline.data.datalists import read_manifest

        datalist = read_manifest(Path(args.data) / "manifest.csv")
        source = f"{args.data}/manifest.csv"
    else:
        datalist = make_cubes(scratch / "check", args.check_cubes, seed=1)
        source = f"{len(datalist)} generated cubes (overlapping sizes; lobulated malignant, smooth benign)"
    fold = args.check_fold
    overrides = {
        "arch": PAPER_MODEL_1,
        "loss_name": "asoftmax",
        "max_epochs": args.check_epochs,
        "batch_size": args.batch_size,
        "device": "$torch.device('cpu')",
    }
    if args.check_lr is not None:
        overrides["lr"] = args.check_lr
    start = time.perf_counter()
    result = train_fold(datalist, fold, scratch / "check_run", overrides=overrides)
    seconds = time.perf_counter() - start
    test, n = result["test"], result["n_test"]
    train_labels = [int(d["label"]) for d in datalist if int(d["fold"]) != fold]
    majority = int(np.mean(train_labels) >= 0.5)
    test_labels = np.array([int(d["label"]) for d in datalist if int(d["fold"]) == fold])
    chance_accuracy = float((test_labels == majority).mean())
    correct = test["tp"] + test["tn"]
    p_value = binomtest(int(correct), int(n), chance_accuracy, alternative="greater").pvalue
    lr = overrides.get("lr", "the config's")
    print(f"\nlearning check: {PAPER_MODEL_1}, A-Softmax, {args.check_epochs} epochs, lr {lr}, on {source}")
    print(
        f"  held-out fold {fold}: {n} nodules ({int(test_labels.sum())} malignant); train {result['n_train']}, "
        f"val {result['n_val']}; best epoch {result['best_epoch']}; {seconds:.0f} s"
    )
    print(f"  network: accuracy {test['accuracy']:.3f}, AUC {test['auc']:.3f}, F1 {test['f1']:.3f}")
    print(
        f"  chance (always class {majority}, the training folds' majority): accuracy {chance_accuracy:.3f}, AUC 0.500"
    )
    print(
        f"  accuracy margin {test['accuracy'] - chance_accuracy:+.3f}, AUC margin {test['auc'] - 0.5:+.3f}; "
        f"one-sided binomial p = {p_value:.2g} ({'clear' if p_value < 0.01 else 'no clear'} margin at p < 0.01)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cubes", type=int, default=96, help="generated cubes for the throughput runs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is a warm-up")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    parser.add_argument("--specs", nargs="+", default=[PAPER_MODEL_1, SPEC_2M], help="specs of the loader table")
    parser.add_argument("--path-specs", nargs="+", default=[PAPER_MODEL_1], help="specs of the training-path table")
    parser.add_argument("--learning-check", action="store_true", help="also train Model-1 and compare with chance")
    parser.add_argument("--data", help="prepared data folder (manifest.csv) for the learning check")
    parser.add_argument("--check-fold", type=int, default=1)
    parser.add_argument("--check-epochs", type=int, default=10)
    parser.add_argument("--check-cubes", type=int, default=200)
    parser.add_argument("--check-lr", type=float, help="learning rate of the check (default: the training config's)")
    parser.add_argument("--no-throughput", action="store_true", help="skip the loader table")
    parser.add_argument("--rounds", type=int, default=3, help="alternated runs of each training path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{torch.get_num_threads()} torch threads; batch {args.batch_size}, {args.cubes} cubes of 32³, "
        f"{args.epochs} epochs (first not timed)"
    )
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        items = make_cubes(scratch / "cubes", args.cubes)
        print(
            f"\ntraining paths of the same batch size (CPU bf16 native: {cpu_bf16_supported()}), {args.rounds} "
            "alternated runs each, median samples/s (2 jobs: both jobs' samples/s added up):"
        )
        paths = []
        for spec in args.path_specs:
            row = bench_paths(spec, items, args.batch_size, args.epochs, args.rounds)
            paths.append(row)
            for name, value in row["median_samples_per_s"].items():
                ratio = row["ratio_to_before"][name]
                print(f"  {spec:<34} {name:<38} {value:>7.1f} samples/s  ratio {ratio:.2f}x")
        write_json(
            RESULTS_FILE,
            {
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "epochs_per_run": args.epochs,
                "cubes": args.cubes,
                "paths": paths,
            },
        )
        print(f"  written to {RESULTS_FILE}")
        header = f"{'spec':<34} {'params':>10} {'dataset':<13} {'loader':<18} {'workers':>7} {'samples/s':>10}"
        if not args.no_throughput:
            print(header + f" {'ms/step':>9} {'data wait':>10} {'cache s':>8}")
        default = packaged_loader()
        for spec in [] if args.no_throughput else args.specs:
            params = count_parameters(build_network(spec, head="angular"))
            best = None
            runs = [(cache, False, workers, False) for cache in (False, True) for workers in args.workers]
            runs += [(True, False, 0, True), (True, True, 0, False)]
            for cache, thread, workers, track_meta in runs:
                row = bench_loader(spec, items, cache, workers, args.batch_size, args.epochs, thread, track_meta)
                name = "CacheDataset" if cache else "Dataset"
                loader = ("ThreadDataLoader" if thread else "DataLoader") + (" meta" if track_meta else "")
                mark = "*" if (name, loader, workers) == default else " "
                flag = "" if row["data_fraction"] < 0.05 else "  (over 5%)"
                print(
                    f"{spec:<34} {params:>10,} {name:<13} {loader:<17}{mark} {workers:>7} "
                    f"{row['samples_per_s']:>10.1f} {row['step_ms']:>9.1f} {100 * row['data_fraction']:>9.1f}% "
                    f"{row['cache_s'] if cache else math.nan:>8.2f}{flag}"
                )
                if best is None or row["samples_per_s"] > best[0]:
                    best = (row["samples_per_s"], f"{name} + {loader}", workers)
            print(f"  fastest for {spec}: {best[1]} with {best[2]} workers, {best[0]:.1f} samples/s")
        if not args.no_throughput:
            print(f"  * the packaged training config's loader: {default[0]} + {default[1]}, {default[2]} workers")
        if args.learning_check:
            learning_check(args, scratch)


if __name__ == "__main__":
    main()
