"""How the search and the retrain step scale with Ray workers, side by side in one run, at realistic sizes.

Run: ``python benchmarks/ray_scaling.py [--data RUN/data] [--candidates 4] [--jobs 4] [--epochs 1]``
(``RUN/data`` from ``naslung prepare embedded`` or a run's ``data/``: the whole embedded cohort, 1,013 cubes; without
``--data`` the cohort is rendered into the scratch folder first, about a minute).

Two workloads, each under three executors:

- **search**: a POP search of ``--candidates`` candidates, ``--epochs`` epochs each, on the folds outside 0-1
  (about 650 training cubes per candidate), POP batch = workers;
- **retrain**: ``--jobs`` (network, held-out fold) jobs of the training config, ``--epochs`` epochs each (819
  training cubes per job), the quick profile's three member specs over folds 0 and 1 in turn, as ``naslung run``
  sends them to its executor (:func:`naslung.pipeline.training.jobs.run_fold_jobs`);

and the executors ``ray 1x1`` (one single-thread worker), ``ray 2x1`` (two single-thread workers, what
``naslung run`` uses on 2 cores) and ``sequential 2t`` (one job at a time, torch on 2 threads). Each cell reports
work units per hour over the loop alone (Ray's start-up apart, printed beside it). Printed and written to
``benchmarks/results/ray_scaling.json``: the scaling efficiency ``ray 2x1 / ray 1x1`` (what carries over to a cluster:
goal >= 1.8x) and ``ray 2x1 / sequential 2t`` (what a 2-core machine gains), whatever they are. Runs alternate
executors within a workload so that drifting machine speed hits all three alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.data.embedded import render_embedded
from naslung.pipeline.search.executors import make_executor, ray_available
from naslung.pipeline.search.runner import run_search_step
from naslung.pipeline.training.jobs import run_fold_jobs
from naslung.pipeline.training.step import train_fold_job

__all__ = ["EXECUTORS", "search_rate", "retrain_rate", "main"]

#: Where the comparison is written.
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "ray_scaling.json"

#: (name, executor kind, workers, threads per job) of the three settings compared.
EXECUTORS: tuple[tuple[str, str, int, int], ...] = (
    ("ray 1x1", "ray", 1, 1),
    ("ray 2x1", "ray", 2, 1),
    ("sequential 2t", "sequential", 1, 2),
)

#: The quick profile's retrained networks (session 5 and 6 runs), the retrain workload's networks.
RETRAIN_SPECS = ("[4,4,[8],[8,8],[8]]", "[4,4,[4,4],[16],[16]]", "[4,4,[4],[4,4],[4]]")


def search_rate(data: Path, out: Path, kind: str, workers: int, threads: int, candidates: int, epochs: int) -> dict:
    """One POP search under an executor; candidates per hour over the search loop and Ray's start-up seconds."""
    config = {
        "space": {"channels": [4, 8, 16], "min_blocks": 3, "max_blocks": 4},
        "test_folds": [0, 1],
        "epochs_per_candidate": epochs,
        "batch_size": max(2, workers),  # the same candidates in the same order under every executor
        "max_candidates": candidates,
        "patience": None,
        "latency_table": False,
        "latency_repeats": 5,
        "select_top_n": 2,
        "executor": kind,
        "workers": workers,
        "threads_per_trial": threads,
        "train": {"batch_size": 16, "val_fraction": 0.2, "lr_warmup_epochs": 0},
    }
    summary = run_search_step(out, config, data_dir=data)
    seconds = float(summary["search_seconds"])
    return {
        "units": int(summary["evaluated"]),
        "seconds": seconds,
        "startup_seconds": float(summary["executor_start_seconds"]),
        "per_hour": 3600.0 * int(summary["evaluated"]) / seconds,
    }


def retrain_rate(data: Path, out: Path, kind: str, workers: int, threads: int, jobs: int, epochs: int) -> dict:
    """``jobs`` (network, fold) training jobs under an executor; jobs per hour over the loop, start-up apart."""
    datalist = read_manifest(data / "manifest.csv")  # absolute cube paths
    work = [
        {
            "datalist": datalist,
            "test_fold": index % 2,
            "out_dir": str(out / f"job{index}"),
            "overrides": {"arch": RETRAIN_SPECS[index % len(RETRAIN_SPECS)], "max_epochs": epochs},
        }
        for index in range(jobs)
    ]
    start = time.perf_counter()
    executor = make_executor(kind, workers=workers, threads_per_trial=threads)
    with executor:
        started = time.perf_counter()
        run_fold_jobs(executor, work, function=train_fold_job)
        seconds = time.perf_counter() - started
    return {
        "units": jobs,
        "seconds": seconds,
        "startup_seconds": started - start,
        "per_hour": 3600.0 * jobs / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="prepared data folder with manifest.csv (default: render the embedded cohort)")
    parser.add_argument("--candidates", type=int, default=4, help="candidates of each search")
    parser.add_argument("--jobs", type=int, default=4, help="(network, fold) jobs of each retrain")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per candidate and per job")
    parser.add_argument("--out", help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    if args.data and not (Path(args.data) / "manifest.csv").is_file():
        parser.error(f"{Path(args.data) / 'manifest.csv'} not found: prepare it with `naslung prepare embedded`")
    if not ray_available():
        parser.error("Ray is not installed: pip install 'naslung[ray]'")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    results: dict[str, Any] = {"args": vars(args), "cores": os.cpu_count(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="naslung_ray_scaling_") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        data = Path(args.data) if args.data else root / "data"
        if not args.data:
            start = time.perf_counter()
            render_embedded(data, n_scans=0)
            print(f"rendered the embedded cohort into {data} in {time.perf_counter() - start:.0f} s", flush=True)
        for workload, measure, count in (
            ("search", search_rate, args.candidates),
            ("retrain", retrain_rate, args.jobs),
        ):
            cells = {}
            for name, kind, workers, threads in EXECUTORS:
                out = root / workload / name.replace(" ", "_")
                cells[name] = measure(data, out, kind, workers, threads, count, args.epochs)
                cell = cells[name]
                print(
                    f"{workload:<8} {name:<14} {cell['units']:>3} units in {cell['seconds']:7.1f} s "
                    f"({cell['per_hour']:6.1f}/h; start-up {cell['startup_seconds']:.1f} s)",
                    flush=True,
                )
            cells["scaling_2x1_over_1x1"] = cells["ray 2x1"]["per_hour"] / cells["ray 1x1"]["per_hour"]
            cells["ray_2x1_over_sequential_2t"] = cells["ray 2x1"]["per_hour"] / cells["sequential 2t"]["per_hour"]
            print(
                f"{workload}: Ray 2 workers / 1 worker {cells['scaling_2x1_over_1x1']:.2f}x (goal >= 1.8x); "
                f"Ray 2x1 / sequential with 2 threads {cells['ray_2x1_over_sequential_2t']:.2f}x"
            )
            results[workload] = cells
    write_json(RESULTS_FILE, results)
    print(f"written to {RESULTS_FILE}")


if __name__ == "__main__":
    main()
