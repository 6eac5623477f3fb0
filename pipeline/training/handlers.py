"""Ignite handlers for naslung's engines: epoch seeding, resumable checkpoints, best-model saving, predictions."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping, TerminateOnNan
from monai.data.utils import set_rnd

from naslung.pipeline.atomic_io import atomic_path, write_json
from naslung.pipeline.progress import Progress

__all__ = [
    "EpochSeedHandler",
    "ResumableCheckpoint",
    "BestModelSaver",
    "EarlyStopOnValidation",
    "TerminateOnNanLoss",
    "PredictionCollector",
    "EpochProgress",
]

logger = logging.getLogger(__name__)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed derived from (seed, epoch) so every epoch's randomness is reproducible on its own."""
    # shift a Python int: NumPy 1.x (bundles run there too, e.g. under MONAI Label) cannot shift uint64 by an int
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0]) >> 1


class EpochSeedHandler:
    """Seed the data order and augmentations of each epoch from ``(seed, epoch)``.

    Attached to a trainer, at ``EPOCH_STARTED`` it re-seeds the data loader's ``generator`` (which draws the
    shuffling order and the workers' base seed) and, for ``num_workers == 0``, the random transforms of the
    dataset. Ignite creates an epoch's data iterator after ``EPOCH_STARTED``, both in an uninterrupted run and
    after a resume, so a run resumed at an epoch boundary sees exactly the batches an uninterrupted one sees.

    Args:
        seed: the run's seed.
        loader: the training ``DataLoader``; it must have been built with a ``generator``.
    """

    def __init__(self, seed: int, loader: torch.utils.data.DataLoader) -> None:
        if loader.generator is None:
            raise ValueError("EpochSeedHandler needs a DataLoader built with generator=torch.Generator()")
        self.seed, self.loader = int(seed), loader

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        epoch_seed = _epoch_seed(self.seed, engine.state.epoch)
        self.loader.generator.manual_seed(epoch_seed)
        if self.loader.num_workers == 0:
            set_rnd(self.loader.dataset, epoch_seed)
        torch.manual_seed(epoch_seed)


class ResumableCheckpoint:
    """Save everything needed to resume at each epoch end, and load it when the engine starts.

    The checkpoint ``save_dir/filename`` holds the ``state_dict`` of every object in ``save_dict`` (model,
    optimiser, scheduler, loss), of the engine it is attached to (key ``"trainer"``: epoch, iteration) and of the
    engine's AMP ``GradScaler`` when it has one (key ``"scaler"``, MONAI's ``SupervisedTrainer(amp=True)`` on CUDA).
    It is written to a temporary file and renamed, so a kill never leaves a torn checkpoint. At ``STARTED``
    an existing checkpoint is loaded, and Ignite resumes from the stored epoch.

    Args:
        save_dir: folder of the checkpoint.
        save_dict: name -> object with ``state_dict``/``load_state_dict``.
        filename: checkpoint file name.
        save_interval: save every this many epochs.
    """

    def __init__(
        self, save_dir: str | os.PathLike, save_dict: dict[str, Any], filename: str = "last.pt", save_interval: int = 1
    ) -> None:
        self.path = Path(save_dir) / filename
        self.save_dict = {k: v for k, v in save_dict.items() if v is not None}
        self.save_interval = max(1, int(save_interval))

    def attach(self, engine: Engine) -> None:
        self.save_dict.setdefault("trainer", engine)
        scaler = getattr(engine, "scaler", None)
        if scaler is not None:
            self.save_dict.setdefault("scaler", scaler)
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def save(self, engine: Engine) -> None:
        state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        logger.debug("saved %s at epoch %d", self.path, engine.state.epoch)

    def load(self, engine: Engine) -> None:
        if not self.path.is_file():
            return
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        for name, obj in self.save_dict.items():
            if name in state:
                obj.load_state_dict(state[name])
        logger.info("resumed from %s at epoch %d, iteration %d", self.path, engine.state.epoch, engine.state.iteration)


