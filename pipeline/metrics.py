"""Binary nodule-classification metrics (paper eq. 8-11 plus ROC AUC) as Ignite handlers and plain functions."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.handlers import ROCAUC, ConfusionMatrix
from monai.utils import look_up_option

from naslung.bundles.runtime.decisions import BINARY_METRICS, DEFAULT_THRESHOLD, confusion_counts, label_array
from naslung.pipeline.errors import DataError

__all__ = [
    "BINARY_METRICS",
    "DEFAULT_THRESHOLD",
    "malignancy_probability",
    "malignancy_label",
    "BinaryOutputTransform",
    "BinaryConfusionMetric",
    "BinaryROCAUC",
    "binary_metric_handlers",
    "confusion_counts",
    "binary_metrics",
    "summarise_folds",
]

logger = logging.getLogger(__name__)

# our metric name -> MONAI's confusion-matrix metric name
_MONAI_CONFUSION_NAMES = {
    "accuracy": "accuracy",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "f1": "f1 score",
}


def malignancy_probability(y_pred: torch.Tensor | np.ndarray | Sequence, logits: bool | None = None) -> torch.Tensor:
    """Reduce network outputs to the probability that each nodule is malignant (label 1).

    Args:
        y_pred: ``(B, 2)`` logits or softmax probabilities (column 1 = malignant), or ``(B,)`` / ``(B, 1)``
            probabilities (or logits) of malignancy.
        logits: ``True`` applies softmax (two columns) or sigmoid (one column); ``False`` takes the values as
            probabilities; ``None`` decides per call: values inside [0, 1] (and, for two columns, rows summing
            to 1 within 1e-4) are probabilities, anything else is logits.

    Returns:
        ``(B,)`` float tensor of probabilities of malignancy.

    Raises:
        DataError: when the shape is not one of those above.
    """
    values = torch.as_tensor(np.asarray(y_pred) if not isinstance(y_pred, torch.Tensor) else y_pred)
    values = values.detach().float()
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 1:
        if logits is None:
            logits = bool(values.numel()) and not bool(((values >= 0) & (values <= 1)).all())
        return torch.sigmoid(values) if logits else values
    if values.ndim != 2 or values.shape[1] != 2:
        raise DataError(
            f"predictions of shape {tuple(values.shape)} are not (B, 2) class scores or (B,) probabilities; "
            "pass the classifier output of a two-class (benign, malignant) network"
        )
    if logits is None:
        in_unit = bool(((values >= 0) & (values <= 1)).all())
        logits = not (in_unit and bool(torch.allclose(values.sum(dim=1), torch.ones(len(values)), atol=1e-4)))
    probabilities = torch.softmax(values, dim=1) if logits else values
    return probabilities[:, 1]


def malignancy_label(y: torch.Tensor | np.ndarray | Sequence) -> torch.Tensor:
    """Reduce labels to a ``(B,)`` long tensor of 0 (benign) / 1 (malignant).

    Args:
        y: ``(B,)`` or ``(B, 1)`` class indices, or ``(B, 2)`` one-hot labels.

    Raises:
        DataError: when a label is not 0 or 1, or the shape is not one of those above.
    """
    labels = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach()
    if labels.ndim == 2 and labels.shape[1] == 2:
        labels = labels.argmax(dim=1)
    elif labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"labels of shape {tuple(labels.shape)} are not (B,) class indices or (B, 2) one-hot")
    labels = labels.round().long()
    if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
        raise DataError(f"labels must be 0 (benign) or 1 (malignant), got values {sorted(set(labels.tolist()))}")
    return labels


def _stack(items: Any) -> torch.Tensor:
    """Stack a list of per-sample tensors/numbers (a decollated batch) into one batch-first tensor."""
    if isinstance(items, torch.Tensor):
        return items
    if isinstance(items, (list, tuple)):
        return torch.stack([torch.as_tensor(item).reshape(-1) for item in items])
    return torch.as_tensor(np.asarray(items))


class BinaryOutputTransform:
    """Output transform turning an engine's output into ``(y_pred, y)`` for MONAI's metric handlers.

    Accepts what MONAI's ``SupervisedEvaluator`` produces (a dict, or a list of per-sample dicts after
    decollation, with ``pred_key``/``label_key``) and a plain ``(y_pred, y)`` pair from an Ignite engine.

    Args:
        mode: ``"onehot"`` returns thresholded ``(B, 2)`` one-hot predictions and ``(B, 2)`` one-hot labels for
            :class:`monai.handlers.ConfusionMatrix`; ``"probability"`` returns ``(B, 1)`` probabilities of
            malignancy and ``(B, 1)`` labels for :class:`monai.handlers.ROCAUC`.
        threshold: a nodule is predicted malignant when its probability is strictly greater than this.
        pred_key: key of the network output in a dict output.
        label_key: key of the label in a dict output.
        logits: see :func:`malignancy_probability`.
    """

    def __init__(
        self,
        mode: str = "onehot",
        threshold: float = DEFAULT_THRESHOLD,
        pred_key: str = "pred",
        label_key: str = "label",
        logits: bool | None = None,
    ) -> None:
        self.mode = look_up_option(mode, ("onehot", "probability"))
        self.threshold = float(threshold)
        self.pred_key = pred_key
        self.label_key = label_key
        self.logits = logits

    def __call__(self, output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(output, Mapping):
            y_pred, y = output[self.pred_key], output[self.label_key]
        elif isinstance(output, (list, tuple)) and output and isinstance(output[0], Mapping):
            y_pred = [item[self.pred_key] for item in output]
            y = [item[self.label_key] for item in output]
        elif isinstance(output, (list, tuple)) and len(output) == 2:
            y_pred, y = output
        else:
            raise DataError(
                f"cannot read predictions and labels from an engine output of type {type(output).__name__}; "
                f"give a dict with {self.pred_key!r}/{self.label_key!r}, a list of such dicts or a (y_pred, y) pair"
            )
        probability = malignancy_probability(_stack(y_pred), logits=self.logits)
        # MONAI's decollation turns each sample's 0-d label into a Python number, so on a GPU the labels arrive on
        # the CPU while the predictions stay on the GPU: put them together where the predictions are
        label = malignancy_label(_stack(y)).to(probability.device)
        if len(probability) != len(label):
            raise DataError(f"{len(probability)} predictions but {len(label)} labels in one batch")
        if self.mode == "probability":
            return probability[:, None], label[:, None].float()
        predicted = (probability > self.threshold).long()
        return (
            torch.nn.functional.one_hot(predicted, num_classes=2).float(),
            torch.nn.functional.one_hot(label, num_classes=2).float(),
        )


class BinaryConfusionMetric(ConfusionMatrix):
    """Accuracy, sensitivity, specificity or F1 (paper eq. 8-11) of the malignant class as an Ignite metric.

    A :class:`monai.handlers.ConfusionMatrix` over the malignant channel only (``include_background=False``)
    whose counts are summed over the whole epoch before the ratio is taken, so the value equals the metric of
    all nodules seen, not a mean over batches. F1 is the usual ``2TP / (2TP + FP + FN)``; the paper's eq. 11
    prints ``2 TP^2`` in the numerator, a misprint (its Table 1/5 values fit the usual formula). A ratio with a
    zero denominator (sensitivity without malignant nodules, ...) is NaN and logged as a warning.

    Attach with ``metric.attach(engine, "sensitivity")`` or pass it to ``SupervisedEvaluator``'s
    ``key_val_metric`` / ``additional_metrics``.

    Args:
        metric_name: one of ``"accuracy"``, ``"sensitivity"``, ``"specificity"``, ``"f1"``.
        threshold: probability of malignancy above which (strictly) a nodule counts as predicted malignant.
        pred_key: key of the ``(2,)`` class scores in the engine output.
        label_key: key of the label in the engine output.
        logits: see :func:`malignancy_probability`.
        output_transform: replaces the default :class:`BinaryOutputTransform`; it must return one-hot
            ``(B, 2)`` binarised predictions and labels.
        save_details: keep per-batch counts in ``engine.state.metric_details`` (MONAI's option).
    """

    def __init__(
        self,
        metric_name: str = "f1",
        threshold: float = DEFAULT_THRESHOLD,
        pred_key: str = "pred",
        label_key: str = "label",
        logits: bool | None = None,
        output_transform: Callable | None = None,
        save_details: bool = False,
    ) -> None:
        self.binary_metric_name = look_up_option(metric_name, tuple(_MONAI_CONFUSION_NAMES))
        transform = output_transform or BinaryOutputTransform("onehot", threshold, pred_key, label_key, logits)
        super().__init__(
            include_background=False,
            metric_name=_MONAI_CONFUSION_NAMES[self.binary_metric_name],
            compute_sample=False,
            reduction="sum",
            output_transform=transform,
            save_details=save_details,
        )

    def compute(self) -> Any:
        value = super().compute()
        if isinstance(value, float) and math.isnan(value):
            logger.warning(
                "%s is undefined (zero denominator: the evaluated nodules lack a class or a prediction); reporting NaN",
                self.binary_metric_name,
            )
        return value


class BinaryROCAUC(ROCAUC):
    """ROC AUC of the probability of malignancy as an Ignite metric (:class:`monai.handlers.ROCAUC`).

    When the evaluated nodules hold one class only the AUC is NaN and a warning is logged.

    Args:
        pred_key: key of the ``(2,)`` class scores in the engine output.
        label_key: key of the label in the engine output.
        logits: see :func:`malignancy_probability`.
        output_transform: replaces the default :class:`BinaryOutputTransform` in ``"probability"`` mode.
    """

    def __init__(
        self,
        pred_key: str = "pred",
        label_key: str = "label",
        logits: bool | None = None,
        output_transform: Callable | None = None,
    ) -> None:
        transform = output_transform or BinaryOutputTransform(
            "probability", DEFAULT_THRESHOLD, pred_key, label_key, logits
        )
        super().__init__(output_transform=transform)

    def compute(self) -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = super().compute()
        for item in caught:
            logger.warning("ROC AUC: %s", item.message)
        return value


def binary_metric_handlers(
    threshold: float = DEFAULT_THRESHOLD, pred_key: str = "pred", label_key: str = "label", logits: bool | None = None
) -> dict[str, ConfusionMatrix | ROCAUC]:
    """All :data:`BINARY_METRICS` as fresh Ignite metrics keyed by name, e.g. for ``SupervisedEvaluator``.

    Example::

        handlers = binary_metric_handlers()
        evaluator = SupervisedEvaluator(..., key_val_metric={"f1": handlers.pop("f1")}, additional_metrics=handlers)
    """
    handlers: dict[str, ConfusionMatrix | ROCAUC] = {
        name: BinaryConfusionMetric(name, threshold, pred_key, label_key, logits) for name in _MONAI_CONFUSION_NAMES
    }
    handlers["auc"] = BinaryROCAUC(pred_key, label_key, logits)
    return handlers


def _ratio(numerator: float, denominator: float, name: str) -> float:
    if denominator == 0:
        logger.warning("%s is undefined (zero denominator); reporting NaN", name)
        return float("nan")
    return float(numerator) / float(denominator)


def binary_metrics(
    y_true: Any, prob_malignant: Any, threshold: float = DEFAULT_THRESHOLD, y_pred: Any | None = None
) -> dict[str, float | int]:
    """Accuracy, sensitivity, specificity, F1 (paper eq. 8-11) and ROC AUC of one set of predictions.

    Values are fractions in [0, 1] (the paper prints percentages). A nodule is predicted malignant when its
    probability is strictly greater than ``threshold`` (for two softmax outputs this is the arg-max with
    ties going to benign), unless ``y_pred`` gives the predictions (as the ensemble's majority vote does).
    Undefined ratios (no malignant nodules: sensitivity; no benign: specificity; one class: AUC) are NaN with
    a logged warning.

    Args:
        y_true: ``(N,)`` labels, 1 = malignant.
        prob_malignant: ``(N,)`` probabilities (or any monotone scores for the AUC when ``y_pred`` is given).
        threshold: decision threshold on ``prob_malignant``.
        y_pred: optional ``(N,)`` predicted labels overriding the threshold.

    Returns:
        dict with ``accuracy``, ``sensitivity``, ``specificity``, ``f1``, ``auc`` (floats) and ``tp``, ``fp``,
        ``tn``, ``fn``, ``n`` (ints).

    Raises:
        DataError: on empty input, mismatched lengths, labels other than 0/1 or non-finite probabilities.
    """
    truth = label_array(y_true)
    scores = np.asarray(prob_malignant, dtype=np.float64).reshape(-1)
    if truth.size == 0:
        raise DataError("no nodules to evaluate: the label array is empty")
    if scores.shape != truth.shape:
        raise DataError(f"{truth.size} labels but {scores.size} probabilities")
    if not np.isfinite(scores).all():
        raise DataError("probabilities of malignancy contain NaN or infinity; check the network outputs")
    predicted = (scores > threshold).astype(np.int64) if y_pred is None else label_array(y_pred)
    counts = confusion_counts(truth, predicted)
    tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]
    result: dict[str, float | int] = {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn, "accuracy"),
        "sensitivity": _ratio(tp, tp + fn, "sensitivity"),
        "specificity": _ratio(tn, tn + fp, "specificity"),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, "f1"),
    }
    if len(np.unique(truth)) < 2:
        logger.warning("ROC AUC is undefined: all %d nodules have label %d; reporting NaN", truth.size, truth[0])
        result["auc"] = float("nan")
    else:
        from sklearn.metrics import roc_auc_score

        result["auc"] = float(roc_auc_score(truth, scores))
    result.update(counts)
    result["n"] = int(truth.size)
    return result


def summarise_folds(
    per_fold: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None, ddof: int = 1
) -> dict[str, float | int]:
    """Mean and standard deviation of each metric across cross-validation folds (or ensemble draws).

    The standard deviation is the sample one (``ddof=1``, Bessel-corrected, as ``torch.std``); the paper does
    not say which it uses, and neither convention reproduces its Table 2 std. row from its Table 5 (whose
    mean the Table 2 NASLung_single avg. row does match), so pass ``ddof=0`` for the population value. NaN
    values (a metric undefined in some fold) are left out of both, with a logged warning; a metric seen in
    fewer than ``ddof + 1`` folds has std NaN.

    Args:
        per_fold: one dict of metrics per fold, e.g. from :func:`binary_metrics`.
        keys: metrics to summarise; default :data:`BINARY_METRICS` present in the first fold, else every
            numeric key of the first fold.
        ddof: delta degrees of freedom of the std.

    Returns:
        ``{"<key>_mean": ..., "<key>_std": ..., "n_folds": len(per_fold)}``.

    Raises:
        DataError: when ``per_fold`` is empty or a fold lacks a key.
    """
    if not per_fold:
        raise DataError("no folds to summarise: the list of per-fold metrics is empty")
    if keys is None:
        first = per_fold[0]
        keys = [k for k in BINARY_METRICS if k in first] or [
            k for k, v in first.items() if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
        ]
    summary: dict[str, float | int] = {}
    for key in keys:
        try:
            values = np.array([float(fold[key]) for fold in per_fold], dtype=np.float64)
        except KeyError as err:
            raise DataError(f"a fold's metrics lack {key!r}; give every fold the same keys") from err
        finite = values[~np.isnan(values)]
        if finite.size < values.size:
            logger.warning(
                "%s is NaN in %d of %d folds; summarising the rest", key, values.size - finite.size, values.size
            )
        summary[f"{key}_mean"] = float(finite.mean()) if finite.size else float("nan")
        if finite.size <= ddof:
            summary[f"{key}_std"] = float("nan")
        elif np.ptp(finite) == 0.0:
            summary[f"{key}_std"] = 0.0  # exactly, not the rounding noise of the mean
        else:
            summary[f"{key}_std"] = float(finite.std(ddof=ddof))
    summary["n_folds"] = len(per_fold)
    return summary
