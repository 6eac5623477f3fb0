"""``benchmarks/latency.py``: end-to-end bundle throughput, ``inference.json`` beside ``inference_onnx.json``,
through ``python -m monai.bundle run``, written to the results JSON (run here at a tiny size)."""

from __future__ import annotations

import json


def test_bundle_throughput_side_by_side(tmp_path, capsys, load_benchmark):
    out = tmp_path / "latency.json"
    load_benchmark("latency").main(["--bundle-only", "--bundle-cubes", "3", "--bundle-repeats", "1", "--out", str(out)])
    result = json.loads(out.read_text(encoding="utf-8"))["bundle_throughput"]
    assert (result["n_cubes"], result["repeats"], result["threads"]) == (3, 1, 1)
    assert set(result["configs"]) == {"inference.json", "inference_onnx.json"}
    for row in result["configs"].values():
        assert row["seconds"] > 0 and row["startup_seconds"] > 0
        assert row["nodules_per_second"] == 3 / row["seconds"]
    ratio = (
        result["configs"]["inference_onnx.json"]["nodules_per_second"]
        / result["configs"]["inference.json"]["nodules_per_second"]
    )
    assert abs(result["onnx_over_pytorch"]["nodules_per_second"] - ratio) < 1e-12
    printed = capsys.readouterr().out
    assert "ratio inference_onnx.json / inference.json" in printed and str(out) in printed
