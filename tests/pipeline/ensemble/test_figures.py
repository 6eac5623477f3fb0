"""Tests of naslung.pipeline.ensemble.figures: the ensemble-size figure is written as a non-empty PNG."""

from __future__ import annotations

import pytest

from naslung.pipeline.ensemble.figures import plot_ensemble_size
from naslung.pipeline.errors import DataError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert not list(path.parent.glob(".*tmp*"))


def test_plot_ensemble_size(tmp_path):
    rows = [
        {"size": n, "draws": 10, **{f"{m}_mean": 0.8 + 0.01 * n for m in ("accuracy", "sensitivity", "specificity")}}
        | {"f1_mean": 0.85, "f1_std": 0.01, "accuracy_std": 0.02}
        for n in (1, 3, 5)
    ]
    _assert_png(plot_ensemble_size(rows, tmp_path / "fig7.png"))
    with pytest.raises(DataError):
        plot_ensemble_size([], tmp_path / "empty.png")
    with pytest.raises(DataError):
        plot_ensemble_size(rows, tmp_path / "auc.png", metrics=("auc",))
