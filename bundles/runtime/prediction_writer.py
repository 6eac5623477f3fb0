"""An Ignite handler writing one CSV row per nodule (probability, decision, errors) and, with labels, metrics.

Ignite is imported only when the handler is attached to an engine, so importing the bundle runtime needs no Ignite.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.metrics import compute_roc_auc

from naslung.bundles.runtime.atomic_files import write_csv, write_json
from naslung.bundles.runtime.decisions import BINARY_METRICS, DEFAULT_THRESHOLD, confusion_counts

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["PREDICTION_COLUMNS", "NodulePredictionWriter"]

logger = logging.getLogger(__name__)

#: Leading columns of ``predictions.csv``; extra keys (ensemble votes) and ``label`` follow, ``error`` is last.
PREDICTION_COLUMNS: tuple[str, ...] = ("nodule_id", "source", "center_mm", "probability", "prediction")


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def _items(value: Any) -> list[dict[str, Any]]:
    """A decollated engine batch/output as a list of dicts (a collated dict is split first)."""
    if isinstance(value, Mapping):
        size = len(next(iter(value.values()))) if value else 0
        return [{k: v[i] for k, v in value.items()} for i in range(size)]
    return list(value or [])


class NodulePredictionWriter:
    """Write ``predictions.csv`` (one row per nodule, in datalist order) when an evaluator completes.

    Reads each item's malignancy probability from ``pred`` (two class probabilities, channel 1 = malignant) and
    the bookkeeping that :class:`NoduleInputd` put in the batch (``nodule_id``, ``source``, ``center_mm``,
    ``error``). An item with an error gets empty probability and decision cells and its message in ``error``.
    The decision is ``prediction`` from the output when present (the ensemble's majority vote), else
    ``probability > threshold``. With ``label_key`` the labels are written too and ``metrics_filename`` receives
    accuracy, sensitivity, specificity, F1 (paper eq. 8-11) and ROC AUC over the items without error.

    Args:
        output_dir: folder of the CSV (created).
        filename: CSV name.
        threshold: decision threshold on the probability of malignancy.
        extra_keys: further output keys written as columns (e.g. ``votes``, ``vote_fraction``).
        label_key: batch key of the 0/1 label (evaluation), or None.
        metrics_filename: JSON file for the metrics (needs ``label_key``), or None.
        pred_key, id_key, source_key, center_key, error_key: keys in the engine's output/batch.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        filename: str = "predictions.csv",
        threshold: float = DEFAULT_THRESHOLD,
        extra_keys: Sequence[str] = (),
        label_key: str | None = None,
        metrics_filename: str | None = None,
        pred_key: str = "pred",
        id_key: str = "nodule_id",
        source_key: str = "source",
        center_key: str = "center_mm",
        error_key: str = "error",
    ) -> None:
        self.path = Path(output_dir) / filename
        self.metrics_path = Path(output_dir) / metrics_filename if metrics_filename else None
        self.threshold = float(threshold)
        self.extra_keys = tuple(extra_keys)
        self.label_key = label_key
        self.pred_key, self.id_key, self.source_key = pred_key, id_key, source_key
        self.center_key, self.error_key = center_key, error_key
        self.rows: list[dict[str, Any]] = []

    @property
    def columns(self) -> list[str]:
        """The CSV header."""
        label = [self.label_key] if self.label_key else []
        return [*PREDICTION_COLUMNS, *self.extra_keys, *label, self.error_key]

    def attach(self, engine: Engine) -> None:
        """Reset at each epoch, collect each iteration's rows and write the files when ``engine`` completes."""
        from ignite.engine import Events  # deferred: the engine's own dependency, not one of the bundle runtime's

        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.rows = []

    def collect(self, engine: Engine) -> None:
        """Turn the iteration's decollated batch and output into rows."""
        for batch_item, output_item in zip(_items(engine.state.batch), _items(engine.state.output), strict=True):
            error = str(_scalar(batch_item.get(self.error_key, "")) or "")
            row: dict[str, Any] = {
                "nodule_id": _scalar(batch_item.get(self.id_key, len(self.rows))),
                "source": _scalar(batch_item.get(self.source_key, "")),
                "center_mm": _scalar(batch_item.get(self.center_key, "")),
                self.error_key: error,
            }
            if self.label_key:
                label = _scalar(batch_item.get(self.label_key, output_item.get(self.label_key, -1)))
                row[self.label_key] = label if label in (0, 1) else ""
            if error:
                row.update({"probability": "", "prediction": "", **{k: "" for k in self.extra_keys}})
            else:
                probability = float(torch.as_tensor(output_item[self.pred_key]).reshape(-1)[1])
                decision = output_item.get("prediction")
                row["probability"] = probability
                voted = decision is not None
                row["prediction"] = int(_scalar(decision)) if voted else int(probability > self.threshold)
                for key in self.extra_keys:
                    row[key] = _scalar(output_item.get(key, ""))
            self.rows.append(row)

    def write(self, engine: Engine | None = None) -> None:
        """Write the CSV (atomically) and, with labels, the metrics JSON."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_csv(self.path, self.rows, self.columns)
        failed = sum(1 for row in self.rows if row[self.error_key])
        logger.info("wrote %d predictions (%d failed) to %s", len(self.rows), failed, self.path)
        if self.metrics_path is not None and self.label_key:
            write_json(self.metrics_path, self.metrics())

    def metrics(self) -> dict[str, Any]:
        """Metrics over the rows without error (NaN where undefined), plus counts of evaluated and failed items."""
        rows = [r for r in self.rows if not r[self.error_key] and r.get(self.label_key) in (0, 1)]
        result: dict[str, Any] = {name: math.nan for name in BINARY_METRICS}
        result.update(n=len(rows), n_failed=sum(1 for r in self.rows if r[self.error_key]), threshold=self.threshold)
        if not rows:
            return result
        labels = [int(r[self.label_key]) for r in rows]
        counts = confusion_counts(labels, [int(r["prediction"]) for r in rows])
        tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]

        def ratio(numerator: int, denominator: int) -> float:
            return numerator / denominator if denominator else math.nan

        result.update(
            accuracy=ratio(tp + tn, len(rows)),
            sensitivity=ratio(tp, tp + fn),
            specificity=ratio(tn, tn + fp),
            f1=ratio(2 * tp, 2 * tp + fp + fn),
            **counts,
        )
        if len(set(labels)) == 2:
            scores = torch.tensor([float(r["probability"]) for r in rows])
            result["auc"] = float(compute_roc_auc(scores, torch.tensor(labels)))
        return result
