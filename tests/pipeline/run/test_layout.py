"""The run layout: every path of a run folder named once, and the trained networks found in it once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from naslung.pipeline.run.layout import (
    CHECKPOINT,
    FOLD_CONFIG,
    TEST_PREDICTIONS,
    RunLayout,
    TrainedNetwork,
    find_trained_networks,
    fold_dir_name,
    fold_of,
    spec_slug,
)

TEST_CASES_SLUG = [
    ["[4,4,[4,4],[4,8],[8,8]]", "4-4_4-4_4-8_8-8"],
    [[4, 4, [4, 4], [4, 8], [8, 8]], "4-4_4-4_4-8_8-8"],
    ["densenet121", "densenet121"],
    ["4-4_4-4_4-8_8-8", "4-4_4-4_4-8_8-8"],  # a slug is its own slug
    ["my net/v2", "my-net-v2"],
]


@pytest.mark.parametrize("spec, slug", TEST_CASES_SLUG)
def test_spec_slug(spec, slug):
    assert spec_slug(spec) == slug


@pytest.mark.parametrize("fold, name", [[0, "fold_0"], [12, "fold_12"], [None, "all"]])
def test_fold_names_round_trip(fold, name):
    assert fold_dir_name(fold) == name
    assert fold_of(name) == fold


@pytest.mark.parametrize("name", ["all", "fold_", "fold_x", "folds_1", "checkpoints"])
def test_fold_of_other_names(name):
    assert fold_of(name) is None


def test_run_paths():
    layout = RunLayout("RUN")
    root = Path("RUN")
    assert layout.manifest == root / "data" / "manifest.csv"
    assert layout.selected == root / "search" / "selected.json"
    assert layout.network_dir("[4,4,[4],[4],[8]]") == root / "train" / "4-4_4_4_8"
    assert layout.ensemble_predictions(3) == root / "ensemble" / "fold_3" / "predictions.csv"
    assert layout.ablation_dir("[4,4,[4],[4],[8]]", "cbam") == root / "analysis" / "ablation" / "4-4_4_4_8" / "cbam"
    assert layout.smoke == root / "bundles" / "smoke.json"
    assert (layout.report_md, layout.run_log) == (root / "report.md", root / "logs" / "run.log")
    assert TrainedNetwork("a", root / "train" / "a", (1,)).checkpoint_path(1) == (
        root / "train" / "a" / "fold_1" / "checkpoints" / "best_model.pt"
    )


def _touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_trained_networks_are_found_once(tmp_path):
    layout = RunLayout(tmp_path)
    # "a": two held-out folds with predictions, weights on fold 2 and on all data
    for fold in (2, 10):
        _touch(layout.train_dir / "a" / fold_dir_name(fold) / TEST_PREDICTIONS)
        _touch(layout.train_dir / "a" / fold_dir_name(fold) / FOLD_CONFIG, json.dumps({"arch": "[4,4,[4],[4],[8]]"}))
    _touch(layout.train_dir / "a" / "fold_2" / CHECKPOINT)
    _touch(layout.train_dir / "a" / "all" / CHECKPOINT)
    # "b": weights only (training stopped before the test predictions); "c": cross-validated metrics only
    _touch(layout.train_dir / "b" / "fold_0" / CHECKPOINT)
    _touch(layout.train_dir / "c" / "cv_metrics.json", "{}")
    # not trained: an empty network folder, a fold folder without outputs, a stray file
    (layout.train_dir / "empty" / "fold_1").mkdir(parents=True)
    _touch(layout.train_dir / "notes.txt")
    # a baseline
    _touch(layout.baselines_dir / "resnet18" / "fold_1" / TEST_PREDICTIONS)

    trained = layout.trained()
    assert list(trained) == ["a", "b", "c"]
    a = trained["a"]
    assert a.folds == (2, 10)  # numeric order
    assert a.weight_dirs == ("all", "fold_2")  # all data first, then by fold
    assert a.spec == "[4,4,[4],[4],[8]]" and a.config()["arch"] == a.spec
    assert a.predictions_path(10) == layout.train_dir / "a" / "fold_10" / TEST_PREDICTIONS
    assert (trained["b"].folds, trained["b"].weight_dirs, trained["b"].spec) == ((), ("fold_0",), "b")
    assert trained["c"].cv_metrics_path.is_file() and not trained["c"].folds
    assert list(layout.baselines()) == ["resnet18"] and layout.baselines()["resnet18"].folds == (1,)
    assert find_trained_networks(tmp_path / "missing") == {}


def test_bundles_are_folders_with_an_inference_config(tmp_path):
    layout = RunLayout(tmp_path)
    for name in ("naslung_ensemble", "naslung_classifier"):
        _touch(layout.bundle_dir(name) / "configs" / "inference.json", "{}")
    (layout.bundles_dir / "half_written").mkdir()
    assert [p.name for p in layout.bundles()] == ["naslung_classifier", "naslung_ensemble"]
