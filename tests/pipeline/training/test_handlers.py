"""Tests of the validation-driven Ignite handlers: which epochs may become the best model, and early stopping."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine, Events

from naslung.pipeline.training.handlers import BestModelSaver, EarlyStopOnValidation

# validation scores per epoch, min_epoch, expected best epoch
BEST_CASES = [
    [[0.9, 0.5, 0.6, 0.7], 1, 1],  # every epoch eligible: the lucky first epoch wins
    [[0.9, 0.5, 0.6, 0.7], 3, 4],  # epochs 1-2 not eligible: the best of epochs 3-4
    [[0.9, 0.5, 0.8, 0.7], 3, 3],
    [[0.9, 0.5], 3, 1],  # the run ends before min_epoch: the first validation is kept
]


def _validations(scores: list[float], handler) -> Engine:
    """An evaluator-like engine whose epoch k reports ``scores[k - 1]`` as val_auc to ``handler``."""
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metric(e: Engine) -> None:
        e.state.metrics["val_auc"] = scores[e.state.epoch - 1]

    engine.add_event_handler(Events.EPOCH_COMPLETED, handler)
    engine.run([0], max_epochs=len(scores))
    return engine


@pytest.mark.parametrize("scores, min_epoch, expected", BEST_CASES)
def test_best_model_saver_min_epoch(tmp_path, scores, min_epoch, expected):
    network = torch.nn.Linear(2, 2)
    saver = BestModelSaver(tmp_path, network, "val_auc", min_epoch=min_epoch)
    _validations(scores, saver)
    record = json.loads((tmp_path / "best_model.json").read_text())
    assert record["epoch"] == expected
    assert record["score"] == pytest.approx(scores[expected - 1])
    assert record["eligible"] == (expected >= min_epoch)
    assert set(torch.load(tmp_path / "best_model.pt", weights_only=True)) == {"weight", "bias"}


def test_best_model_saver_resumed_record_without_eligibility_key(tmp_path):
    """A record written before ``eligible`` existed still counts as a best to beat."""
    (tmp_path / "best_model.json").write_text(json.dumps({"metric": "val_auc", "score": 0.8, "epoch": 2}))
    saver = BestModelSaver(tmp_path, torch.nn.Linear(2, 2), "val_auc")
    _validations([0.7], saver)
    assert json.loads((tmp_path / "best_model.json").read_text())["epoch"] == 2


@pytest.mark.parametrize("min_epoch, stopped_at", [[1, 3], [3, 5]])
def test_early_stop_ignores_validations_before_min_epoch(min_epoch, stopped_at):
    """Scores fall from epoch 2 on; with patience 2 the count starts at min_epoch's validation."""
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    evaluator = Engine(lambda e, b: None)
    trainer = Engine(lambda e, b: None)
    stopper = EarlyStopOnValidation(evaluator, "val_auc", patience=2, min_epoch=min_epoch)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _validate(t: Engine) -> None:
        evaluator.state.epoch = t.state.epoch
        evaluator.state.metrics["val_auc"] = scores[t.state.epoch - 1]

    stopper.attach(trainer)
    trainer.run([0], max_epochs=len(scores))
    assert trainer.state.epoch == stopped_at
