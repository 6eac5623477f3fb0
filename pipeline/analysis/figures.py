"""The evaluate step's figures: t-SNE of penultimate features (the paper's Fig. 6), attention and Grad-CAM panels
(Fig. 5) of held-out cubes, and training curves; PNG files written atomically."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from naslung.pipeline.analysis.features import default_gradcam_layer, gradcam_maps, load_cubes
from naslung.pipeline.atomic_io import read_jsonl
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.plotting import BENIGN_COLOUR, MALIGNANT_COLOUR, as_numpy, new_figure, save_figure
from naslung.pipeline.run.layout import (
    FOLD_CONFIG,
    HISTORY,
    RunLayout,
    fold_of,
)
from naslung.pipeline.run.members import load_trained_network

__all__ = [
    "plot_tsne",
    "plot_attention_panels",
    "plot_gradcam_panels",
    "plot_training_curves",
    "attention_figure",
    "gradcam_figure",
    "training_curve_figures",
]

logger = logging.getLogger(__name__)


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
    single = isinstance(embedding, (np.ndarray, torch.Tensor)) and as_numpy(embedding).ndim == 2
    embeddings = [as_numpy(embedding)] if single else [as_numpy(item) for item in embedding]
    label_sets: list[np.ndarray]
    first_label = as_numpy(labels) if isinstance(labels, (np.ndarray, torch.Tensor)) else None
    if first_label is not None and first_label.ndim == 1:
        label_sets = [first_label] * len(embeddings)
    else:
        label_sets = [as_numpy(item) for item in labels]
    if len(label_sets) != len(embeddings):
        raise DataError(f"{len(embeddings)} embeddings but {len(label_sets)} label arrays")
    if panel_titles is None:
        letters = "abcdefghijklmnopqrstuvwxyz"
        panel_titles = (
            ["(a) Softmax loss", "(b) A-Softmax loss"]
            if len(embeddings) == 2
            else [f"({letters[i]})" if len(embeddings) > 1 else "" for i in range(len(embeddings))]
        )
    figure = new_figure(4.6 * len(embeddings), 4.4)
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
    return save_figure(figure, path)


def _volume(item: Any, what: str) -> np.ndarray:
    """A ``(D, H, W)`` float array from a ``(D, H, W)`` or ``(1, D, H, W)`` array or tensor."""
    volume = as_numpy(item).astype(np.float32)
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
    truth = as_numpy(labels).astype(int).reshape(-1)
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
    figure = new_figure(2.0 * n_cols + 0.8, 2.1 * n_rows + 0.7)
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
    return save_figure(figure, path)


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
    figure = new_figure(4.6 * len(panels), 3.8)
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
    return save_figure(figure, path)


def _is_lr(name: str) -> bool:
    lowered = name.lower()
    return lowered == "lr" or lowered.endswith("_lr") or lowered.startswith("lr_") or "learning_rate" in lowered


def _examples(datalist: Sequence[Mapping[str, Any]], per_class: int) -> list[Mapping[str, Any]]:
    """The first ``per_class`` malignant and benign nodules of a fold, by nodule id (chosen by label only)."""
    ordered = sorted(datalist, key=lambda d: str(d["nodule_id"]))
    malignant = [d for d in ordered if int(d["label"]) == 1][:per_class]
    benign = [d for d in ordered if int(d["label"]) == 0][:per_class]
    return malignant + benign


def attention_figure(
    fold_dir: str | os.PathLike,
    test_items: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    per_class: int = 3,
    stage: str = "stage2",
    title: str | None = None,
) -> Path:
    """Fig. 5: CT slices beside the ``stage`` spatial attention map of a trained CBAM network.

    Args:
        fold_dir: the trained network's fold folder.
        test_items: the held-out fold's datalist items; the first ``per_class`` of each class (by nodule id) are drawn.
        path: PNG to write.
        per_class: nodules per class.
        stage: which stage's CBAM map (``"stage2"``: full resolution, as the paper shows).
        title: figure title.

    Raises:
        ConfigError: when the network records no attention map for ``stage`` (no CBAM).
    """
    network = load_trained_network(fold_dir)
    chosen = _examples(test_items, per_class)
    images, labels, ids = load_cubes(chosen)
    with torch.no_grad():
        probabilities = torch.softmax(network(images), dim=1)[:, 1].numpy()
    maps = network.attention_maps() if callable(getattr(network, "attention_maps", None)) else {}
    if stage not in maps:
        raise ConfigError(f"{fold_dir}: the network records no {stage} attention map (trained without CBAM?)")
    names = [f"{i}\n(p={p:.2f})" for i, p in zip(ids, probabilities, strict=True)]  # two lines: ids are long
    return plot_attention_panels(
        images,
        maps[stage],
        labels,
        path,
        max_per_class=per_class,
        nodule_ids=names,
        title=title or f"{stage.replace('stage', 'Stage-')} spatial attention",
    )


def gradcam_figure(
    fold_dir: str | os.PathLike,
    test_items: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    per_class: int = 3,
    target_layer: str | None = None,
    class_idx: int | None = None,
    title: str | None = None,
) -> Path:
    """Grad-CAM panels (CT slice, map, overlay) of a trained network on held-out nodules; see :func:`gradcam_maps`."""
    network = load_trained_network(fold_dir)
    chosen = _examples(test_items, per_class)
    images, labels, ids = load_cubes(chosen)
    layer = target_layer or default_gradcam_layer(network, tuple(images.shape[1:]))
    cams = gradcam_maps(network, images, layer, class_idx)
    with torch.no_grad():
        probabilities = torch.softmax(network(images), dim=1)[:, 1].numpy()
    names = [f"{i}\n(p={p:.2f})" for i, p in zip(ids, probabilities, strict=True)]  # two lines: ids are long
    target = "predicted class" if class_idx is None else f"class {class_idx}"
    return plot_gradcam_panels(
        images,
        cams,
        labels,
        path,
        max_per_class=per_class,
        nodule_ids=names,
        title=f"{title or 'Grad-CAM'}: layer '{layer}', {target}",
    )


def training_curve_figures(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """One PNG per network of ``RUN/train``: training loss and validation F1 per epoch, one line per fold.

    Returns:
        the written ``training_curves_<slug>.png`` paths.
    """
    written = []
    for member in RunLayout(Path(run_dir)).trained().values():
        records: list[dict[str, Any]] = []
        spec = member.slug
        fold_dirs = sorted(
            (d for d in member.directory.iterdir() if fold_of(d.name) is not None), key=lambda d: fold_of(d.name)
        )
        for fold_dir in fold_dirs:
            fold = fold_of(fold_dir.name)
            for record in read_jsonl(fold_dir / HISTORY):
                entry: dict[str, Any] = {"epoch": record.get("epoch")}
                for key in ("train_loss", "val_f1"):
                    if key in record:
                        entry[f"{key} (fold {fold})"] = record[key]
                records.append(entry)
            config = fold_dir / FOLD_CONFIG
            if config.is_file():
                spec = str(json.loads(config.read_text(encoding="utf-8")).get("arch", spec))
        if not records:
            continue
        written.append(
            plot_training_curves(
                records, Path(out_dir) / f"training_curves_{member.slug}.png", title=f"Training curves of {spec}"
            )
        )
    return written
