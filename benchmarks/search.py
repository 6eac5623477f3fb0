"""Candidates per hour of a short real POP search: sequential in one process against Ray workers, side by side;
then POP against DNAS (Gumbel-Softmax supernet) on the same data and budget.

Run ``python benchmarks/search.py [--data RUN/data] [--candidates 6] [--epochs 1] [--cubes 40]``.

Both searches run the same config (space, seed, POP batch of ``--workers`` candidates, epochs) on the same data: the
embedded data set when ``--data`` names a prepared folder (its folds outside ``--test-folds``), otherwise generated
32³ cubes. The sequential search trains in this process with torch using ``--workers`` threads (all the cores the
Ray run gets); the Ray search runs ``--workers`` single-thread trials at once. It prints each run's candidates per
hour (search loop only, and with the executor's start-up) and the Ray/sequential ratio; the goal is >= 1.3x.

The strategy comparison reuses the sequential POP run and runs DNAS on the same data, space and candidate training
(``--epochs`` per candidate) with the same number of training epochs in all: ``--candidates x --epochs`` for POP;
``--dnas-candidates x --epochs`` for the derived architectures plus the rest as supernet epochs. It prints each
strategy's wall time, the best validation F1 found, and the chosen network with its latency (ms per nodule).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from naslung.pipeline.atomic_io import write_csv
from naslung.pipeline.search.executors import ray_available
from naslung.pipeline.search.runner import run_search_step

__all__ = ["make_cubes", "run_once", "main"]


def make_cubes(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` generated 32³ cubes in folds 6-10 (one patient each): malignant ones hold a larger bright sphere."""
    (root / "cubes").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    radius = np.sqrt(((np.mgrid[:32, :32, :32] - 15.5) ** 2).sum(0))
    rows = []
    for k in range(n):
        label = k % 2
        cube = rng.normal(0.2, 0.05, (32, 32, 32)).astype(np.float32)
        sphere_radius = rng.uniform(6, 9) if label else rng.uniform(3, 6)
        cube[radius < sphere_radius] += 0.5
        np.save(root / "cubes" / f"g{k}.npy", cube)
        rows.append(
            {
                "nodule_id": f"g{k}",
                "patient_id": f"gp{k}",
                "series_uid": "generated",
                "image": f"cubes/g{k}.npy",
                "label": label,
                "fold": 6 + (k // 2) % 5,
            }
        )
    write_csv(root / "manifest.csv", rows, list(rows[0]))
    return root


def run_once(name: str, data: Path, out: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Run one search into ``out`` and return its summary with the total wall time."""
    start = time.perf_counter()
    summary = run_search_step(out, config, data_dir=data)
    summary["wall_seconds"] = time.perf_counter() - start
    trained = "candidates.jsonl" if summary.get("strategy") == "dnas" else "journal.jsonl"
    journal = [json.loads(line) for line in (out / trained).read_text(encoding="utf-8").splitlines()]
    summary["specs"] = [r["spec"] for r in journal]
    summary["best_f1"] = max((float(r["f1"]) for r in journal), default=float("nan"))
    chosen = [r for r in journal if summary["selected"] and r["spec"] == summary["selected"][0]]
    summary["chosen"] = chosen[0] if chosen else {}
    summary["name"] = name
    return summary


def print_strategies(runs: list[dict[str, Any]]) -> None:
    """POP and DNAS side by side: wall time, best validation F1 found, the chosen network and its latency."""
    print(f"{'strategy':<40} {'wall s':>7} {'trained':>7} {'best F1':>8} {'chosen latency ms':>18}  chosen spec")
    for run in runs:
        chosen = run["chosen"]
        print(
            f"{run['name']:<40} {run['wall_seconds']:>7.1f} {run['trained']:>7} {run['best_f1']:>8.4f} "
            f"{float(chosen.get('latency_ms', float('nan'))):>18.3f}  {chosen.get('spec', '-')}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="prepared data folder (manifest.csv); default: generated cubes")
    parser.add_argument("--test-folds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--cubes", type=int, default=40, help="generated cubes when --data is not prepared")
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dnas-candidates", type=int, default=2, help="derived architectures DNAS trains")
    parser.add_argument("--dnas-latency-weight", type=float, default=0.1)
    parser.add_argument("--out", help="folder for both searches (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="naslung_bench_search_") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        data = Path(args.data) if args.data else None
        if data is None or not (data / "manifest.csv").is_file():
            if data is not None:
                print(f"{data / 'manifest.csv'} not found: using generated cubes")
            data = make_cubes(root / "data", args.cubes)
            source = f"{args.cubes} generated 32^3 cubes (folds 6-10)"
        else:
            source = f"prepared data {data} (folds outside {args.test_folds})"
        base = {
            "space": {"channels": [4, 8], "min_blocks": 3, "max_blocks": 4},
            "test_folds": args.test_folds,
            "epochs_per_candidate": args.epochs,
            "batch_size": args.workers,
            "max_candidates": args.candidates,
            "patience": None,
            "latency_warmup": 2,
            "latency_repeats": 5,
            "latency_table": False,  # every run times its own candidates, as a first search on a machine does
            "select_top_n": 2,
            "train": {"val_fraction": 0.2, "batch_size": 8},
        }
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
        )
        print(f"data: {source}; {args.candidates} candidates of {args.epochs} epoch(s), POP batch {args.workers}")
        runs = [
            run_once(
                f"sequential ({args.workers} torch threads)",
                data,
                root / "sequential",
                {**base, "executor": "sequential", "threads_per_trial": args.workers},
            )
        ]
        if ray_available():
            runs.append(
                run_once(
                    f"ray ({args.workers} workers x 1 thread)",
                    data,
                    root / "ray",
                    {**base, "executor": "ray", "workers": args.workers, "threads_per_trial": 1},
                )
            )
        else:
            print("Ray is not installed: only the sequential search ran (pip install 'naslung[ray]')")
        print(f"{'run':<32} {'trained':>7} {'start s':>8} {'search s':>9} {'cand/h':>8} {'cand/h incl. start':>19}")
        for run in runs:
            total = run["executor_start_seconds"] + run["search_seconds"]
            print(
                f"{run['name']:<32} {run['evaluated']:>7} {run['executor_start_seconds']:>8.1f} "
                f"{run['search_seconds']:>9.1f} {run['candidates_per_hour']:>8.0f} "
                f"{3600 * run['evaluated'] / total:>19.0f}"
            )
        for run in runs:
            print(f"  {run['name']}: {', '.join(run['specs'])}")
        if len(runs) == 2:
            seq, ray_run = runs
            ratio = ray_run["candidates_per_hour"] / seq["candidates_per_hour"]
            seq_total = seq["executor_start_seconds"] + seq["search_seconds"]
            ray_total = ray_run["executor_start_seconds"] + ray_run["search_seconds"]
            ratio_total = (ray_run["evaluated"] / ray_total) / (seq["evaluated"] / seq_total)
            print(f"Ray / sequential candidates per hour: {ratio:.2f}x search loop, {ratio_total:.2f}x incl. start-up")
            print(f"goal >= 1.3x: {'met' if ratio >= 1.3 else 'NOT met'} (search loop)")

        supernet_epochs = max(1, (args.candidates - args.dnas_candidates) * args.epochs)
        dnas = {
            "epochs": supernet_epochs,
            "warmup_epochs": supernet_epochs // 4,
            "anneal_epochs": supernet_epochs,
            "batch_size": 8,
            "candidates": args.dnas_candidates,
            "latency_weight": args.dnas_latency_weight,
            "latency_warmup": 1,
            "latency_repeats": 3,
            "device": "cpu",
        }
        print(
            f"\nstrategies on the same data and budget ({args.candidates * args.epochs} training epochs): POP trains "
            f"{args.candidates} candidates; DNAS {supernet_epochs} supernet epochs + {args.dnas_candidates} derived "
            f"candidates (latency weight {args.dnas_latency_weight})"
        )
        torch.set_num_threads(args.workers)
        dnas_run = run_once(
            f"DNAS (Gumbel-Softmax, {args.workers} torch threads)",
            data,
            root / "dnas",
            {**base, "strategy": "dnas", "dnas": dnas},
        )
        print_strategies([{**runs[0], "name": f"POP (sequential, {args.workers} threads)"}, dnas_run])


if __name__ == "__main__":
    main()
