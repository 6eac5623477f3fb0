"""Baselines: one training step through ``train_fold`` and ``naslung train --network``, the ``baselines`` step of
``naslung run``, their rows in the results table and the report, and Grad-CAM on them."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from naslung.networks import AngularLinear
from naslung.pipeline.analysis.features import default_gradcam_layer, gradcam_maps
from naslung.pipeline.atomic_io import write_csv
from naslung.pipeline.cli import main
from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.errors import ConfigError
from naslung.pipeline.run.members import load_trained_network
from naslung.pipeline.training.step import network_overrides, spec_slug, train_fold

#: One step per epoch: 6 cubes in 3 folds; a held-out fold leaves 4, of which 2 validate and 2 form one batch.
ONE_STEP = {"batch_size": 2, "val_fraction": 0.2, "max_epochs": 1, "seed": 1}
TINY_SPEC = "[4,4,[4],[4],[4]]"

#: Each baseline with its builder's own width options narrowed (``network_def#...``), so a step takes a second;
#: ResNet-18 (the builder of ResNet-50/101 too) is trained through the CLI below.
BASELINE_CASES = [
    ["densenet121", {"init_features": 8, "growth_rate": 4, "bn_size": 2}, "class_layers.out"],
    ["seresnet50", {"layers": [1, 1, 1, 1]}, "last_linear"],
    ["mc3_18", {"block_inplanes": [4, 8, 8, 16]}, "head"],
]


def _narrow(kwargs):
    return {f"network_def#{key}": value for key, value in kwargs.items()}


@pytest.fixture(scope="module")
def cube_dir(tmp_path_factory):
    """``manifest.csv`` of 6 cubes, one patient each, 2 per fold (one malignant: a large bright sphere)."""
    root = tmp_path_factory.mktemp("cubes")
    rng = np.random.default_rng(0)
    radius = np.sqrt(((np.mgrid[:32, :32, :32] - 15.5) ** 2).sum(0))
    rows = []
    for n in range(6):
        label = n % 2
        cube = rng.normal(0.2, 0.05, (32, 32, 32)).astype(np.float32)
        cube[radius < (8 if label else 4)] += 0.5
        np.save(root / f"n{n}.npy", cube)
        rows.append(
            dict(nodule_id=f"n{n}", patient_id=f"p{n}", series_uid="s", image=f"n{n}.npy", label=label, fold=n // 2)
        )
    write_csv(root / "manifest.csv", rows, list(rows[0]))
    return root


@pytest.mark.parametrize("name, narrow, head_name", BASELINE_CASES)
def test_baseline_trains_one_step(cube_dir, tmp_path, name, narrow, head_name):
    overrides = {**ONE_STEP, **network_overrides(name), **_narrow(narrow)}
    result = train_fold(read_manifest(cube_dir / "manifest.csv"), 0, tmp_path / spec_slug(name), overrides=overrides)
    assert (tmp_path / name).is_dir()  # the run folder is named after the network
    fold_dir = tmp_path / name / "fold_0"
    history = [json.loads(line) for line in (fold_dir / "history.jsonl").read_text(encoding="utf-8").splitlines()]
    assert result["n_train"] == 2 and len(history) == 1 and np.isfinite(history[0]["train_loss"])
    assert set(result["test"]) >= {"accuracy", "f1", "auc"} and result["n_test"] == 2
    config = json.loads((fold_dir / "config.json").read_text(encoding="utf-8"))
    assert config["arch"] == name and config["attention"] == "none" and config["loss_name"] == "asoftmax"
    network = load_trained_network(fold_dir)  # rebuilt from config.json + best_model.pt, as ensemble/export do
    assert isinstance(network.get_submodule(head_name), AngularLinear)
    with open(fold_dir / "test_predictions.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2


def test_network_overrides():
    assert network_overrides() == {}
    assert network_overrides("cbam_resnet3d", TINY_SPEC) == {"arch": TINY_SPEC}
    assert network_overrides("DenseNet-121") == {"arch": "densenet121", "attention": "none"}
    with pytest.raises(ConfigError, match="is for cbam_resnet3d"):
        network_overrides("resnet18", TINY_SPEC)
    with pytest.raises(ConfigError, match="unknown network 'vgg16'"):
        network_overrides("vgg16")


def test_baseline_with_cbam_attention_is_a_clear_error(cube_dir, tmp_path):
    with pytest.raises(ConfigError, match="has no CBAM attention, so attention must be 'none'"):
        train_fold(read_manifest(cube_dir / "manifest.csv"), 0, tmp_path, overrides={**ONE_STEP, "arch": "resnet18"})


def test_cli_train_network(cube_dir, tmp_path, capsys):
    out = tmp_path / "resnet18"
    sets = [f"{key}={json.dumps(value)}" for key, value in {**ONE_STEP, **_narrow({"widen_factor": 0.125})}.items()]
    args = ["train", "--network", "resnet18", "--data", str(cube_dir), "--out", str(out), "--folds", "1"]
    assert main(args + [item for s in sets for item in ("--set", s)]) == 0
    assert "trained resnet18 on folds [1]" in capsys.readouterr().out
    assert (out / "fold_1" / "test_predictions.csv").is_file() and (out / "cv_metrics.json").is_file()
    config = json.loads((out / "fold_1" / "config.json").read_text(encoding="utf-8"))
    assert config["arch"] == "resnet18" and config["attention"] == "none"
    assert isinstance(load_trained_network(out / "fold_1").fc, AngularLinear)
    both = ["train", "--network", "resnet18", "--arch", TINY_SPEC, "--data", str(cube_dir), "--out", str(out)]
    assert main(both) == 1
    assert "is for cbam_resnet3d" in capsys.readouterr().err


def test_run_baselines_step_feeds_the_results_table_and_report(cube_dir, tmp_path):
    import shutil

    from naslung.pipeline.analysis.report import build_report
    from naslung.pipeline.ensemble.step import run_ensemble_step
    from naslung.pipeline.run.job import RunContext, load_profile, run_job

    run = tmp_path / "run"
    shutil.copytree(cube_dir, run / "data")
    datalist = read_manifest(run / "data" / "manifest.csv")
    for fold in (0, 1):  # the "searched" network, as the train step leaves it
        train_fold(datalist, fold, run / "train" / spec_slug(TINY_SPEC), overrides={**ONE_STEP, "arch": TINY_SPEC})
    settings = load_profile("quick")
    assert settings["baselines"]["networks"] == []  # the quick profile trains none
    ctx = RunContext(run_dir=run, settings=settings)
    assert run_job(ctx, ["baselines"])["baselines"].startswith("none")
    settings["train"] = {**ONE_STEP, "folds": [0, 1]}
    settings["baselines"] = {"networks": ["ResNet-18"], "train": _narrow({"widen_factor": 0.125})}
    assert "1 baselines on folds [0, 1]" in run_job(ctx, ["baselines"])["baselines"]
    assert (run / "baselines" / "resnet18" / "fold_1" / "test_predictions.csv").is_file()

    result = run_ensemble_step(run, draws=2)
    assert [m["slug"] for m in result["members"]] == [spec_slug(TINY_SPEC)]  # baselines never join the ensemble
    (baseline,) = result["baselines"]
    assert baseline["slug"] == "resnet18" and [r["fold"] for r in baseline["per_fold"]] == [0, 1]
    assert baseline["params"] > 0 and baseline["latency_ms"] > 0 and "f1_std" in baseline["summary"]
    with open(run / "ensemble" / "results_table.csv", newline="") as handle:
        rows = {r["method"]: r for r in csv.DictReader(handle)}
    row = rows["resnet18 baseline (ours)"]
    assert row["source"] == "ours" and float(row["params_m"]) == round(baseline["params"] / 1e6, 4)
    assert run_ensemble_step(run, draws=2)["skipped"]

    text = build_report(run)[0].read_text(encoding="utf-8")
    comparison = text.split("## Comparison with the paper")[1].split("## Ensemble size")[0]
    assert "| resnet18 baseline (ours) | ours |" in comparison
    assert "| `resnet18` (baseline) | [0, 1] |" in text.split("## Cross-validated results")[1]
    assert "resnet18 baseline (ours)" in text.split("## Latency and parameters")[1]


def test_unknown_or_searched_baseline_is_refused(tmp_path):
    from naslung.pipeline.ensemble.baselines import baseline_names

    assert baseline_names(["MC3-18", "mc3_18", "resnet18"]) == ["mc3_18", "resnet18"]
    with pytest.raises(ConfigError, match="not a baseline"):
        baseline_names(["cbam_resnet3d"])
    with pytest.raises(ConfigError, match="unknown network"):
        baseline_names(["alexnet"])


def test_gradcam_on_seresnet50():
    from naslung.networks import build_network

    torch.manual_seed(0)
    network = build_network("seresnet50", layers=(1, 1, 1, 1), head="angular", attention="none").eval()
    assert default_gradcam_layer(network) == "layer4"
    maps = gradcam_maps(network, torch.rand(1, 1, 32, 32, 32))
    assert maps.shape == (1, 32, 32, 32) and np.isfinite(maps).all() and (maps >= 0).all()


def test_baselines_step_runs_its_network_fold_jobs_on_the_train_executor(cube_dir, tmp_path):
    """Issue 15: with ``train.parallel`` the baselines' (network, fold) jobs go through the retrain's executor, each
    into its own fold folder (with its ``job.log``), and a second run redoes none of them."""
    import shutil

    from naslung.pipeline.ensemble.baselines import baseline_training_jobs
    from naslung.pipeline.run.job import RunContext, run_job

    run = tmp_path / "run"
    shutil.copytree(cube_dir, run / "data")
    jobs = baseline_training_jobs([], ["ResNet-18", "mc3_18"], [0, 1], run, {"lr": 0.1})
    assert [(job["out_dir"], job["test_fold"]) for job in jobs] == [
        (str(run / "baselines" / name), fold) for name in ("resnet18", "mc3_18") for fold in (0, 1)
    ]
    assert jobs[0]["overrides"] == {"lr": 0.1, **network_overrides("resnet18")}
    settings = {
        "train": {**ONE_STEP, "folds": [0, 1], "parallel": {"executor": "sequential", "threads_per_job": 1}},
        "baselines": {"networks": ["resnet18"], "train": _narrow({"widen_factor": 0.125})},
    }
    ctx = RunContext(run_dir=run, settings=settings)
    assert "1 baselines on folds [0, 1]" in run_job(ctx, ["baselines"])["baselines"]
    folds = [run / "baselines" / "resnet18" / f"fold_{fold}" for fold in (0, 1)]
    for fold_dir in folds:
        assert (fold_dir / "done.json").is_file() and "started" in (fold_dir / "job.log").read_text(encoding="utf-8")
    outputs = [p for fold_dir in folds for p in fold_dir.rglob("*") if p.is_file() and p.name != "job.log"]
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    run_job(ctx, ["baselines"])  # job.log only gains a line; the training outputs are not rewritten
    assert {p: p.stat().st_mtime_ns for p in outputs} == stamps