class BestModelSaver:
    """Keep the network weights of the best validation score as a plain ``state_dict`` (``weights_only`` safe).

    Attached to an evaluator (whose ``state.epoch`` MONAI sets to the trainer's epoch). The best score and its
    epoch live in ``<filename>.json`` beside the weights, so a resumed run keeps comparing against the true
    best, not against the first score after the resume. Ties keep the earlier model.

    Validations before ``min_epoch`` are not candidates, except that the first validation is kept until an
    eligible one replaces it (so a run stopped early still leaves a model). On a validation split of ~90
    nodules, AUC moves by ~0.03 between epochs, so a lucky early epoch can win over the trained network:
    standard profile run 1 kept epoch 1 of 12 for one member (``benchmarks/results/standard_run_1/members.json``).

    Args:
        save_dir: folder of the weights.
        network: the module whose ``state_dict`` is saved.
        metric_name: key in ``engine.state.metrics`` (higher is better).
        filename: weights file name.
        min_epoch: first trainer epoch whose validation may become the best model (1: every epoch).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: torch.nn.Module,
        metric_name: str,
        filename: str = "best_model.pt",
        min_epoch: int = 1,
    ) -> None:
        self.path = Path(save_dir) / filename
        self.record_path = self.path.with_suffix(".json")
        self.network, self.metric_name = network, metric_name
        self.min_epoch = int(min_epoch)

    @property
    def best(self) -> dict[str, Any] | None:
        """The stored best record ``{"score", "epoch"}``, or None before the first validation."""
        if not self.record_path.is_file():
            return None
        return json.loads(self.record_path.read_text(encoding="utf-8"))

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        score = float(engine.state.metrics[self.metric_name])
        epoch = int(engine.state.epoch)
        best = self.best
        if best is not None and epoch < self.min_epoch:
            return
        if best is not None and best.get("eligible", True) and not (np.isfinite(score) and score > best["score"]):
            return
        if best is None and not np.isfinite(score):
            score = -1.0  # keep a first model even when the metric is undefined on this split
        with atomic_path(self.path) as tmp:
            # CPU tensors, so the file loads anywhere (a GPU-trained network's weights on a CPU-only machine too)
            torch.save({key: value.detach().cpu() for key, value in self.network.state_dict().items()}, tmp)
        record = {"metric": self.metric_name, "score": score, "epoch": epoch, "eligible": epoch >= self.min_epoch}
        write_json(self.record_path, record)
        logger.info("new best %s = %.4f at epoch %s", self.metric_name, score, epoch)


class EarlyStopOnValidation:
    """Stop training when a validation metric has not improved for ``patience`` validations.

    Attached to the trainer after its ``ValidationHandler``, it reads the evaluator's latest metrics at each
    epoch end where a validation ran; ``patience <= 0`` disables it. Validations before ``min_epoch`` are not
    counted (the same epochs :class:`BestModelSaver` does not consider).

    Args:
        evaluator: the validation engine.
        metric_name: key in ``evaluator.state.metrics`` (higher is better).
        patience: validations without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
        min_epoch: first trainer epoch whose validation counts.
    """

    def __init__(
        self, evaluator: Engine, metric_name: str, patience: int, min_delta: float = 0.0, min_epoch: int = 1
    ) -> None:
        self.evaluator, self.metric_name = evaluator, metric_name
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.min_epoch = int(min_epoch)
        self._stopper: EarlyStopping | None = None
        self._last_seen = -1

    def attach(self, engine: Engine) -> None:
        if self.patience <= 0:
            return
        self._stopper = EarlyStopping(self.patience, self._score, engine, threshold=self.min_delta)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _score(self, engine: Engine) -> float:
        return float(self.evaluator.state.metrics[self.metric_name])

    def __call__(self, engine: Engine) -> None:
        if self._stopper is None or self.evaluator.state.epoch == self._last_seen:
            return  # no new validation this epoch
        self._last_seen = self.evaluator.state.epoch
        if self.evaluator.state.epoch < self.min_epoch:
            return
        if self.metric_name in self.evaluator.state.metrics:
            self._stopper(engine)


class TerminateOnNanLoss:
    """Ignite's ``TerminateOnNan`` on the training loss, with the ``attach`` MONAI's handler lists expect."""

    def __init__(self, loss_key: str = "loss") -> None:
        self.loss_key = loss_key
        self._handler = TerminateOnNan(output_transform=self._loss)

    def _loss(self, output: Any) -> torch.Tensor:
        item = output[0] if isinstance(output, (list, tuple)) else output
        return torch.as_tensor(item[self.loss_key])

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._handler)


class PredictionCollector:
    """Collect per-item malignancy probabilities and labels from an evaluator's decollated output.

    After a run, ``rows`` holds one dict per item: ``nodule_id`` (from the batch's ``nodule_id`` key, when
    present), ``label`` and ``probability`` (softmax of the 2-class logits, class 1 = malignant).
    """

    def __init__(self, id_key: str = "nodule_id") -> None:
        self.id_key = id_key
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def reset(self, engine: Engine | None = None) -> None:
        self.rows = []

    def __call__(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        if isinstance(batch, dict):  # not decollated: one list of ids for the batch
            ids = batch.get(self.id_key)
            batch_ids = [ids[i] if ids is not None else None for i in range(len(output))]
        else:  # MONAI engines decollate the batch into one dict per item
            batch_ids = [item.get(self.id_key) if isinstance(item, dict) else None for item in batch]
        for item, nodule_id in zip(output, batch_ids, strict=True):
            logits = torch.as_tensor(item["pred"]).float().flatten()
            probability = float(torch.softmax(logits, dim=0)[1])
            label = int(torch.as_tensor(item["label"]).flatten()[0])
            self.rows.append(
                {
                    "nodule_id": str(nodule_id) if nodule_id is not None else str(len(self.rows)),
                    "label": label,
                    "probability": probability,
                }
            )


class EpochProgress:
    """Report the epochs an engine runs through a :class:`~naslung.pipeline.progress.Progress` reporter (the
    CLI's tqdm bar; silent by default), as ``for epoch in progress(range(first, max_epochs)): ...`` would.

    Attach it after :class:`ResumableCheckpoint`: at ``STARTED`` it sees the resumed epoch, so the bar counts
    the epochs left. It advances at each ``EPOCH_COMPLETED`` and is closed at ``COMPLETED`` (also when a handler
    terminated the run early). No ``EXCEPTION_RAISED`` handler is added, since one would make Ignite swallow the
    exception.

    Args:
        progress: the reporter.
        desc: the bar's label.
    """

    def __init__(self, progress: Progress, desc: str = "epochs") -> None:
        self.progress, self.desc = progress, desc
        self._ticks: Iterator[int] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.open)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.advance)
        engine.add_event_handler(Events.COMPLETED, self.close)

    def open(self, engine: Engine) -> None:
        first, last = int(engine.state.epoch), int(engine.state.max_epochs or 0)
        self._ticks = iter(self.progress(range(first, last), total=max(last - first, 0), desc=self.desc))
        next(self._ticks, None)  # a bar shows 0 done once its first item is drawn

    def advance(self, engine: Engine) -> None:
        if self._ticks is not None:
            next(self._ticks, None)

    def close(self, engine: Engine | None = None) -> None:
        close = getattr(self._ticks, "close", None)
        if close is not None:
            close()
        self._ticks = None
