"""Run every benchmark in this folder, one after another, and print each one's headline lines.

Usage: ``python benchmarks/run_all.py [--only NAME ...]``. Each benchmark measures its own comparison side by
side in one run; this script collects the lines that state a ratio or a goal, plus the machine they ran on.
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

BENCHMARKS = ("prepare", "latency", "train_step", "search", "anchors")
HEADLINE = re.compile(r"anchor|goal|ratio|speed-up|x over|fastest|per second|samples/s|cand/h|wait", re.IGNORECASE)


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
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(here / f"{name}.py")], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        print(f"\n== {name} ({seconds:.0f} s, exit {proc.returncode})")
        lines = [line for line in proc.stdout.splitlines() if HEADLINE.search(line)]
        print("\n".join(lines) if lines else proc.stdout[-2000:])
        if proc.returncode != 0:
            failed.append(name)
            print(proc.stderr[-2000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
