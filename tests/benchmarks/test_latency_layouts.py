"""``benchmarks/latency.py``: the two layouts side by side, with Model-1's parameter counts in each."""

from __future__ import annotations

import argparse


def test_layouts_side_by_side(capsys, load_benchmark):
    rows = load_benchmark("latency").bench_layouts("[4,4,[4,4],[4,8],[8,8]]", argparse.Namespace(threads=1, repeats=1))
    assert {layout: int(row["parameters"]) for layout, row in rows.items()} == {"naslung": 13_314, "reference": 16_128}
    assert all(row["eager_ms"] > 0 and row["onnxruntime_ms"] > 0 for row in rows.values())
    assert rows["reference"]["macs"] > rows["naslung"]["macs"]
    printed = capsys.readouterr().out
    assert "16,128" in printed and "13,314" in printed and "ratio reference / naslung" in printed
