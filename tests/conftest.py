"""Session-wide test settings: headless plotting, few torch threads, no network."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("MPLBACKEND", "Agg")
# searches in tests keep their latency table out of the user's ~/.cache (naslung.pipeline.search.latency_table)
# (removed when the test session ends, so repeated runs leave no folders behind in the temp directory)
_LATENCY_TABLE_DIR = tempfile.mkdtemp(prefix="naslung-test-latency-")
os.environ["NASLUNG_LATENCY_TABLE"] = _LATENCY_TABLE_DIR
atexit.register(shutil.rmtree, _LATENCY_TABLE_DIR, ignore_errors=True)

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
