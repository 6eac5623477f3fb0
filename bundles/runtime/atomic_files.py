"""Atomic file writing: write to a temporary file beside the target, then rename, so nothing is half-written.

The floor under :mod:`naslung.pipeline.atomic_io` (which re-exports these and adds JSON-lines journals); the bundle's
prediction writer uses them too.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_open", "write_csv", "write_json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is renamed onto ``path``.

    The temporary name keeps the target's suffix (``suffix`` overrides it) so writers that pick a format
    from the extension (SimpleITK, nibabel) still work. On error the temporary file is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sfx = suffix if suffix is not None else "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{sfx}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():  # mkstemp makes 0600 files: give the result the usual umask-derived mode
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` atomically when the block ends without error."""
    if not any(m in mode for m in "wx"):
        raise ValueError(f"atomic_open writes only, got mode {mode!r}")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")  # never the locale's: CI may run with LANG=C
    with atomic_path(path) as tmp, open(tmp, mode.replace("x", "w"), **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str]) -> Path:
    """Write dict rows to a CSV file atomically; returns the path."""
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fieldnames), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically; returns the path."""
    with atomic_open(path, "w") as handle:
        json.dump(obj, handle, indent=indent, sort_keys=False, default=str)
        handle.write("\n")
    return Path(path)
