"""Running an exported bundle with ``python -m monai.bundle run`` in a process without naslung, and the smoke test
that compares its predictions with naslung's."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.errors import ConfigError
from naslung.pipeline.export.checks import bundle_process_env, hide_naslung_code
from naslung.pipeline.export.models import build_project_network, load_state_dict_file
from naslung.pipeline.export.run_content import read_json
from naslung.pipeline.training.step import predict

__all__ = ["run_bundle_inference", "smoke_test_bundle"]


_HIDDEN_RUNNER = """
try:
    import naslung  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("naslung is importable in the bundle's process")
import runpy
sys.argv = ["monai.bundle", *sys.argv[1:]]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
"""


def run_bundle_inference(
    bundle_dir: str | os.PathLike,
    datalist: str | os.PathLike,
    output_dir: str | os.PathLike,
    extra_configs: Sequence[str] = (),
    hide_naslung: bool = True,
    timeout_s: float = 600.0,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """Run a bundle's ``configs/inference.json`` with ``python -m monai.bundle run`` in a fresh process.

    The process starts in an empty temporary folder; with ``hide_naslung`` it cannot import naslung (a
    meta-path blocker goes first), which proves the bundle is self-contained.

    Args:
        bundle_dir: the bundle root (passed as ``--bundle_root``).
        datalist: the JSON datalist (``--datalist``).
        output_dir: where ``predictions.csv`` goes (``--output_dir``).
        extra_configs: further config files merged after ``inference.json`` (e.g. ``configs/evaluate.json``, or
            ``configs/inference_onnx.json`` for ONNX Runtime), relative to the bundle root.
        hide_naslung: block ``import naslung`` in the process.
        timeout_s: wall-clock limit in seconds.
        overrides: further ``--key value`` arguments of ``monai.bundle run`` (config ids, e.g. ``batch_size``).
        env: environment variables set in the process on top of this one's (e.g. ``OMP_NUM_THREADS``).

    Returns:
        the path of ``predictions.csv``.

    Raises:
        ConfigError: the run failed (the message holds the end of its output) or timed out.
    """
    bundle = Path(bundle_dir).resolve()
    configs = [str(bundle / "configs" / "inference.json"), *(str(bundle / c) for c in extra_configs)]
    config_arg = configs[0] if len(configs) == 1 else json.dumps(configs)
    args = ["run", "--config_file", config_arg, "--bundle_root", str(bundle)]
    args += ["--datalist", str(Path(datalist).resolve()), "--output_dir", str(Path(output_dir).resolve())]
    for key, value in (overrides or {}).items():
        args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    if hide_naslung:
        command = [sys.executable, "-c", hide_naslung_code() + _HIDDEN_RUNNER, *args]
    else:
        command = [sys.executable, "-m", "monai.bundle", *args]
    process_env = bundle_process_env(env)
    with tempfile.TemporaryDirectory(prefix="naslung-bundle-run-") as workdir:
        try:
            result = subprocess.run(
                command, cwd=workdir, env=process_env, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise ConfigError(f"bundle inference of {bundle} took longer than {timeout_s:.0f} s") from err
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        names = " + ".join(Path(c).name for c in configs)
        raise ConfigError(f"bundle inference of {bundle} ({names}) failed:\n{tail}")
    csv_path = Path(output_dir) / "predictions.csv"
    if not csv_path.is_file():
        raise ConfigError(f"bundle inference of {bundle} wrote no {csv_path}")
    return csv_path


def smoke_test_bundle(
    bundle_dir: str | os.PathLike, data_dir: str | os.PathLike, n_nodules: int = 4, tolerance: float = 1e-4
) -> dict[str, Any]:
    """Run an exported bundle, without naslung, on a few cubes of the run's data and compare with naslung.

    The first ``n_nodules`` cubes of ``data_dir/manifest.csv`` go through the bundle's inference in a fresh
    process that cannot import naslung, once with ``inference.json`` (PyTorch) and once with
    ``inference_onnx.json`` (ONNX Runtime); naslung then predicts the same cubes with the same weights
    (:func:`naslung.pipeline.training.step.predict`, member probabilities averaged for an ensemble).

    Args:
        bundle_dir: the exported bundle.
        data_dir: the run's data folder (``manifest.csv`` and its cubes).
        n_nodules: how many cubes to run.
        tolerance: largest accepted difference of a probability.

    Returns:
        ``{"status": "ok" | "failed", "bundle", "n", "n_failed", "max_abs_difference", "onnx_max_abs_difference",
        "seconds", "problems"}`` (the differences are from naslung's probabilities).

    Raises:
        ConfigError: the bundle cannot be run at all.
        DataError: the manifest is missing or unreadable.
    """
    bundle = Path(bundle_dir)
    items = read_manifest(Path(data_dir) / "manifest.csv")[: max(1, int(n_nodules))]
    metadata = read_json(bundle / "configs" / "metadata.json")
    architectures = metadata.get("network_architecture")
    architectures = architectures if isinstance(architectures, list) else [architectures]
    if any(not isinstance(a, dict) or "network_def" not in a for a in architectures):
        raise ConfigError(f"{bundle}: metadata has no network_architecture; was it exported by naslung?")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="naslung-smoke-") as workdir:
        datalist = Path(workdir) / "datalist.json"
        datalist.write_text(json.dumps([{"image": d["image"], "nodule_id": d["nodule_id"]} for d in items]))
        csv_path = run_bundle_inference(bundle, datalist, Path(workdir) / "out")
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        onnx_rows: list[dict[str, str]] = []
        if (bundle / "configs" / "inference_onnx.json").is_file():
            onnx_csv = run_bundle_inference(bundle, datalist, Path(workdir) / "onnx", ["configs/inference_onnx.json"])
            with open(onnx_csv, newline="") as handle:
                onnx_rows = list(csv.DictReader(handle))
    seconds = time.perf_counter() - started
    if len(architectures) == 1:
        weight_files = [bundle / "models" / "model.pt"]
    else:
        weight_files = [bundle / "models" / f"member_{i}.pt" for i in range(len(architectures))]
    member_probabilities = []
    for architecture, weight_file in zip(architectures, weight_files, strict=True):
        definition = {"_target_": "naslung.networks.build_network", **architecture["network_def"]}
        network = build_project_network(definition, load_state_dict_file(weight_file))
        member_probabilities.append([r["probability"] for r in predict(network, items, "cpu")])
    expected = np.mean(np.asarray(member_probabilities, dtype=np.float64), axis=0)
    problems = [f"{row['nodule_id']}: {row['error']}" for row in rows if row.get("error")]
    pairs = zip(rows, expected, strict=False)
    differences = [abs(float(row["probability"]) - float(value)) for row, value in pairs if row.get("probability")]
    if len(rows) != len(items):
        problems.append(f"{len(rows)} rows for {len(items)} nodules")
    largest = max(differences) if differences else math.nan
    if differences and largest > tolerance:
        problems.append(f"bundle and naslung differ by {largest:.2e} > {tolerance:g}")
    onnx_differences = [
        abs(float(row["probability"]) - float(value))
        for row, value in zip(onnx_rows, expected, strict=False)
        if row.get("probability")
    ]
    onnx_largest = max(onnx_differences) if onnx_differences else math.nan
    if not onnx_rows:
        problems.append("no configs/inference_onnx.json (ONNX Runtime); export the bundle again")
    elif len(onnx_differences) != len(differences) or onnx_largest > tolerance:
        problems.append(
            f"inference_onnx.json: {len(onnx_differences)} probabilities, differing from naslung by up to "
            f"{onnx_largest:.2e} (tolerance {tolerance:g})"
        )
    return {
        "status": "ok" if not problems and differences else "failed",
        "bundle": str(bundle),
        "n": len(rows),
        "n_failed": sum(1 for row in rows if row.get("error")),
        "max_abs_difference": largest,
        "onnx_max_abs_difference": onnx_largest,
        "seconds": round(seconds, 2),
        "problems": problems,
    }
