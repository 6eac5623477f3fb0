"""Training with MONAI engines: one epoch runs, a killed run resumes to the same weights, outputs are written."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

from naslung.pipeline.atomic_io import write_csv
from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.errors import ConfigError
from naslung.pipeline.training.lr_schedule import build_lr_scheduler
from naslung.pipeline.training.step import attach_progress_bar, load_train_config, train_fold

TINY = {"arch": "[4,4,[4],[4],[4]]", "batch_size": 8, "val_fraction": 0.3, "seed": 3}


@pytest.fixture(scope="module")
def cube_datalist(tmp_path_factory):
    """24 cubes in 4 folds: malignant ones hold a large bright sphere, benign ones a small one."""
    root = tmp_path_factory.mktemp("cubes")
    rng = np.random.default_rng(0)
    radius = np.sqrt(((np.mgrid[:32, :32, :32] - 15.5) ** 2).sum(0))
    rows = []
    for n in range(24):
        label = n % 2
        cube = rng.normal(0.2, 0.05, (32, 32, 32)).astype(np.float32)
        cube[radius < (8 if label else 4)] += 0.5
        np.save(root / f"n{n}.npy", cube)
        rows.append(
            dict(
                nodule_id=f"n{n}", patient_id=f"p{n // 2}", series_uid="s", image=f"n{n}.npy", label=label, fold=n // 6
            )
        )
    write_csv(root / "manifest.csv", rows, list(rows[0]))
    return read_manifest(root / "manifest.csv")


def _weights(fold_dir):
    return torch.load(fold_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_one_epoch_writes_outputs(cube_datalist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where MLFlowHandler would put its default ./mlruns.db
    assert load_train_config()["mlflow_tracking_uri"] is None  # MLflow is off unless a URI is given
    result = train_fold(cube_datalist, 1, tmp_path, overrides={**TINY, "max_epochs": 1})
    fold_dir = tmp_path / "fold_1"
    for name in ("metrics.json", "history.jsonl", "val_predictions.csv", "test_predictions.csv", "done.json"):
        assert (fold_dir / name).is_file(), name
    best = torch.load(fold_dir / "checkpoints" / "best_model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in best.values())  # a plain state_dict
    assert result["n_test"] == 6 and result["epochs_run"] == 1
    assert set(result["test"]) >= {"accuracy", "sensitivity", "specificity", "f1", "auc"}
    assert json.loads((fold_dir / "metrics.json").read_text(encoding="utf-8"))["test"] == result["test"]
    assert not list(tmp_path.glob("**/mlruns*"))


def test_rerun_is_skipped(cube_datalist, tmp_path):
    train_fold(cube_datalist, 2, tmp_path, overrides={**TINY, "max_epochs": 1})
    stamp = (tmp_path / "fold_2" / "metrics.json").stat().st_mtime_ns
    train_fold(cube_datalist, 2, tmp_path, overrides={**TINY, "max_epochs": 1})
    assert (tmp_path / "fold_2" / "metrics.json").stat().st_mtime_ns == stamp


class _Killed(RuntimeError):
    pass


def test_killed_run_resumes_to_identical_weights(cube_datalist, tmp_path, monkeypatch):
    settings = {**TINY, "max_epochs": 2}
    full = train_fold(cube_datalist, 0, tmp_path / "full", overrides=settings)

    # kill the second run in the middle of epoch 2, then run the same command again
    from monai.engines import SupervisedTrainer

    original_run = SupervisedTrainer.run

    def run_and_die(self, *args, **kwargs):
        def die(engine):
            if engine.state.epoch == 2:
                raise _Killed("simulated kill")

        self.add_event_handler(Events.ITERATION_COMPLETED(once=4), die)
        return original_run(self, *args, **kwargs)

    monkeypatch.setattr(SupervisedTrainer, "run", run_and_die)
    with pytest.raises(_Killed):
        train_fold(cube_datalist, 0, tmp_path / "killed", overrides=settings)
    assert not (tmp_path / "killed" / "fold_0" / "metrics.json").exists()
    monkeypatch.setattr(SupervisedTrainer, "run", original_run)
    resumed = train_fold(cube_datalist, 0, tmp_path / "killed", overrides=settings)

    a, b = _weights(tmp_path / "full" / "fold_0"), _weights(tmp_path / "killed" / "fold_0")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert resumed["test"] == full["test"]


def test_unknown_override_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown training config key 'max_epoch'"):
        load_train_config(overrides={"max_epoch": 3})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_train_config(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "spec, slug",
    [
        ("[4,4,[4,4],[4,8],[8,8]]", "4-4_4-4_4-8_8-8"),
        ([4, 4, [16], [32, 32], [64]], "4-4_16_32-32_64"),
        ("densenet121", "densenet121"),
    ],
)
def test_spec_slug(spec, slug):
    from naslung.pipeline.training.step import spec_slug

    assert spec_slug(spec) == slug


def test_predict_keeps_nodule_ids_and_order(cube_datalist):
    from naslung.networks import build_network
    from naslung.pipeline.training.step import predict

    network = build_network("[4,4,[4],[4],[4]]").eval()
    rows = predict(network, cube_datalist[:5], batch_size=2)
    assert [r["nodule_id"] for r in rows] == [d["nodule_id"] for d in cube_datalist[:5]]
    assert [r["label"] for r in rows] == [d["label"] for d in cube_datalist[:5]]
    assert all(0.0 <= r["probability"] <= 1.0 for r in rows)


def test_mlflow_tracking_logs_the_run(cube_datalist, tmp_path):
    """With ``mlflow_tracking_uri`` set, MONAI's MLFlowHandler records params, losses and validation metrics."""
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("alembic")  # MLflow's SQLite store migrates its schema with alembic
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    overrides = {**TINY, "max_epochs": 1, "mlflow_tracking_uri": uri}
    result = train_fold(cube_datalist, 1, tmp_path / "run", overrides=overrides)

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("naslung")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run/fold_1" and run.info.status == "FINISHED"
    assert run.data.params["arch"] == TINY["arch"] and run.data.params["seed"] == str(TINY["seed"])
    val_f1 = client.get_metric_history(run.info.run_id, "val_f1")
    assert [m.step for m in val_f1] == [1]
    assert [m.value for m in val_f1] == pytest.approx([h["val_f1"] for h in result["history"]])
    iterations_per_epoch = -(-result["n_train"] // TINY["batch_size"])
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == iterations_per_epoch
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.json"]


def test_checkpoint_keeps_the_amp_grad_scaler(tmp_path):
    """The trainer's GradScaler (MONAI sets ``engine.scaler`` with ``amp=True``) is saved and restored on resume."""
    from ignite.engine import Engine

    from naslung.pipeline.training.handlers import ResumableCheckpoint

    def engine_with_scaler(init_scale: float) -> Engine:
        engine = Engine(lambda engine, batch: None)
        engine.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
        ResumableCheckpoint(tmp_path, {}).attach(engine)
        return engine

    engine_with_scaler(64.0).run([0, 1], max_epochs=1)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["scaler"]["scale"] == 64.0
    resumed = engine_with_scaler(8.0)
    resumed.run([0, 1], max_epochs=1)  # loads the checkpoint at STARTED
    assert resumed.scaler.get_scale() == 64.0


def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


@pytest.mark.parametrize(
    "schedule, kwargs, checks",
    [
        ["cosine", {"warmup_iterations": 10}, {0: 1e-4, 10: 1e-3, 99: 1e-5}],
        ["cosine", {}, {0: 1e-3, 50: 5.05e-4}],
        ["step", {"milestones": [30, 60]}, {29: 1e-3, 30: 1e-4, 60: 1e-5}],
        ["constant", {}, {0: 1e-3, 99: 1e-3}],
    ],
)
def test_lr_schedules(schedule, kwargs, checks):
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    values = _lrs(build_lr_scheduler(optimizer, schedule, total_iterations=100, **kwargs), optimizer, 100)
    for step, expected in checks.items():
        assert values[step] == pytest.approx(expected, rel=0.05), step
    if schedule == "cosine":
        after_warmup = values[kwargs.get("warmup_iterations", 0) :]
        assert all(a >= b for a, b in zip(after_warmup, after_warmup[1:], strict=False))


def test_unknown_lr_schedule_is_a_config_error():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ConfigError, match="lr_schedule"):
        build_lr_scheduler(optimizer, "exponential", 10)


