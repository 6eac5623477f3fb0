"""The supernet epoch loop of the DNAS search as an Ignite engine: the bilevel process function, the per-epoch
journal record, and the training handlers (epoch seeding, resumable checkpoint) that make a killed search resume
exactly where it stopped."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from naslung.networks.gumbel import TemperatureSchedule
from naslung.networks.spec import ArchSpec
from naslung.networks.supernet import CBAMSupernet3D
from naslung.pipeline.atomic_io import atomic_open
from naslung.pipeline.metrics import binary_metrics
from naslung.pipeline.progress import Progress, no_progress
from naslung.pipeline.training.handlers import EpochProgress, EpochSeedHandler, ResumableCheckpoint
from naslung.pipeline.training.step import predict

__all__ = ["PairedLoader", "BilevelUpdate", "SupernetEpochRecorder", "create_supernet_trainer"]

logger = logging.getLogger(__name__)


class PairedLoader:
    """Re-iterable pairs ``(weight_batch, arch_batch)`` of two data loaders; one epoch is the shorter loader.

    Each iteration creates the loaders' iterators at its first pair, after the engine's ``EPOCH_STARTED`` (where
    :class:`~naslung.pipeline.training.handlers.EpochSeedHandler` re-seeds the shuffling and the augmentations), and
    stops after ``len(self)`` pairs without drawing a batch from the longer loader, so an uninterrupted run and a
    resumed one draw the same random numbers.

    Args:
        weights: loader of the weight split (batches of ``{"image": (B, 1, D, H, W), "label": (B,)}``).
        arch: loader of the architecture split (same batches).
    """

    def __init__(self, weights: torch.utils.data.DataLoader, arch: torch.utils.data.DataLoader) -> None:
        self.weights, self.arch = weights, arch

    def __len__(self) -> int:
        return min(len(self.weights), len(self.arch))

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        weights, arch = iter(self.weights), iter(self.arch)
        for _ in range(len(self)):
            yield next(weights), next(arch)


class BilevelUpdate:
    """The process function of the DNAS trainer: one alternating bilevel step on a batch pair.

    First-order DARTS (Liu et al., ICLR 2019, sec. 2.3 with xi = 0) as CovidNet3D (He et al., AAAI 2021) runs it
    with Gumbel-Softmax sampling: from epoch ``warmup_epochs + 1`` on, one step of the architecture optimiser on
    the architecture batch, minimising ``CE + latency_weight * E[latency] / latency_scale``; then, in every epoch,
    one step of the weight optimiser on the weight batch, minimising ``CE`` with the weights' gradient norm
    clipped to ``grad_clip``. MONAI's ``SupervisedTrainer`` is not used: it steps one optimiser on one batch.

    Args:
        supernet: the supernet (its ``temperature`` is set per epoch by :func:`create_supernet_trainer`).
        weight_optimizer: optimiser of ``supernet.weight_parameters()``.
        arch_optimizer: optimiser of ``supernet.arch_parameters()``.
        device: where batches go.
        warmup_epochs: first epochs with weight steps only.
        grad_clip: largest L2 norm of the weights' gradient.
        latency_weight: weight of the expected-latency term (0: none).
        latency_table: per-operation latencies (ms), required when ``latency_weight > 0``.
        latency_scale: expected latency (ms) that makes the term unitless (uniform architecture probabilities).
    """

    def __init__(
        self,
        supernet: CBAMSupernet3D,
        weight_optimizer: torch.optim.Optimizer,
        arch_optimizer: torch.optim.Optimizer,
        device: torch.device,
        warmup_epochs: int,
        grad_clip: float,
        latency_weight: float = 0.0,
        latency_table: Mapping[str, float] | None = None,
        latency_scale: float = 1.0,
    ) -> None:
        if latency_weight > 0 and not latency_table:
            raise ValueError("BilevelUpdate: latency_weight > 0 needs a latency_table (measure_latency_table)")
        self.supernet, self.device = supernet, device
        self.weight_optimizer, self.arch_optimizer = weight_optimizer, arch_optimizer
        self.warmup_epochs, self.grad_clip = int(warmup_epochs), float(grad_clip)
        self.latency_weight, self.latency_table = float(latency_weight), dict(latency_table or {})
        self.latency_scale = float(latency_scale)
        self.loss_function = torch.nn.CrossEntropyLoss()

    def _loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logits = self.supernet(batch["image"].to(self.device))
        return self.loss_function(logits, batch["label"].to(self.device).long())

    def __call__(
        self, engine: Engine, batch: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]
    ) -> dict[str, float | None]:
        """One step on ``batch = (weight_batch, arch_batch)``.

        Returns:
            ``{"weight_loss": float, "arch_loss": float or None}`` (None in warm-up epochs).
        """
        weight_batch, arch_batch = batch
        arch_loss = None
        if engine.state.epoch > self.warmup_epochs:  # the architecture step first, as CovidNet3D
            self.arch_optimizer.zero_grad()
            loss = self._loss(arch_batch)
            if self.latency_weight > 0:
                latency = self.supernet.expected_latency(self.latency_table) / self.latency_scale
                loss = loss + self.latency_weight * latency
            loss.backward()
            self.arch_optimizer.step()
            arch_loss = loss.item()
        self.weight_optimizer.zero_grad()
        loss = self._loss(weight_batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.supernet.weight_parameters(), self.grad_clip)
        self.weight_optimizer.step()
        return {"weight_loss": loss.item(), "arch_loss": arch_loss}


class SupernetEpochRecorder:
    """The journal of the supernet epochs: at each epoch end one record, appended to ``journal.jsonl``.

    A record holds the epoch, the temperature, whether the architecture was updated, the mean losses, the spec
    derived by ``derive`` and its log-probability, the arg-max sub-network's spec and its F1 and accuracy on
    ``arch_data`` (eval mode), the expected latency (ms, with a latency table), the architecture probabilities and
    the epoch's seconds. The records are the recorder's ``state_dict``, so they live in the checkpoint and the
    checkpoint's records win over a journal torn by a kill.

    Args:
        supernet: the supernet being trained.
        derive: the supernet -> its most probable spec of the search space and that spec's log-probability.
        arch_data: items (``image``, ``label``, ``nodule_id``) the arg-max sub-network is scored on.
        journal_path: the ``journal.jsonl`` to write.
        device: where the sub-network is scored.
        batch_size: scoring batch size.
        warmup_epochs: first epochs without architecture steps (as in :class:`BilevelUpdate`).
        latency_table: per-operation latencies (ms) for ``expected_latency_ms`` (empty: None).
    """

    def __init__(
        self,
        supernet: CBAMSupernet3D,
        derive: Callable[[CBAMSupernet3D], tuple[ArchSpec, float]],
        arch_data: Sequence[Mapping[str, Any]],
        journal_path: Path,
        device: torch.device,
        batch_size: int,
        warmup_epochs: int,
        latency_table: Mapping[str, float] | None = None,
    ) -> None:
        self.warmup_epochs = int(warmup_epochs)
        self.supernet, self.derive, self.arch_data = supernet, derive, [dict(d) for d in arch_data]
        self.journal_path, self.device, self.batch_size = Path(journal_path), device, int(batch_size)
        self.latency_table = dict(latency_table or {})
        self.records: list[dict[str, Any]] = []
        self.resumed_epochs = 0
        self._losses: dict[str, list[float]] = {"weight_loss": [], "arch_loss": []}
        self._epoch_start = 0.0

    def state_dict(self) -> dict[str, Any]:
        """``{"records": [...]}``: plain numbers, strings and lists, so the checkpoint loads ``weights_only``."""
        return {"records": list(self.records)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take the records of a checkpoint; they count as the resumed epochs."""
        self.records = [dict(r) for r in state["records"]]
        self.resumed_epochs = len(self.records)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.start_epoch)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.record)

    def start_epoch(self, engine: Engine) -> None:
        """Reset the epoch's losses and start its timer."""
        self._losses = {"weight_loss": [], "arch_loss": []}
        self._epoch_start = time.perf_counter()

    def collect(self, engine: Engine) -> None:
        """Keep the losses of the step just run (the process function's output)."""
        for key, values in self._losses.items():
            if engine.state.output[key] is not None:
                values.append(float(engine.state.output[key]))

    def write_journal(self, engine: Engine | None = None) -> None:
        """Rewrite ``journal.jsonl`` from the records, atomically."""
        with atomic_open(self.journal_path, "w", encoding="utf-8") as handle:
            for record in self.records:
                handle.write(json.dumps(record, default=str) + "\n")

    def record(self, engine: Engine) -> None:
        """Append the finished epoch's record and rewrite the journal."""
        derived, log_prob = self.derive(self.supernet)
        rows = predict(self.supernet, self.arch_data, self.device, self.batch_size)  # eval: the arg-max sub-network
        metrics = binary_metrics([r["label"] for r in rows], [r["probability"] for r in rows])
        weight_losses, arch_losses = self._losses["weight_loss"], self._losses["arch_loss"]
        record = {
            "epoch": int(engine.state.epoch),
            "temperature": self.supernet.temperature,
            "arch_updates": engine.state.epoch > self.warmup_epochs,
            "weight_loss": float(np.mean(weight_losses)) if weight_losses else math.nan,
            "arch_loss": float(np.mean(arch_losses)) if arch_losses else None,
            "spec": str(derived),
            "log_probability": log_prob,
            "argmax_spec": str(self.supernet.spec_of(self.supernet.argmax_choices())),
            "f1": float(metrics["f1"]),
            "accuracy": float(metrics["accuracy"]),
            "expected_latency_ms": self.supernet.expected_latency(self.latency_table).item()
            if self.latency_table
            else None,
            "probabilities": self.supernet.probabilities(),
            "seconds": time.perf_counter() - self._epoch_start,
        }
        self.records.append(record)
        self.write_journal()
        logger.info(
            "DNAS epoch %d/%d: tau %.3f, derived %s (arg-max sub-network F1 %.4f on the architecture half)",
            engine.state.epoch, engine.state.max_epochs, self.supernet.temperature, derived, record["f1"],
        )  # fmt: skip


