"""Pipeline steps over a run directory: fingerprints of inputs, and ``done`` markers that make re-runs skip work."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.run.layout import DONE_FILE

__all__ = ["fingerprint", "is_done", "mark_done", "DONE_FILE"]

logger = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """A stable hex digest of JSON-serialisable inputs (configs, datalist ids, file stamps)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_done(step_dir: str | os.PathLike, digest: str) -> bool:
    """Whether ``step_dir`` holds a ``done.json`` for exactly this input fingerprint and all its outputs."""
    marker = Path(step_dir) / DONE_FILE
    if not marker.is_file():
        return False
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    outputs_exist = all((Path(step_dir) / name).exists() for name in record.get("outputs", []))
    return record.get("fingerprint") == digest and outputs_exist


def mark_done(step_dir: str | os.PathLike, digest: str, outputs: list[str], summary: dict | None = None) -> None:
    """Record that the step in ``step_dir`` finished for ``digest``, producing ``outputs`` (relative names)."""
    write_json(Path(step_dir) / DONE_FILE, {"fingerprint": digest, "outputs": outputs, "summary": summary or {}})
    logger.debug("step %s done (%s)", step_dir, digest)
