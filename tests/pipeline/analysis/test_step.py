"""``naslung evaluate``'s analyses: config, Grad-CAM on every kind of network, ablation and discriminability tables,
and one small end-to-end run that reuses ``RUN/train`` and writes every figure."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from naslung.networks import build_network
from naslung.pipeline.analysis.ablation import VariantRun, ablation_rows
from naslung.pipeline.analysis.discriminability import discriminability_rows
from naslung.pipeline.analysis.features import default_gradcam_layer, gradcam_maps
from naslung.pipeline.analysis.step import load_evaluate_config, run_evaluate_step
from naslung.pipeline.atomic_io import write_csv
from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.errors import ConfigError
from naslung.pipeline.training.step import spec_slug, train_fold, train_fold_job

TINY_SPEC = "[4,4,[4],[4],[4]]"
TINY_TRAINING = {"arch": TINY_SPEC, "batch_size": 8, "val_fraction": 0.3, "seed": 3, "max_epochs": 1}


# ------------------------------------------------------------------------------------------------------ config
CONFIG_CASES = [
    [{"max_specs": 1}, "max_specs", 1],
    [{"tsne#perplexity": 5}, "tsne", {"perplexity": 5, "seed": 0, "l2_normalize": False}],
    [{"ablation_variants": ["cbam"]}, "ablation_variants", ["cbam"]],
]


@pytest.mark.parametrize("overrides, key, expected", CONFIG_CASES)
def test_evaluate_config_overrides(overrides, key, expected):
    assert load_evaluate_config(overrides=overrides)[key] == expected


BAD_CONFIG_CASES = [
    [{"epochs": 3}, "unknown evaluation config key"],
    [{"analyses": ["ablation", "magic"]}, "unknown analyses"],
    [{"ablation_variants": ["cbam", "nope"]}, "unknown ablation variant"],
    [{"feature_normalisations": ["z"]}, "feature_normalisations"],
]


@pytest.mark.parametrize("overrides, message", BAD_CONFIG_CASES)
def test_evaluate_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_evaluate_config(overrides=overrides)


# ---------------------------------------------------------------------------------------------------- Grad-CAM
GRADCAM_CASES = [
    [TINY_SPEC, {"head": "angular"}, (1, 16, 16, 16), "stage5"],
    ["resnet18", {"widen_factor": 0.25}, (1, 16, 16, 16), "layer4"],
    ["densenet121", {"init_features": 8, "growth_rate": 4, "bn_size": 2}, (1, 32, 32, 32), "class_layers.relu"],
]


@pytest.mark.parametrize("name, kwargs, input_shape, layer", GRADCAM_CASES)
def test_gradcam_on_factory_networks(name, kwargs, input_shape, layer):
    torch.manual_seed(0)
    network = build_network(name, **kwargs).eval()
    inplace_before = {n: m.inplace for n, m in network.named_modules() if hasattr(m, "inplace")}
    assert default_gradcam_layer(network, input_shape) == layer
    maps = gradcam_maps(network, torch.rand((2, *input_shape)))
    assert maps.shape == (2, *input_shape[1:]) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and (maps >= 0).all()
    # the caller's network is untouched: no MONAI hooks left on it, in-place flags as they were
    assert all(not m._forward_hooks and not m._backward_hooks for m in network.modules())
    assert {n: m.inplace for n, m in network.named_modules() if hasattr(m, "inplace")} == inplace_before


class _BlobDetector(torch.nn.Module):
    """conv (identity) -> global mean -> linear: the malignant logit grows with the input's brightness."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 1, bias=False)
        self.pool = torch.nn.AdaptiveAvgPool3d(1)
        self.fc = torch.nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor([[-1.0], [1.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.conv(x)), 1))


