"""How many lines a bundle's ``scripts/`` ships, and of what kind: issue 14's 2,000-line target, measured.

Run: ``python benchmarks/bundle_lines.py [--kinds naslung] [--out FILE]``. For every module a bundle of members of
those network kinds ships (:func:`naslung.pipeline.export.scripts.bundle_modules`; the generated package
``__init__`` files, a few dozen lines, are left out): its lines, split into docstring, comment, blank and code lines
(code: the rest), and whether inference imports it (:data:`~naslung.pipeline.export.scripts.INFERENCE_MODULES`) or
only fine-tuning (``train.json``). Totals for both parts. Written to ``--out`` (default
``benchmarks/results/bundle_lines.json``) and printed.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
from collections.abc import Sequence
from pathlib import Path

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.export.scripts import INFERENCE_MODULES, bundle_modules

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "bundle_lines.json"
KINDS = ("lines", "docstring", "comment", "blank", "code")


def line_kinds(source: str) -> dict[str, int]:
    """Lines of ``source`` by kind: every string statement's lines (docstrings, attribute docs) count as docstring,
    lines whose first non-blank character is ``#`` outside them as comment, empty ones as blank, the rest as code."""
    lines = source.splitlines()
    doc: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            doc.update(range(node.lineno, node.end_lineno + 1))
    blank = sum(1 for n, text in enumerate(lines, 1) if not text.strip() and n not in doc)
    comment = sum(1 for n, text in enumerate(lines, 1) if text.strip().startswith("#") and n not in doc)
    counts = {"lines": len(lines), "docstring": len(doc), "comment": comment, "blank": blank}
    counts["code"] = counts["lines"] - counts["docstring"] - comment - blank
    return counts


def measure(kinds: Sequence[str]) -> dict:
    """Per module and per part (inference, fine-tuning), the line kinds of what a bundle of ``kinds`` ships."""
    modules = {}
    totals = {part: dict.fromkeys(KINDS, 0) for part in ("inference", "fine_tuning", "all")}
    for name in bundle_modules(list(kinds)):
        counts = line_kinds(inspect.getsource(importlib.import_module(name)))
        part = "inference" if name in INFERENCE_MODULES else "fine_tuning"
        modules[name] = {"part": part, **counts}
        for key in KINDS:
            totals[part][key] += counts[key]
            totals["all"][key] += counts[key]
    return {"network_kinds": list(kinds), "modules": modules, "totals": totals}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", default=["naslung"], help="network kinds of the bundle's members")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    result = measure(args.kinds)
    write_json(args.out, result)
    for part, counts in result["totals"].items():
        print(f"{part}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
