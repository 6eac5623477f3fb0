"""Session-wide test settings: headless plotting, few torch threads, no network."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("MPLBACKEND", "Agg")
# searches in tests keep their latency table out of the user's ~/.cache (naslung.pipeline.search.latency_table)
os.environ["NASLUNG_LATENCY_TABLE"] = tempfile.mkdtemp(prefix="naslung-test-latency-")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
