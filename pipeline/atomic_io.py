"""Atomic file writing (from :mod:`naslung.bundles.runtime.atomic_files`) and crash-safe JSON-lines journals."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from naslung.bundles.runtime.atomic_files import atomic_open, atomic_path, write_csv, write_json
from naslung.pipeline.errors import DataError

__all__ = ["atomic_path", "atomic_open", "write_csv", "write_json", "append_jsonl", "read_jsonl"]


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON record as a single line, flushed and fsynced.

    A line is written with one ``write`` call of a complete line, so a crash leaves at most a torn last
    line, which :func:`read_jsonl` drops.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(dict(record), default=str, sort_keys=False) + "\n"
    _drop_torn_tail(target)
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def _drop_torn_tail(path: Path) -> None:
    """Truncate a JSON-lines file after its last newline, removing a line torn by a crash mid-write."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        handle.truncate(data.rfind(b"\n") + 1)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSON-lines file written by :func:`append_jsonl`, dropping a torn (unterminated) last line."""
    target = Path(path)
    if not target.exists():
        return []
    records: list[dict[str, Any]] = []
    text = target.read_text(encoding="utf-8")
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last newline is either empty or a torn write
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataError(
                f"line {number} is not valid JSON ({err}); remove or repair that line", path=str(target)
            ) from err
    return records
