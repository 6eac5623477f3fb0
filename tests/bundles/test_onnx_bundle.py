"""The bundles' ONNX Runtime path: ``models/model.onnx`` and ``configs/inference_onnx.json`` ship in every bundle, run
under ``python -m monai.bundle run`` without naslung, and predict what ``inference.json`` predicts."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from naslung.bundles.runtime.onnx_predictor import ONNXRUNTIME_INSTALL, OnnxPredictor
from naslung.networks import build_network
from naslung.networks.errors import ConfigError
from naslung.networks.export import to_onnx
from naslung.pipeline.export.checks import check_bundle_layout, hide_naslung_code
from naslung.pipeline.export.smoke import smoke_test_bundle

#: The issue's bound on ONNX Runtime's probabilities against PyTorch's.
TOLERANCE = 1e-4
ONNX_CONFIGS = ["configs/inference.json", "configs/inference_onnx.json"]

#: ``python -m monai.bundle`` in a process where naslung and onnxruntime cannot be imported.
_NO_ONNXRUNTIME = """
class _NoOnnxRuntime(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'onnxruntime' or name.startswith('onnxruntime.'):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return None
sys.meta_path.insert(0, _NoOnnxRuntime())
import runpy
sys.argv = ["monai.bundle", *sys.argv[1:]]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
"""


def _monai_bundle_run(bundle: Path, configs: list[str], datalist: Path, out: Path, cwd: Path, prelude: str = ""):
    """``python -m monai.bundle run`` of ``configs`` (relative to the bundle) in a fresh process, naslung hidden."""
    files = [str(bundle / c) for c in configs]
    args = ["run", "--config_file", json.dumps(files), "--bundle_root", str(bundle)]
    args += ["--datalist", str(datalist), "--output_dir", str(out)]
    if prelude:
        command = [sys.executable, "-c", hide_naslung_code() + prelude, *args]
    else:
        runner = "import runpy\nsys.argv = ['monai.bundle', *sys.argv[1:]]\n"
        runner += "runpy.run_module('monai.bundle', run_name='__main__', alter_sys=True)\n"
        command = [sys.executable, "-c", hide_naslung_code() + runner, *args]
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["nodule_id"]: row for row in csv.DictReader(handle)}


def _datalist(folder: Path, bundle_run, scan_case) -> Path:
    """Six cubes of the run, two extreme cubes (all air, uniform noise), a scan with a nodule centre and an entry
    that must fail."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = [{"image": item["image"], "nodule_id": item["nodule_id"]} for item in bundle_run.datalist[:6]]
    extremes = {"air": np.zeros((32, 32, 32)), "noise": np.random.default_rng(0).uniform(size=(32, 32, 32))}
    for name, cube in extremes.items():
        np.save(folder / f"{name}.npy", cube.astype(np.float32))
        entries.append({"image": str(folder / f"{name}.npy"), "nodule_id": name})
    entries.append({"image": str(scan_case.mhd), "center_mm": scan_case.centre_mm, "nodule_id": "scan"})
    entries.append({"image": str(folder / "missing.npy"), "nodule_id": "missing"})
    path = folder / "datalist.json"
    path.write_text(json.dumps(entries))
    return path


@pytest.mark.parametrize("kind", ["classifier", "ensemble"])
def test_every_bundle_ships_the_onnx_path(exported, kind):
    bundle = Path(exported[kind])
    assert (bundle / "models" / "model.onnx").is_file()
    assert not [p.name for p in (bundle / "models").iterdir() if p.name.startswith(".")]  # no temporary file left
    assert check_bundle_layout(bundle) == []
    config = json.loads((bundle / "configs" / "inference_onnx.json").read_text(encoding="utf-8"))
    assert config["network_def"]["_target_"] == "scripts.naslung_bundle.runtime.onnx_predictor.OnnxPredictor"
    assert "naslung." not in json.dumps(config).replace("naslung_bundle", "")
    assert (bundle / "scripts" / "naslung_bundle" / "runtime" / "onnx_predictor.py").is_file()
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert "configs/inference_onnx.json" in metadata["inference_configs"]
    assert metadata["latency_ms_per_nodule"]["onnxruntime"] > 0
    readme = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    assert "configs/inference_onnx.json" in readme and ONNXRUNTIME_INSTALL in readme
    outputs = OnnxPredictor(bundle / "models" / "model.onnx").output_names
    assert outputs == (["probabilities", "member_probabilities"] if kind == "ensemble" else ["logits"])


@pytest.mark.parametrize("kind", ["classifier", "ensemble"])
def test_onnx_config_predicts_what_inference_json_predicts(exported, bundle_run, scan_case, tmp_path, kind):
    """Both configs through `python -m monai.bundle run`, naslung hidden: every row equal within 1e-4."""
    bundle = Path(exported[kind]).resolve()
    datalist = _datalist(tmp_path / "inputs", bundle_run, scan_case)
    results = {}
    for name, configs in (("torch", ONNX_CONFIGS[:1]), ("onnx", ONNX_CONFIGS)):
        run = _monai_bundle_run(bundle, configs, datalist, tmp_path / name, tmp_path / f"cwd_{name}")
        assert run.returncode == 0, run.stderr[-3000:]
        results[name] = _rows(tmp_path / name / "predictions.csv")
    torch_rows, onnx_rows = results["torch"], results["onnx"]
    assert list(onnx_rows) == list(torch_rows) and len(torch_rows) == 10
    assert torch_rows["missing"]["error"] and onnx_rows["missing"]["error"] == torch_rows["missing"]["error"]
    classified = [key for key, row in torch_rows.items() if not row["error"]]
    assert len(classified) == 9
    expected = np.array([float(torch_rows[k]["probability"]) for k in classified])
    produced = np.array([float(onnx_rows[k]["probability"]) for k in classified])
    assert np.ptp(expected) > 10 * TOLERANCE  # the comparison can tell the nodules apart
    assert np.abs(produced - expected).max() < TOLERANCE
    for key, probability in zip(classified, expected, strict=True):
        if abs(probability - 0.5) > TOLERANCE:  # a decision at the threshold may flip
            assert onnx_rows[key]["prediction"] == torch_rows[key]["prediction"], key
        if kind == "ensemble":
            members = np.array(json.loads(onnx_rows[key]["member_probabilities"]))
            assert np.allclose(members, json.loads(torch_rows[key]["member_probabilities"]), atol=TOLERANCE)
            assert (onnx_rows[key]["votes"], onnx_rows[key]["n_members"]) == (
                torch_rows[key]["votes"],
                torch_rows[key]["n_members"],
            )


def test_onnx_config_without_onnxruntime_names_the_package(exported, bundle_run, scan_case, tmp_path):
    bundle = Path(exported["classifier"]).resolve()
    datalist = _datalist(tmp_path / "inputs", bundle_run, scan_case)
    run = _monai_bundle_run(bundle, ONNX_CONFIGS, datalist, tmp_path / "out", tmp_path / "cwd", _NO_ONNXRUNTIME)
    assert run.returncode != 0
    assert "'onnxruntime' is not installed" in run.stderr and ONNXRUNTIME_INSTALL in run.stderr
    # the PyTorch config still runs in the same conditions
    run = _monai_bundle_run(bundle, ONNX_CONFIGS[:1], datalist, tmp_path / "out", tmp_path / "cwd", _NO_ONNXRUNTIME)
    assert run.returncode == 0, run.stderr[-3000:]


def test_layout_rule_pairs_the_onnx_config_and_model(exported, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(exported["classifier"], bundle)
    (bundle / "models" / "model.onnx").unlink()
    assert "configs/inference_onnx.json without models/model.onnx; export the bundle again" in check_bundle_layout(
        bundle
    )
    (bundle / "configs" / "inference_onnx.json").unlink()
    assert check_bundle_layout(bundle) == []


def test_smoke_check_runs_both_configs(exported, bundle_run):
    result = smoke_test_bundle(exported["classifier"], bundle_run.root / "data", n_nodules=3)
    assert result["status"] == "ok", result["problems"]
    assert result["n"] == 3 and result["onnx_max_abs_difference"] < TOLERANCE


@pytest.mark.parametrize("layout", ["naslung", "reference"])
def test_predictor_matches_eager_at_any_batch(layout, tmp_path):
    """The graph is traced at batch 1; ONNX Runtime must give eager PyTorch's logits at other batch sizes too."""
    torch.manual_seed(0)
    network = build_network("[4,4,[4,4],[4,8],[8,8]]", head="angular", layout=layout).eval()
    path = tmp_path / "model.onnx"
    to_onnx(network, path, (1, 32, 32, 32))
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    predictor = OnnxPredictor(path, num_threads=1).to("cpu").eval()
    assert list(predictor.parameters()) == []
    for batch in (1, 5):
        cubes = torch.rand(batch, 1, 32, 32, 32)
        with torch.no_grad():
            assert torch.allclose(predictor(cubes), network(cubes), atol=1e-5), batch
    with pytest.raises(ConfigError, match="member_probabilities"):
        predictor.member_probabilities(cubes)