@pytest.mark.parametrize(
    "overrides, message",
    [
        [{"checkpoint_metric": "loss"}, "checkpoint_metric 'loss'"],
        [{"rotate90_prob": 1.5}, "rotate90_prob 1.5"],
        [{"lambda_floor_fraction": 0.0}, "lambda_floor_fraction 0.0"],
        [{"lambda_min": 0.0}, "lambda_min 0.0"],
        [{"lambda_min": 2000}, "lambda_min 2000"],
    ],
)
def test_out_of_range_recipe_values_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(overrides=overrides)


def test_lambda_min_reaches_the_loss():
    """The training config's ``lambda_min`` is A-Softmax's floor, reached at ``lambda_floor_fraction`` of the run."""
    parser = ConfigParser(load_train_config(overrides={"lambda_min": 10.0, "lambda_floor_fraction": 0.5}))
    parser["train_data"] = [{}] * 64  # 2 iterations per epoch at the packaged batch size of 32
    loss = parser.get_parsed_content("loss")
    floor_iteration = parser.get_parsed_content("lambda_floor_iteration")
    assert loss.schedule.lambda_min == 10.0
    assert loss.schedule(floor_iteration - 1) > 10.0
    assert loss.schedule(floor_iteration) == pytest.approx(10.0)


def test_recipe_values_may_be_expressions():
    merged = load_train_config(overrides={"rotate90_prob": "$0.25", "lambda_floor_fraction": None})
    assert merged["rotate90_prob"] == "$0.25"


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_attach_progress_bar_advances_per_epoch_on_a_log(terminal):
    """On a terminal the bar redraws every iteration; on a log once or twice an epoch (Ignite redraws on every event
    it handles, whatever tqdm's interval)."""
    stream = _Terminal() if terminal else io.StringIO()
    engine = Engine(lambda e, b: {"loss": 0.5})
    attach_progress_bar(engine, "train fold_0", lambda out: {"loss": out["loss"]}, stream=stream)
    engine.run(range(50), max_epochs=3)
    redraws = stream.getvalue().count("%|")
    if terminal:
        assert redraws >= 3 * 50
    else:
        assert 3 <= redraws <= 3 * 3, stream.getvalue()
