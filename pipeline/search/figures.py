"""The search's figures: the searched architectures' accuracy against cost with the Pareto front (the paper's Fig. 4)
and DNAS's architecture probabilities per epoch."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter, MaxNLocator

from naslung.pipeline.errors import DataError
from naslung.pipeline.plotting import METRIC_LABELS, new_figure, save_figure

__all__ = ["plot_pareto", "plot_architecture_probabilities"]

logger = logging.getLogger(__name__)


def _percent(values: np.ndarray) -> tuple[np.ndarray, str]:
    finite = values[np.isfinite(values)]
    if finite.size and finite.max() <= 1.0:
        return values * 100.0, " (%)"
    return values, ""


def plot_pareto(
    records: Sequence[Mapping[str, Any]],
    front: Sequence[Any],
    path: str | os.PathLike,
    pruned_count: int | None = None,
    title: str = "Architecture search: accuracy against latency",
    annotate: bool = True,
    score_key: str = "f1",
) -> Path:
    """Fig. 4-style scatter of every trained architecture's latency against its search score and accuracy.

    Args:
        records: one dict per trained architecture with ``latency_ms`` (per nodule), ``score_key``, ``accuracy``
            (fractions are shown in percent) and ``spec`` (architecture string).
        front: the Pareto-optimal architectures, as records or as their ``spec`` strings.
        path: PNG file to write.
        pruned_count: architectures pruned without training (shown in the title).
        title: figure title.
        annotate: write the spec strings beside the front's points (skipped beyond 12 points).
        score_key: the validation metric the search ranked by (left panel, where the front is a front): ``"f1"``,
            ``"auc"``, ...; the right panel shows accuracy (F1 when the score is accuracy).

    Raises:
        DataError: when ``records`` is empty or a record lacks a field.
    """
    if not records:
        raise DataError("no search records to plot; the search journal is empty")
    try:
        latency = np.array([float(r["latency_ms"]) for r in records])
        specs = [str(r.get("spec", "")) for r in records]
        panels = (score_key, "f1" if score_key == "accuracy" else "accuracy")
        values = {key: np.array([float(r[key]) for r in records]) for key in panels}
    except KeyError as err:
        raise DataError(
            f"a search record lacks {err.args[0]!r}; records need latency_ms, {panels[0]} and {panels[1]}"
        ) from err
    front_specs = {str(item["spec"]) if isinstance(item, Mapping) else str(item) for item in front}
    on_front = np.array([spec in front_specs for spec in specs])
    positive = latency[latency > 0]
    log_x = positive.size > 0 and positive.max() / positive.min() > 20
    middle = np.sqrt(positive.min() * positive.max()) if log_x else (latency.min() + latency.max()) / 2
    figure = new_figure(11.0, 4.6)
    for index, key in enumerate(panels):
        shown, unit = _percent(values[key])
        axes = figure.add_subplot(1, 2, index + 1)
        axes.scatter(
            latency[~on_front],
            shown[~on_front],
            s=16,
            c="0.6",
            alpha=0.7,
            edgecolors="none",
            label=f"trained ({int((~on_front).sum())})",
        )
        order = np.argsort(latency[on_front])
        axes.plot(
            latency[on_front][order],
            shown[on_front][order],
            "o--",
            color="tab:red",
            markersize=6,
            linewidth=1.0,
            label=f"Pareto front ({int(on_front.sum())})",
        )
        if annotate and 0 < on_front.sum() <= 12:
            front_points = zip(latency[on_front], shown[on_front], np.array(specs, dtype=object)[on_front], strict=True)
            for x, y, spec in front_points:
                right = x > middle  # label towards the centre so it stays inside the axes
                axes.annotate(
                    spec,
                    (x, y),
                    textcoords="offset points",
                    xytext=(-5, 4) if right else (5, 4),
                    ha="right" if right else "left",
                    fontsize=6,
                    color="tab:red",
                )
        if log_x:
            axes.set_xscale("log")
            axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.set_xlabel("Latency (ms per nodule)")
        axes.set_ylabel(f"Validation {METRIC_LABELS[key]}{unit}")
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right", fontsize=8)
    counts = f"{len(records)} trained" + ("" if pruned_count is None else f", {pruned_count} pruned without training")
    figure.suptitle(f"{title} ({counts})")
    return save_figure(figure, path)


def _option_text(kind: str, value: Any) -> str:
    if kind == "keep":
        return "keep" if value else "skip"
    return f"{value} ch" if kind == "width" else f"{value}^3"


def plot_architecture_probabilities(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str = "DNAS architecture probabilities",
    options: Mapping[str, Sequence[Any]] | None = None,
) -> Path:
    """Evolution of the DNAS architecture parameters: per decision kind (width, kernel, keep) one panel with, for
    every decision, the probability of its final most probable option against the supernet epoch.

    Args:
        records: the DNAS journal, one record per epoch with ``epoch`` and ``probabilities`` (``{decision name:
            [p_option, ...]}``, names like ``"stage3.block2.width"``).
        path: PNG file to write.
        title: figure title.
        options: per decision name the values its options stand for (widths in channels, kernel sizes, skip/keep),
            shown in the legend; option indices when missing.

    Raises:
        DataError: when ``records`` is empty or a record lacks the fields.
    """
    if not records:
        raise DataError("no DNAS epochs to plot; the search journal is empty")
    try:
        epochs = np.array([int(r["epoch"]) for r in records])
        names = list(records[-1]["probabilities"])
        series = {name: np.array([r["probabilities"][name] for r in records], dtype=float) for name in names}
    except (KeyError, TypeError) as err:
        raise DataError(f"a DNAS record lacks {err}; records need epoch and probabilities") from err
    kinds = [kind for kind in ("width", "kernel", "keep") if any(n.endswith("." + kind) for n in names)]
    figure = new_figure(4.2 * max(len(kinds), 1), 3.8)
    for index, kind in enumerate(kinds):
        axes = figure.add_subplot(1, len(kinds), index + 1)
        for name in (n for n in names if n.endswith("." + kind)):
            values = series[name]
            final = int(values[-1].argmax())
            values_of = (options or {}).get(name)
            chosen = (
                f"option {final}"
                if values_of is None or final >= len(values_of)
                else _option_text(kind, values_of[final])
            )
            label = f"{name.rsplit('.', 1)[0]} -> {chosen}"
            axes.plot(epochs, values[:, final], marker="o", markersize=3, linewidth=1.0, label=label)
        axes.set_ylim(0.0, 1.0)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("Supernet epoch")
        axes.set_ylabel(f"P(final {kind} choice)")
        axes.set_title(kind)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=5, loc="best")
    figure.suptitle(title)
    return save_figure(figure, path)
