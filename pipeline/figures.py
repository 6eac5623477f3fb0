"""The paper's figures re-drawn from our results: search scatter (Fig. 4), attention maps (Fig. 5), t-SNE
(Fig. 6), ensemble size (Fig. 7), plus Grad-CAM panels and training curves; PNG files written atomically."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from naslung.pipeline.atomic_io import atomic_path
from naslung.pipeline.errors import DataError

__all__ = [
    "plot_ensemble_size",
    "plot_tsne",
    "plot_attention_panels",
    "plot_gradcam_panels",
    "plot_pareto",
    "plot_training_curves",
    "plot_architecture_probabilities",
    "plot_per_fold_comparison",
]

logger = logging.getLogger(__name__)

# Fig. 6 of the paper: blue = malignant (positive), red = benign (negative).
MALIGNANT_COLOUR = "tab:blue"
BENIGN_COLOUR = "tab:red"
_METRIC_LABELS = {
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "f1": "F1 score",
    "auc": "ROC AUC",
}
_DPI = 150


def _new_figure(width_in: float, height_in: float) -> Figure:
    """A figure on the Agg canvas, independent of pyplot's global state and of the session's backend."""
    figure = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI)
    logger.info("wrote figure %s", path)
    return Path(path)


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().float().numpy()
    return np.asarray(value)


def plot_ensemble_size(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    metrics: Sequence[str] = ("accuracy", "sensitivity", "specificity", "f1"),
    title: str = "Performance against ensemble size",
) -> Path:
    """Fig. 7: each metric's mean ± std over random draws against the number of ensemble members.

    Args:
        rows: rows of :func:`naslung.pipeline.ensemble.ensemble_size_study` (``size``, ``draws``,
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
    figure = _new_figure(6.0, 4.2)
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
            label=_METRIC_LABELS.get(metric, metric),
        )
    draws = ordered[0].get("draws")
    axes.set_title(title + (f" ({draws} random draws per size)" if draws else ""))
    axes.set_xlabel("Number of models in the ensemble, n")
    axes.set_ylabel("Performance (%), mean ± std")
    axes.set_xticks(sizes)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return _save(figure, path)


def plot_tsne(
    embedding: Any,
    labels: Any,
    path: str | os.PathLike,
    title: str = "t-SNE of penultimate-layer features",
    panel_titles: Sequence[str] | None = None,
) -> Path:
    """Fig. 6: 2-D t-SNE embeddings coloured by class; several embeddings are drawn side by side.

    Args:
        embedding: one ``(N, 2)`` embedding, or a sequence of them (e.g. Softmax then A-Softmax features).
        labels: ``(N,)`` labels (1 = malignant, blue; 0 = benign, red), one array shared by all panels or a
            sequence with one array per embedding.
        path: PNG file to write.
        title: figure title.
        panel_titles: one title per panel; for two panels the default is "(a) Softmax loss" and
            "(b) A-Softmax loss" as in the paper, else "(a)", "(b)", ...

    Raises:
        DataError: when an embedding is not ``(N, 2)`` or its labels have another length.
    """
    single = isinstance(embedding, (np.ndarray, torch.Tensor)) and _as_numpy(embedding).ndim == 2
    embeddings = [_as_numpy(embedding)] if single else [_as_numpy(item) for item in embedding]
    label_sets: list[np.ndarray]
    first_label = _as_numpy(labels) if isinstance(labels, (np.ndarray, torch.Tensor)) else None
    if first_label is not None and first_label.ndim == 1:
        label_sets = [first_label] * len(embeddings)
    else:
        label_sets = [_as_numpy(item) for item in labels]
    if len(label_sets) != len(embeddings):
        raise DataError(f"{len(embeddings)} embeddings but {len(label_sets)} label arrays")
    if panel_titles is None:
        letters = "abcdefghijklmnopqrstuvwxyz"
        panel_titles = (
            ["(a) Softmax loss", "(b) A-Softmax loss"]
            if len(embeddings) == 2
            else [f"({letters[i]})" if len(embeddings) > 1 else "" for i in range(len(embeddings))]
        )
    figure = _new_figure(4.6 * len(embeddings), 4.4)
    for index, (points, truth) in enumerate(zip(embeddings, label_sets, strict=True)):
        if points.ndim != 2 or points.shape[1] != 2 or len(truth) != len(points):
            raise DataError(
                f"embedding {index} has shape {points.shape} with {len(truth)} labels; expected (N, 2) and N labels"
            )
        axes = figure.add_subplot(1, len(embeddings), index + 1)
        for value, colour, name in ((0, BENIGN_COLOUR, "benign"), (1, MALIGNANT_COLOUR, "malignant")):
            mask = truth == value
            axes.scatter(
                points[mask, 0],
                points[mask, 1],
                s=14,
                c=colour,
                alpha=0.75,
                edgecolors="none",
                label=f"{name} (n={int(mask.sum())})",
            )
        axes.set_title(panel_titles[index])
        axes.set_xlabel("t-SNE dimension 1")
        axes.set_ylabel("t-SNE dimension 2")
        axes.legend(loc="best", fontsize=8)
    figure.suptitle(title)
    return _save(figure, path)


