"""Session-wide test settings: headless plotting, few torch threads, no network."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
