"""Tests of naslung.pipeline.search.figures: the search scatter is a non-empty PNG, and bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest

from naslung.pipeline.errors import DataError
from naslung.pipeline.search.figures import plot_pareto

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert not list(path.parent.glob(".*tmp*"))


def test_plot_pareto(tmp_path):
    rng = np.random.default_rng(0)
    records = [
        {"latency_ms": float(10 ** rng.uniform(-1, 1)), "f1": float(rng.uniform(0.8, 0.88)), "accuracy": 0.85}
        | {"spec": f"[4,4,[{i}],[8],[16]]"}
        for i in range(25)
    ]
    front_specs = [records[0]["spec"], records[3]["spec"]]
    _assert_png(plot_pareto(records, front_specs, tmp_path / "fig4.png", pruned_count=7))
    _assert_png(plot_pareto(records, records[:2], tmp_path / "fig4b.png"))
    with pytest.raises(DataError):
        plot_pareto([], [], tmp_path / "bad.png")
    with pytest.raises(DataError):
        plot_pareto([{"latency_ms": 1.0}], [], tmp_path / "bad.png")