def _volume(item: Any, what: str) -> np.ndarray:
    """A ``(D, H, W)`` float array from a ``(D, H, W)`` or ``(1, D, H, W)`` array or tensor."""
    volume = _as_numpy(item).astype(np.float32)
    if volume.ndim == 4 and volume.shape[0] == 1:
        volume = volume[0]
    if volume.ndim != 3:
        raise DataError(f"each {what} must be (D, H, W) or (1, D, H, W), got shape {volume.shape}")
    return volume


def _resize_to(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear resampling of a ``(d, h, w)`` map onto ``shape`` (no change when it already fits)."""
    if volume.shape == tuple(shape):
        return volume
    tensor = torch.from_numpy(np.ascontiguousarray(volume))[None, None]
    resized = torch.nn.functional.interpolate(tensor, size=tuple(shape), mode="trilinear", align_corners=False)
    return resized[0, 0].numpy()


def _slice(volume: np.ndarray, axis: int, index: int | None) -> np.ndarray:
    size = volume.shape[axis]
    return np.take(volume, size // 2 if index is None else index, axis=axis)


def _unit_range(image: np.ndarray, low_pct: float = 0.0, high_pct: float = 100.0) -> np.ndarray:
    low, high = np.percentile(image, [low_pct, high_pct])
    if high <= low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def _overlay_panels(
    cubes: Any,
    maps: Any,
    labels: Any,
    path: str | os.PathLike,
    map_name: str,
    title: str,
    max_per_class: int,
    axis: int,
    slice_index: int | None,
    nodule_ids: Sequence[Any] | None,
) -> Path:
    """CT slice | map | overlay for up to ``max_per_class`` malignant (left) and benign (right) nodules."""
    cube_list = [_volume(cube, "cube") for cube in cubes]
    map_list = [_volume(item, map_name) for item in maps]
    truth = _as_numpy(labels).astype(int).reshape(-1)
    if not (len(cube_list) == len(map_list) == len(truth)):
        raise DataError(f"{len(cube_list)} cubes, {len(map_list)} {map_name} maps and {len(truth)} labels differ")
    if nodule_ids is not None and len(nodule_ids) != len(truth):
        raise DataError(f"{len(nodule_ids)} nodule ids for {len(truth)} cubes")
    groups = [
        (name, [i for i in range(len(truth)) if truth[i] == value][:max_per_class])
        for name, value in (("malignant", 1), ("benign", 0))
    ]
    groups = [group for group in groups if group[1]]
    if not groups:
        raise DataError(f"no cubes to draw {map_name} panels for")
    n_rows = max(len(indices) for _, indices in groups)
    n_cols = 3 * len(groups)
    figure = _new_figure(2.0 * n_cols + 0.8, 2.1 * n_rows + 0.7)
    grid = figure.add_gridspec(n_rows, n_cols)
    colour_image = None
    for group_index, (group_name, indices) in enumerate(groups):
        for row, index in enumerate(indices):
            cube = cube_list[index]
            heat = _resize_to(map_list[index], cube.shape)
            ct_slice = _unit_range(_slice(cube, axis, slice_index), 1.0, 99.0)
            heat_slice = _unit_range(_slice(heat, axis, slice_index))
            name = f"{group_name} {row + 1}" if nodule_ids is None else f"{nodule_ids[index]}"
            panels = (
                ("CT", ct_slice, None),
                (map_name, None, heat_slice),
                ("overlay", ct_slice, heat_slice),
            )
            for col, (kind, background, foreground) in enumerate(panels):
                axes = figure.add_subplot(grid[row, 3 * group_index + col])
                if background is not None:
                    axes.imshow(background.T, cmap="gray", vmin=0.0, vmax=1.0, origin="lower")
                if foreground is not None:
                    alpha = 1.0 if background is None else 0.45
                    image = axes.imshow(foreground.T, cmap="jet", vmin=0.0, vmax=1.0, alpha=alpha, origin="lower")
                    if background is None:
                        colour_image = image  # the opaque map, so the colour bar is not faded
                axes.set_xticks([])
                axes.set_yticks([])
                axes.set_title(f"{name}: {kind}" if col == 0 else kind, fontsize=8)
    if colour_image is not None:
        colourbar = figure.colorbar(colour_image, ax=figure.axes, shrink=0.8, pad=0.01)
        colourbar.set_label(f"{map_name} (min-max scaled per nodule)", fontsize=8)
    where = "centre slice" if slice_index is None else f"slice {slice_index}"
    axis_name = f"array axis {axis % 3}"
    arrangement = "malignant left, benign right" if len(groups) == 2 else f"{groups[0][0]} only"
    figure.suptitle(f"{title} ({where} across {axis_name}; {arrangement})", fontsize=10)
    return _save(figure, path)


def plot_attention_panels(
    cubes: Any,
    attention_maps: Any,
    labels: Any,
    path: str | os.PathLike,
    max_per_class: int = 3,
    axis: int = -1,
    slice_index: int | None = None,
    nodule_ids: Sequence[Any] | None = None,
    title: str = "Stage-2 spatial attention",
) -> Path:
    """Fig. 5: a CT slice beside its CBAM spatial-attention map and their overlay, malignant and benign.

    Attention maps smaller than the cube (stage 2 runs at a lower resolution) are resampled trilinearly to
    the cube size; each map is min-max scaled for display (red high, blue low, as the paper).

    Args:
        cubes: ``K`` nodule cubes, each ``(D, H, W)`` or ``(1, D, H, W)`` (array, tensor or a ``(K, ...)`` batch).
        attention_maps: ``K`` spatial attention maps, each ``(d, h, w)`` or ``(1, d, h, w)``.
        labels: ``(K,)`` labels, 1 = malignant.
        path: PNG file to write.
        max_per_class: nodules drawn per class (the first ones of each class).
        axis: spatial axis the slice is taken across (``-1``: the last, MONAI's z for RAS-like arrays).
        slice_index: slice along ``axis``; default the centre.
        nodule_ids: optional names shown in the panel titles.
        title: figure title.

    Raises:
        DataError: when counts or shapes disagree, or there is nothing to draw.
    """
    return _overlay_panels(
        cubes, attention_maps, labels, path, "attention", title, max_per_class, axis, slice_index, nodule_ids
    )


def plot_gradcam_panels(
    cubes: Any,
    cams: Any,
    labels: Any,
    path: str | os.PathLike,
    max_per_class: int = 3,
    axis: int = -1,
    slice_index: int | None = None,
    nodule_ids: Sequence[Any] | None = None,
    title: str = "Grad-CAM",
) -> Path:
    """A CT slice beside its Grad-CAM map (e.g. from ``monai.visualize.GradCAM``) and their overlay.

    Same layout and arguments as :func:`plot_attention_panels`, with ``cams`` in place of attention maps.
    """
    return _overlay_panels(cubes, cams, labels, path, "Grad-CAM", title, max_per_class, axis, slice_index, nodule_ids)


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
    figure = _new_figure(11.0, 4.6)
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
        axes.set_ylabel(f"Validation {_METRIC_LABELS[key]}{unit}")
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right", fontsize=8)
    counts = f"{len(records)} trained" + ("" if pruned_count is None else f", {pruned_count} pruned without training")
    figure.suptitle(f"{title} ({counts})")
    return _save(figure, path)


def _history_series(history: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (epochs, values)}`` from a dict of lists or a list of per-epoch dicts (missing values skipped)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    if isinstance(history, Mapping):
        epochs_key = history.get("epoch")
        for name, values in history.items():
            if name == "epoch":
                continue
            values = list(values)
            epochs = list(epochs_key) if epochs_key is not None else list(range(1, len(values) + 1))
            series[name] = (epochs[: len(values)], values)
    else:
        for position, record in enumerate(history, start=1):
            epoch = record.get("epoch", position)
            for name, value in record.items():
                if name == "epoch" or isinstance(value, (str, bool)) or value is None:
                    continue
                xs, ys = series.setdefault(name, ([], []))
                xs.append(epoch)
                ys.append(value)
    result = {}
    for name, (xs, ys) in series.items():
        try:
            x = np.array(xs, dtype=float)
            y = np.array([np.nan if v is None else v for v in ys], dtype=float)
        except (TypeError, ValueError):
            continue  # not numeric (e.g. a spec string)
        keep = np.isfinite(y)
        if keep.any():
            result[name] = (x[keep], y[keep])
    return result


def plot_training_curves(
    history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str = "Training curves",
) -> Path:
    """Losses, validation metrics and learning rate against epochs.

    Args:
        history: ``{"train_loss": [...], "val_f1": [...], "epoch": [...]}`` (``epoch`` optional), or a list of
            per-epoch dicts such as the lines of a metrics JSONL log; metrics logged only on some epochs are
            drawn at those epochs. Keys containing ``loss`` go to the left panel, ``lr`` keys to a log-scale
            panel, everything else (metrics, as fractions or percent) to the middle one.
        path: PNG file to write.
        title: figure title.

    Raises:
        DataError: when the history holds no numeric series.
    """
    series = _history_series(history)
    if not series:
        raise DataError("the training history holds no numeric series to plot")
    panels = {
        "Loss": [n for n in series if "loss" in n.lower()],
        "Metric": [n for n in series if "loss" not in n.lower() and not _is_lr(n)],
        "Learning rate": [n for n in series if _is_lr(n) and "loss" not in n.lower()],
    }
    panels = {name: keys for name, keys in panels.items() if keys}
    figure = _new_figure(4.6 * len(panels), 3.8)
    for index, (panel, keys) in enumerate(panels.items()):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for key in keys:
            x, y = series[key]
            axes.plot(x, y, marker="o" if len(x) <= 30 else None, markersize=3, label=key)
        if panel == "Learning rate" and all((series[k][1] > 0).all() for k in keys):
            axes.set_yscale("log")
        axes.set_xlabel("Epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(panel)
        axes.set_title(panel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    return _save(figure, path)


def _is_lr(name: str) -> bool:
    lowered = name.lower()
    return lowered == "lr" or lowered.endswith("_lr") or lowered.startswith("lr_") or "learning_rate" in lowered


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
    figure = _new_figure(4.2 * max(len(kinds), 1), 3.8)
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
    return _save(figure, path)


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
    figure = _new_figure(4.2 * len(metrics), 3.8)
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
        axes.set_ylabel(f"{_METRIC_LABELS.get(metric, metric)} (%)")
        axes.grid(alpha=0.3)
        if index == 0:
            axes.legend(fontsize=6, loc="best")
    figure.suptitle(title)
    return _save(figure, path)
