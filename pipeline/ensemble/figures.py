"""The ensemble step's figures: metrics against ensemble size (the paper's Fig. 7) and per-fold comparison of the
ensemble with its members and the baselines."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.errors import DataError
from naslung.pipeline.plotting import METRIC_LABELS, new_figure, save_figure

__all__ = ["plot_ensemble_size", "plot_per_fold_comparison"]

logger = logging.getLogger(__name__)


def plot_ensemble_size(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    metrics: Sequence[str] = ("accuracy", "sensitivity", "specificity", "f1"),
    title: str = "Performance against ensemble size",
) -> Path:
    """Fig. 7: each metric's mean ± std over random draws against the number of ensemble members.

    Args:
        rows: rows of :func:`naslung.pipeline.ensemble.voting.ensemble_size_study` (``size``, ``draws``,
            ``<metric>_mean``, ``<metric>_std`` as fractions; shown in percent).
        path: PNG file to write.
        metrics: metrics to draw, one line each.
        title: figure title (the number of draws is appended when the rows carry it).

    Raises:
        DataError: when ``rows`` is empty or lacks a metric.
    """
    if not rows:
        raise DataError("no ensemble-size rows to plot; run the ensemble-size study first")
    ordered = sorted(rows, key=lambda row: row["size"])
    sizes = [int(row["size"]) for row in ordered]
    figure = new_figure(6.0, 4.2)
    axes = figure.add_subplot()
    for offset, metric in enumerate(metrics):
        try:
            means = np.array([float(row[f"{metric}_mean"]) for row in ordered]) * 100.0
            stds = np.array([float(row.get(f"{metric}_std", 0.0)) for row in ordered]) * 100.0
        except KeyError as err:
            raise DataError(f"ensemble-size rows lack {err.args[0]!r}; plot only metrics the study computed") from err
        shift = (offset - (len(metrics) - 1) / 2) * 0.06  # keep error bars of equal sizes apart
        axes.errorbar(
            np.array(sizes) + shift,
            means,
            yerr=np.nan_to_num(stds),
            marker="o",
            capsize=3,
            label=METRIC_LABELS.get(metric, metric),
        )
    draws = ordered[0].get("draws")
    axes.set_title(title + (f" ({draws} random draws per size)" if draws else ""))
    axes.set_xlabel("Number of models in the ensemble, n")
    axes.set_ylabel("Performance (%), mean ± std")
    axes.set_xticks(sizes)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return save_figure(figure, path)


def plot_per_fold_comparison(
    series: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike,
    metrics: Sequence[str] = ("accuracy", "auc"),
    emphasis: Sequence[str] = (),
    title: str = "Held-out folds: networks against the reference models",
) -> Path:
    """One panel per metric: each model's value on each held-out fold (e.g. the ensemble against the diameter rule).

    Args:
        series: ``{label: per-fold rows}``, each row with ``fold`` and the metrics as fractions (shown in percent;
            a missing or empty value leaves a gap).
        path: PNG file to write.
        metrics: metrics to draw, one panel each.
        emphasis: labels drawn with thick lines and markers; the others thin (e.g. the individual members).
        title: figure title.

    Raises:
        DataError: when ``series`` is empty.
    """
    if not series:
        raise DataError("no per-fold results to plot; run the ensemble step first")
    folds = sorted({int(row["fold"]) for rows in series.values() for row in rows})
    figure = new_figure(4.2 * len(metrics), 3.8)
    for index, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), index + 1)
        for label, rows in series.items():
            by_fold = {int(row["fold"]): row.get(metric) for row in rows}
            values = []
            for fold in folds:
                try:
                    values.append(100.0 * float(by_fold.get(fold)))  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    values.append(np.nan)
            strong = label in emphasis
            axes.plot(
                folds,
                values,
                marker="o" if strong else ".",
                linestyle="-" if strong else "--",
                linewidth=2.0 if strong else 0.8,
                alpha=1.0 if strong else 0.6,
                label=label,
            )
        axes.set_xticks(folds)
        axes.set_xlabel("Held-out fold")
        axes.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
        axes.grid(alpha=0.3)
        if index == 0:
            axes.legend(fontsize=6, loc="best")
    figure.suptitle(title)
    return save_figure(figure, path)
