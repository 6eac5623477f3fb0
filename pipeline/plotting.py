"""What every figure of naslung shares: the colours of the paper's figures, the metric labels, and a PNG written
atomically from a figure independent of pyplot's global state."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from naslung.pipeline.atomic_io import atomic_path

__all__ = ["MALIGNANT_COLOUR", "BENIGN_COLOUR", "METRIC_LABELS", "DPI", "new_figure", "save_figure", "as_numpy"]

logger = logging.getLogger(__name__)

# Fig. 6 of the paper: blue = malignant (positive), red = benign (negative).
MALIGNANT_COLOUR = "tab:blue"
BENIGN_COLOUR = "tab:red"
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "f1": "F1 score",
    "auc": "ROC AUC",
}
#: Resolution of every PNG figure (dots per inch).
DPI = 150


def new_figure(width_in: float, height_in: float) -> Figure:
    """A figure on the Agg canvas, independent of pyplot's global state and of the session's backend."""
    figure = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` as a PNG to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    logger.info("wrote figure %s", path)
    return Path(path)


def as_numpy(value: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a NumPy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().float().numpy()
    return np.asarray(value)
