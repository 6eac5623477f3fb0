"""One search candidate: trained briefly on the search folds, scored on their validation split, and profiled."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from naslung.networks import ATTENTION_OPTIONS, LOSSES, count_macs, count_parameters
from naslung.networks import profile as profile_network
from naslung.pipeline.errors import ConfigError, DataError, SearchError
from naslung.pipeline.search.latency_table import LatencyTable
from naslung.pipeline.search.space import arch_to_text
from naslung.pipeline.training.step import load_train_config, spec_slug, train_fold

__all__ = [
    "METRIC_KEYS",
    "best_validation_epoch",
    "search_datalist",
    "candidate_overrides",
    "build_candidate_network",
    "resolve_device",
    "CandidateEvaluator",
    "CandidateProfiler",
]

logger = logging.getLogger(__name__)

#: Validation metrics copied from ``train_fold``'s result into a journal record.
METRIC_KEYS = ("f1", "accuracy", "sensitivity", "specificity", "auc")

#: Shape of one nodule without the batch axis, (C, D, H, W).
NODULE_SHAPE = (1, 32, 32, 32)


def best_validation_epoch(history: Sequence[Mapping[str, Any]], metric: str) -> tuple[int, dict[str, float]] | None:
    """The validation of a training run with the best ``metric``, and all its validation metrics.

    A training run validates after each epoch (``history.jsonl``: ``{"epoch", "val_f1", "val_auc", ...}``); its
    score for ``metric`` is the best of these (ties: the earlier epoch; non-finite values are skipped), and the
    other metrics are those of that same validation. This is how both a search candidate and a retrained network
    are scored, whatever metric picks the training's saved checkpoint.

    Args:
        history: the per-validation records of :func:`naslung.pipeline.training.step.train_fold`
            (``result["history"]``).
        metric: ``"auc"``, ``"f1"``, ``"accuracy"``, ``"sensitivity"`` or ``"specificity"``.

    Returns:
        ``(epoch, {metric name: value})`` without the ``val_`` prefix, or ``None`` when no validation has a finite
        ``metric``.
    """
    best: tuple[int, dict[str, float]] | None = None
    best_value = -math.inf
    for row in history:
        try:
            value = float(row.get(f"val_{metric}", math.nan))
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > best_value:
            metrics = {k[len("val_") :]: float(v) for k, v in row.items() if k.startswith("val_")}
            best, best_value = (int(row.get("epoch", 0)), metrics), value
    return best


def search_datalist(datalist: Sequence[Mapping[str, Any]], test_folds: Iterable[int]) -> list[dict[str, Any]]:
    """The part of the cohort the search may see: every nodule whose fold is not an evaluation (test) fold.

    The search picks architectures, so it is model selection: no nodule of a fold later held out for testing may
    take part in it, neither for training nor for validation.

    Args:
        datalist: the whole cohort (items with ``fold``).
        test_folds: the folds of the later cross-validation (the paper: 1-5).

    Raises:
        DataError: when no nodule lies outside ``test_folds``.
    """
    held_out = {int(f) for f in test_folds}
    kept = [dict(item) for item in datalist if int(item["fold"]) not in held_out]
    if not kept:
        folds = sorted({int(item["fold"]) for item in datalist})
        raise DataError(
            f"every nodule lies in an evaluation fold (folds present {folds}, test_folds {sorted(held_out)}); the "
            "search trains and validates only on other folds (the paper tests on folds 1-5 = LUNA16 subsets 0-4; "
            "the search uses subsets 5-9). "
            "Prepare data with more folds or set test_folds in the search config"
        )
    logger.info("search data: %d of %d nodules (folds %s)", len(kept), len(datalist), sorted({d["fold"] for d in kept}))
    return kept


def candidate_overrides(
    spec: Any,
    *,
    epochs: int,
    attention: str,
    loss_name: str,
    seed: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Training-config overrides (MONAI ``#`` ids) for one candidate: ``extra`` then arch, attention, loss, epochs."""
    return {
        **dict(extra or {}),
        "arch": arch_to_text(spec),
        "attention": attention,
        "loss_name": loss_name,
        "max_epochs": int(epochs),
        "seed": int(seed),
    }


