"""Run every benchmark in this folder, one after another, and print each one's headline lines.

Usage: ``python benchmarks/run_all.py [--only NAME ...]``. Each benchmark measures its own comparison side by
side in one run; this script collects the lines that state a ratio or a goal (:data:`HEADLINE`, plus the
benchmark's own lines in :data:`HEADLINES`), plus the machine they ran on. ``search_determinism`` (three quick-profile
searches) and ``signal_probe`` (renders the whole embedded cohort) take the longest; ``--only`` skips them.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

#: The benchmarks of this folder (``<name>.py``), in the order they run.
BENCHMARKS = (
    "prepare",
    "latency",
    "train_step",
    "step_breakdown",
    "search",
    "ray_scaling",
    "anchors",
    "search_determinism",
    "signal_probe",
    "gpu_train_step",
    "bundle_lines",
)
#: Benchmarks that need a CUDA GPU; skipped, with a line saying so, where torch sees none.
NEEDS_CUDA = ("gpu_train_step",)
#: Lines of any benchmark that state a ratio or a goal.
HEADLINE = re.compile(r"\banchor\b|goal|ratio|speed-up|x over|fastest|per second|samples/s|cand/h|wait", re.IGNORECASE)
#: A benchmark's own headline lines, where its result is not a ratio.
HEADLINES = {
    # one seed twice with one latency table: same selection?; without it: how far latencies moved; score ties
    "search_determinism": re.compile(r"identical journal|without the table|distinct scores"),
    # the probe's title per renderer version, then 10-fold accuracy/AUC of the cube features beside the anchors
    # each variant's milliseconds per training step and its share of the whole step
    "step_breakdown": re.compile(r"of the whole step"),
    # a bundle's scripts/ lines by part: inference, fine-tuning and both, each split by kind
    "bundle_lines": re.compile(r"^(inference|fine_tuning|all): lines"),
    "signal_probe": re.compile(
        r"^== |^model |^(cube_features|cube_size_only|diameter_rule|ratings_ceiling|rendered_ratings)"
    ),
}


def headline_lines(name: str, stdout: str) -> list[str]:
    """The lines of benchmark ``name``'s output that :data:`HEADLINE` or its entry in :data:`HEADLINES` match."""
    own = HEADLINES.get(name)
    return [line for line in stdout.splitlines() if HEADLINE.search(line) or (own is not None and own.search(line))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    import torch

    python = platform.python_version()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {python}, torch {torch.__version__}")
    failed = []
    for name in args.only or BENCHMARKS:
        if name in NEEDS_CUDA and not torch.cuda.is_available():
            print(f"\n== {name}: skipped, no CUDA device (benchmarks/gpu/run.sh runs it on a lent GPU machine)")
            continue
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(here / f"{name}.py")], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        print(f"\n== {name} ({seconds:.0f} s, exit {proc.returncode})")
        lines = headline_lines(name, proc.stdout)
        print("\n".join(lines) if lines else proc.stdout[-2000:])
        if proc.returncode != 0:
            failed.append(name)
            print(proc.stderr[-2000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