def create_supernet_trainer(
    update: BilevelUpdate,
    recorder: SupernetEpochRecorder,
    data: PairedLoader,
    schedule: TemperatureSchedule,
    seed: int,
    checkpoint: Path,
    max_epochs: int,
    progress: Progress = no_progress,
) -> Engine:
    """The DNAS supernet trainer: an Ignite engine over ``data`` whose process function is ``update``.

    Its handlers, in the order they run at each event:

    - ``EPOCH_STARTED``: train mode and the epoch's Gumbel-Softmax temperature ``schedule(epoch - 1)``; the
      training's :class:`~naslung.pipeline.training.handlers.EpochSeedHandler` on both loaders (seeds ``seed`` for the
      weight split and ``seed + 1`` for the architecture split); the recorder's epoch timer.
    - ``EPOCH_COMPLETED``: the recorder's journal record, then the training's
      :class:`~naslung.pipeline.training.handlers.ResumableCheckpoint` into ``checkpoint`` (supernet, both optimisers,
      the records, the engine's epoch), which loads with ``weights_only=True``.
    - ``STARTED``: the checkpoint is loaded, the journal rewritten from its records, the requested ``max_epochs``
      restored (a search resumed with more epochs than its checkpoint's run goes on), and a progress bar over the
      epochs left is opened.

    As each epoch's randomness (shuffling, augmentation, Gumbel noise) comes from ``(seed, epoch)`` alone, a search
    killed during an epoch and run again resumes after its last finished epoch and ends with the records and
    weights an uninterrupted search ends with. Run it with ``engine.run(data, max_epochs=max_epochs)``.

    Args:
        update: the process function (holds the supernet and both optimisers).
        recorder: the per-epoch journal.
        data: the paired weight and architecture loaders (each built with a ``generator``).
        schedule: temperature of each 0-based epoch.
        seed: the search's seed.
        checkpoint: the checkpoint file (``supernet.pt``).
        max_epochs: supernet epochs in all, including those of the checkpoint.
        progress: reporter of the epochs (the CLI's bar; silent by default).
    """
    engine = Engine(update)
    supernet = update.supernet

    def start_epoch(engine: Engine) -> None:
        supernet.train()
        supernet.temperature = schedule(engine.state.epoch - 1)

    def keep_requested_epochs(engine: Engine) -> None:
        # the checkpoint holds the max_epochs of the run that wrote it; the epochs asked for now win
        engine.state.max_epochs = max(int(max_epochs), int(engine.state.epoch))

    engine.add_event_handler(Events.EPOCH_STARTED, start_epoch)
    EpochSeedHandler(seed, data.weights).attach(engine)
    EpochSeedHandler(seed + 1, data.arch).attach(engine)
    recorder.attach(engine)
    save_dict = {
        "supernet": supernet,
        "weight_opt": update.weight_optimizer,
        "arch_opt": update.arch_optimizer,
        "records": recorder,
    }
    ResumableCheckpoint(checkpoint.parent, save_dict, filename=checkpoint.name).attach(engine)
    engine.add_event_handler(Events.STARTED, recorder.write_journal)
    engine.add_event_handler(Events.STARTED, keep_requested_epochs)
    EpochProgress(progress, desc="DNAS epochs").attach(engine)
    return engine