def build_candidate_network(spec: Any, train_config: Mapping[str, Any]) -> torch.nn.Module:
    """The untrained network of ``spec`` exactly as training builds it (the config's ``network_def``).

    Args:
        spec: the architecture (any form :func:`~naslung.pipeline.search.space.arch_to_text` takes).
        train_config: a merged training config (:func:`naslung.pipeline.training.step.load_train_config`).
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser(copy.deepcopy(dict(train_config)))
    parser["arch"] = arch_to_text(spec)
    try:
        return parser.get_parsed_content("network_def")
    except Exception as err:
        raise SearchError(f"cannot build candidate {arch_to_text(spec)} from the training config: {err}") from err


def resolve_device(device: str | None) -> str:
    """``None`` or ``"auto"``: the current device (``"cuda"`` when available, else ``"cpu"``); else ``device``.

    Raises:
        ConfigError: for a string that is not a torch device, or CUDA asked for where there is none.
    """
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(str(device))
    except RuntimeError as err:
        raise ConfigError(f"latency_device {device!r} is not a torch device such as 'cpu' or 'cuda:0' ({err})") from err
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"latency_device {device!r} asks for CUDA but none is available here; use 'cpu' or null")
    return str(device)


class CandidateEvaluator:
    """Trains one candidate for a few epochs on the search data and returns its journal record.

    Re-implements the performance estimation of NAS-Lung's search (sec. 3.4 and 4.1: each candidate trained for 10
    epochs, scored by F1), with CBAM and A-Softmax by default or, as the paper's alternative, softmax without CBAM.
    The score is ``score_metric`` (default validation ROC AUC, which still ranks a briefly trained network that
    predicts one class at the 0.5 threshold, where F1 is 0) at the candidate's best validation epoch
    (:func:`best_validation_epoch`); the record's other metrics are those of the same epoch.
    Training is :func:`naslung.pipeline.training.step.train_fold` with ``test_fold=None``: the validation split is
    carved (by patient) from the search data itself, which must hold no test-fold nodule
    (:func:`search_datalist`). Each candidate trains in ``out_dir/<spec slug>/all/``, so a candidate killed in the
    middle resumes from its last checkpoint and a finished one is not trained again.

    Instances are picklable (plain data only), so an executor can ship them to worker processes.

    Args:
        datalist: the search data (no nodule of a test fold).
        out_dir: folder of the candidates' training folders.
        epochs: training epochs per candidate (the paper: 10).
        attention: ``"channel_first"`` (CBAM, default), ``"spatial_first"`` or ``"none"``.
        loss_name: ``"asoftmax"`` (default) or ``"softmax"``.
        seed: training seed, the same for every candidate.
        train_config: user training config (file path or dict) on top of the packaged one.
        train_overrides: extra training overrides (``batch_size``, ``val_fraction``, ``lr``, ...).
        input_shape: one nodule's shape (C, D, H, W), for the MAC count.
        score_metric: the validation metric that scores a candidate: ``"auc"`` (default), ``"f1"`` (the paper),
            ``"accuracy"``, ``"sensitivity"`` or ``"specificity"``.

    Raises:
        ConfigError: for an unknown attention, loss or score metric, fewer than one epoch, or a bad training config.
    """

    def __init__(
        self,
        datalist: Sequence[Mapping[str, Any]],
        out_dir: str | os.PathLike,
        *,
        epochs: int = 10,
        attention: str = "channel_first",
        loss_name: str = "asoftmax",
        seed: int = 0,
        train_config: str | os.PathLike | Mapping[str, Any] | None = None,
        train_overrides: Mapping[str, Any] | None = None,
        input_shape: Sequence[int] = NODULE_SHAPE,
        score_metric: str = "auc",
    ) -> None:
        if epochs < 1:
            raise ConfigError(f"epochs_per_candidate must be >= 1, got {epochs}")
        if attention not in ATTENTION_OPTIONS:
            raise ConfigError(f"attention {attention!r} is not one of {ATTENTION_OPTIONS} (the paper: channel_first)")
        if loss_name not in LOSSES:
            raise ConfigError(f"loss_name {loss_name!r} is not one of {sorted(LOSSES)} (the paper: asoftmax)")
        if score_metric not in METRIC_KEYS:
            raise ConfigError(f"score_metric {score_metric!r} is not one of {METRIC_KEYS} (default: auc)")
        self.score_metric = score_metric
        self.datalist = [dict(item) for item in datalist]
        self.out_dir = str(out_dir)
        self.epochs = int(epochs)
        self.attention = attention
        self.loss_name = loss_name
        self.seed = int(seed)
        self.train_config = dict(train_config) if isinstance(train_config, Mapping) else train_config
        self.train_overrides = dict(train_overrides or {})
        self.input_shape = tuple(int(s) for s in input_shape)
        # fail early, in the driver, on a bad training config or override
        self.merged_config(arch_to_text("[4,4,[4],[4],[4]]"))

    def overrides(self, spec: Any) -> dict[str, Any]:
        """The training overrides of one candidate."""
        return candidate_overrides(
            spec,
            epochs=self.epochs,
            attention=self.attention,
            loss_name=self.loss_name,
            seed=self.seed,
            extra=self.train_overrides,
        )

    def merged_config(self, spec: Any) -> dict[str, Any]:
        """The full training config of one candidate."""
        return load_train_config(self.train_config, self.overrides(spec))

    def candidate_dir(self, spec: Any) -> Path:
        """Training folder of a candidate (``train_fold`` adds ``all/``)."""
        return Path(self.out_dir) / spec_slug(arch_to_text(spec))

    def __call__(self, spec: Any) -> dict[str, Any]:
        """Train ``spec`` and return its record: spec, params, MACs, validation metrics, seconds, seed, ....

        ``latency_ms`` is not set here: the search driver measures it with its latency function, in one process,
        so every candidate's latency is taken under the same conditions.
        """
        text = arch_to_text(spec)
        start = time.perf_counter()
        result = train_fold(self.datalist, None, self.candidate_dir(text), self.train_config, self.overrides(text))
        seconds = time.perf_counter() - start
        network = build_candidate_network(text, self.merged_config(text))
        best = best_validation_epoch(result.get("history") or [], self.score_metric)
        if best is None:  # no per-epoch history: the metrics of the saved checkpoint
            epoch, val = result.get("best_epoch"), dict(result.get("val", {}))
        else:
            epoch, val = best
        missing = [key for key in METRIC_KEYS if key not in val]
        if missing:
            raise SearchError(f"training {text} returned no validation {missing}; see {self.candidate_dir(text)}")
        score = float(val[self.score_metric])
        if not math.isfinite(score):
            raise SearchError(
                f"candidate {text}: validation {self.score_metric} is undefined ({score}) at every epoch (a validation "
                f"split with one class?); raise train#val_fraction or pick another score_metric. See "
                f"{self.candidate_dir(text)}"
            )
        record: dict[str, Any] = {
            "spec": text,
            "params": count_parameters(network),
            "macs": count_macs(network, self.input_shape),
            **{key: float(val[key]) for key in METRIC_KEYS},
            "seconds": seconds,
            "seed": self.seed,
            "epochs": self.epochs,
            "epochs_run": result.get("epochs_run"),
            "score_metric": self.score_metric,
            "best_epoch": epoch,
            "checkpoint_epoch": result.get("best_epoch"),
            "train_threads": torch.get_num_threads(),
            "n_train": result.get("n_train"),
            "n_val": result.get("n_val"),
            "attention": self.attention,
            "loss_name": self.loss_name,
        }
        logger.info(
            "candidate %s: val %s %.4f at epoch %s, F1 %.4f, accuracy %.4f (%.1f s)",
            text,
            self.score_metric,
            score,
            epoch,
            record["f1"],
            record["accuracy"],
            seconds,
        )
        return record


class CandidateProfiler:
    """The search's latency function: ms per nodule of an untrained candidate, measured with ``profile``.

    Builds the candidate as training would (same attention and head) and calls
    :func:`naslung.networks.profile` on ``device`` (the device the model is meant for) with torch's CPU threads
    fixed to ``num_threads``. Results are cached per spec; :meth:`prefetch` measures a batch up front so that the
    driver can time candidates while no worker is training.

    Args:
        train_config: a merged training config (defines the network: attention, head, margin).
        device: ``"cpu"``, ``"cuda"``, ...; ``None``: the current device.
        latency_batch: the batch size whose per-nodule latency is the objective (1: batch-1 latency, the
            paper's "inference speed" per nodule; larger: throughput latency per nodule).
        num_threads: CPU threads while timing (``None``: leave torch's setting).
        warmup: untimed runs before timing.
        repeats: timed runs; the least is kept. Here a single-thread call takes about twice as long while the other
            core is busy (a Ray worker starting or finishing a trial), and the median then ranks candidates by when
            they were timed rather than by what they cost; other work can only raise the least.
        input_shape: one nodule's shape (C, D, H, W).
        known: latencies measured before (``{spec: ms}``, e.g. the journal's sidecar), reused as they are.
        table: the machine's :class:`~naslung.pipeline.search.latency_table.LatencyTable`: a candidate found there
            (same machine, settings, torch and network code) is not timed again, and each new measurement is
            added to it (``None``: no table, every search times its candidates).

    Where a latency comes from, first match wins: ``known`` (the search's own journal, so a resumed search
    replays its numbers), then ``table``, then a measurement.
    """

    def __init__(
        self,
        train_config: Mapping[str, Any],
        *,
        device: str | None = None,
        latency_batch: int = 1,
        num_threads: int | None = 1,
        warmup: int = 5,
        repeats: int = 20,
        input_shape: Sequence[int] = NODULE_SHAPE,
        known: Mapping[str, float] | None = None,
        table: LatencyTable | None = None,
    ) -> None:
        if latency_batch < 1 or repeats < 1 or warmup < 0:
            raise SearchError(
                f"latency_batch and latency_repeats must be >= 1 and latency_warmup >= 0; got {latency_batch}, "
                f"{repeats}, {warmup}"
            )
        self.train_config = dict(train_config)
        self.device = resolve_device(device)
        self.latency_batch = int(latency_batch)
        self.num_threads = num_threads
        self.warmup = int(warmup)
        self.repeats = int(repeats)
        self.input_shape = tuple(int(s) for s in input_shape)
        self._ms: dict[str, float] = {arch_to_text(k): float(v) for k, v in (known or {}).items()}
        self.profiles: dict[str, Any] = {}
        self.table = table
        self._table_entries: dict[str, float] = table.entries() if table is not None else {}
        self.measured = 0
        self.from_table = 0

    def table_key(self, spec: Any) -> str:
        """The latency-table key of a candidate under this profiler's settings."""
        return LatencyTable.key(
            spec_slug(arch_to_text(spec)),
            input_shape=self.input_shape,
            batch=self.latency_batch,
            threads=self.num_threads or torch.get_num_threads(),
            device=self.device,
            attention=str(self.train_config.get("attention")),
            loss_name=str(self.train_config.get("loss_name")),
        )

    def profile(self, spec: Any) -> Any:
        """The :class:`naslung.networks.CostProfile` of a candidate (measured once)."""
        text = arch_to_text(spec)
        if text not in self.profiles:
            network = build_candidate_network(text, self.train_config)
            self.profiles[text] = profile_network(
                network,
                self.input_shape,
                device=self.device,
                large_batch=self.latency_batch,
                warmup=self.warmup,
                repeats=self.repeats,
                num_threads=self.num_threads,
                statistic="min",
            )
            logger.debug("profiled %s: %s", text, self.profiles[text])
        return self.profiles[text]

    def __call__(self, spec: Any) -> float:
        """Latency objective of a candidate in ms per nodule."""
        text = arch_to_text(spec)
        if text in self._ms:
            return self._ms[text]
        key = self.table_key(text) if self.table is not None else None
        if key is not None and key in self._table_entries:
            self._ms[text] = self._table_entries[key]
            self.from_table += 1
            return self._ms[text]
        cost = self.profile(text)
        self._ms[text] = float(
            cost.latency_ms_per_nodule if self.latency_batch == 1 else cost.large_batch_latency_ms_per_nodule
        )
        self.measured += 1
        if key is not None and self.table is not None:
            self._table_entries[key] = self._ms[text]
            self.table.put({key: self._ms[text]})
        return self._ms[text]

    def prefetch(self, specs: Iterable[Any]) -> list[Any]:
        """Measure the latency of every spec not measured yet; returns the specs as a list."""
        items = list(specs)
        for spec in items:
            self(spec)
        return items

    def describe(self) -> dict[str, Any]:
        """Settings of the measurement, for the run record."""
        return {
            "device": self.device,
            "latency_batch": self.latency_batch,
            "num_threads": self.num_threads,
            "warmup": self.warmup,
            "repeats": self.repeats,
            "input_shape": list(self.input_shape),
            "table": str(self.table.path) if self.table is not None else None,
            "from_table": self.from_table,
            "measured": self.measured,
        }