@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")  # the target is the first layer
def test_gradcam_is_high_where_the_evidence_is():
    image = torch.zeros((1, 1, 8, 8, 8))
    image[0, 0, 1:3, 5:7, 2:4] = 1.0
    network = _BlobDetector()
    assert default_gradcam_layer(network, (1, 8, 8, 8)) == "conv"
    cam = gradcam_maps(network, image, class_idx=1)[0]
    assert np.unravel_index(cam.argmax(), cam.shape) in {(x, y, z) for x in (1, 2) for y in (5, 6) for z in (2, 3)}
    assert cam[6, 1, 6] == pytest.approx(0.0, abs=1e-6)  # no evidence far from the blob (not MONAI's 1 - x scaling)


# ------------------------------------------------------------------------------------------------------ tables
def _run(spec, variant, f1s, params):
    per_fold = [
        {"fold": k, "accuracy": f, "sensitivity": f, "specificity": f, "f1": f, "auc": f} for k, f in enumerate(f1s)
    ]
    return VariantRun(spec, spec_slug(spec), variant, {k: None for k in range(len(f1s))}, {}, per_fold, params)


def test_ablation_rows_average_networks_then_specs():
    runs = [
        _run("[4,4,[4],[4],[4]]", "cbam", [0.6, 0.8], 100),
        _run("[4,4,[8],[8],[8]]", "cbam", [0.9, 0.9], 300),
        _run("[4,4,[4],[4],[4]]", "base", [0.5, 0.5], 90),
    ]
    rows = ablation_rows(runs)
    by_key = {(r["spec"], r["variant"]): r for r in rows}
    assert by_key[("[4,4,[4],[4],[4]]", "cbam")]["f1_mean"] == pytest.approx(0.7)
    assert by_key[("[4,4,[4],[4],[4]]", "cbam")]["f1_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    overall = by_key[("all", "cbam")]
    assert overall["f1_mean"] == pytest.approx(0.8) and overall["f1_std"] == pytest.approx(np.std([0.7, 0.9], ddof=1))
    assert overall["params"] == pytest.approx(200) and overall["n"] == 2
    assert by_key[("all", "base")]["n"] == 1 and math.isnan(by_key[("all", "base")]["f1_std"])


def test_discriminability_rows_rank_separable_features_first():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    separated = np.concatenate([rng.normal(0, 0.1, (20, 4)), rng.normal(2, 0.1, (20, 4))])
    mixed = rng.normal(0, 1, (40, 4))
    rows = discriminability_rows(
        {"A-Softmax": [(separated, labels)] * 2, "Softmax": [(mixed, labels), (separated, labels)]},
        {"A-Softmax": "cbam_angular", "Softmax": "cbam"},
        ("raw", "l2"),
    )
    by_key = {(r["loss"], r["features"]): r for r in rows}
    assert set(by_key) == {(loss, f) for loss in ("A-Softmax", "Softmax") for f in ("raw", "l2")}
    assert by_key[("A-Softmax", "raw")]["DBI_mean"] < by_key[("Softmax", "raw")]["DBI_mean"]
    assert by_key[("A-Softmax", "raw")]["DBI_std"] == 0.0 and by_key[("Softmax", "raw")]["n"] == 2


# ------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """RUN/data with 24 sphere cubes in folds 0-1 and RUN/train/<slug>/fold_1 (CBAM + A-Softmax, 1 epoch)."""
    run = tmp_path_factory.mktemp("run")
    data = run / "data"
    (data / "cubes").mkdir(parents=True)
    rng = np.random.default_rng(0)
    radius = np.sqrt(((np.mgrid[:32, :32, :32] - 15.5) ** 2).sum(0))
    rows = []
    for n in range(24):
        label = n % 2
        cube = rng.normal(0.2, 0.05, (32, 32, 32)).astype(np.float32)
        cube[radius < (8 if label else 4)] += 0.5
        np.save(data / "cubes" / f"n{n:02d}.npy", cube)
        rows.append(
            {"nodule_id": f"n{n:02d}", "patient_id": f"p{n // 2}", "series_uid": "s", "image": f"cubes/n{n:02d}.npy"}
            | {"label": label, "fold": (n // 2) % 2}
        )
    write_csv(data / "manifest.csv", rows, list(rows[0]))
    train_fold(read_manifest(data / "manifest.csv"), 1, run / "train" / spec_slug(TINY_SPEC), overrides=TINY_TRAINING)
    return run


QUICK = {
    "folds": [1],
    "ablation_variants": ["cbam", "cbam_angular"],
    "attention_examples": 2,
    "tsne": {"perplexity": 3, "seed": 0, "l2_normalize": False},
}


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_step_end_to_end(trained_run):
    run = trained_run
    summary = run_evaluate_step(run, config=QUICK)
    out = run / "analysis"
    assert summary["specs"] == [TINY_SPEC] and summary["folds"] == [1] and not summary["skipped"]
    for name in ("ablation.md", "ablation.csv", "discriminability.md", "discriminability.csv", "summary.json"):
        assert (out / name).is_file(), name
    for name in ("tsne.png", "attention.png", "gradcam.png", f"training_curves_{spec_slug(TINY_SPEC)}.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    # the channel-first A-Softmax setting is RUN/train's own: reused, not retrained; the Softmax one is trained here
    rows = {(r["spec"], r["variant"]): r for r in _csv(out / "ablation.csv")}
    assert rows[(TINY_SPEC, "cbam_angular")]["reused"] == "True"
    assert rows[(TINY_SPEC, "cbam")]["reused"] == "False"
    assert not (out / "ablation" / spec_slug(TINY_SPEC) / "cbam_angular").exists()
    assert (out / "ablation" / spec_slug(TINY_SPEC) / "cbam" / "fold_1" / "test_predictions.csv").is_file()
    trained_config = json.loads(
        (out / "ablation" / spec_slug(TINY_SPEC) / "cbam" / "fold_1" / "config.json").read_text(encoding="utf-8")
    )
    assert trained_config["loss_name"] == "softmax" and trained_config["max_epochs"] == 1  # RUN/train's setting
    assert int(rows[(TINY_SPEC, "cbam")]["params"]) > 0
    assert "published" in (out / "ablation.md").read_text(encoding="utf-8")

    disc = _csv(out / "discriminability.csv")
    ours = {(r["loss"], r["features"]) for r in disc if r["source"] == "ours"}
    assert ours == {(loss, f) for loss in ("Softmax", "A-Softmax") for f in ("raw", "l2")}
    assert {r["loss"] for r in disc if r["source"] == "published"} == {"Softmax", "A-Softmax"}
    assert all(float(r["DBI_mean"]) > 0 for r in disc)

    stamp = (out / "ablation.csv").stat().st_mtime_ns
    assert run_evaluate_step(run, config=QUICK)["skipped"]
    assert (out / "ablation.csv").stat().st_mtime_ns == stamp


def test_evaluate_step_hands_its_trainings_to_the_runner(trained_run, tmp_path):
    """With ``run_training_jobs`` the step first hands over exactly the trainings it needs (not RUN/train's reused
    setting), as train_fold jobs; it then only collects them, with the same rows as training them itself."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("analysis"))
    handed: list[dict] = []

    def runner(jobs: list[dict]) -> None:
        handed.extend(jobs)
        for job in jobs:
            train_fold_job(job)

    summary = run_evaluate_step(run, config=QUICK, run_training_jobs=runner)
    assert [(job["test_fold"], job["overrides"]["loss_name"]) for job in handed] == [(1, "softmax")]
    assert Path(handed[0]["out_dir"]) == run / "analysis" / "ablation" / spec_slug(TINY_SPEC) / "cbam"
    rows = {r["variant"]: r for r in _csv(run / "analysis" / "ablation.csv") if r["spec"] == TINY_SPEC}
    assert rows["cbam"]["reused"] == "False" and rows["cbam_angular"]["reused"] == "True"
    assert summary["folds"] == [1] and not summary["skipped"]
