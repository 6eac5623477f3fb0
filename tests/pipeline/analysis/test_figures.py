"""Tests of naslung.pipeline.analysis.figures: every figure is written as a non-empty PNG, and bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from naslung.pipeline.analysis.figures import (
    plot_attention_panels,
    plot_gradcam_panels,
    plot_training_curves,
    plot_tsne,
)
from naslung.pipeline.errors import DataError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert not list(path.parent.glob(".*tmp*"))


def _cubes(n=4, size=16):
    grid = np.stack(np.meshgrid(*[np.arange(size) - size / 2] * 3, indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    cubes = np.stack([np.where(radius < 3 + k, 100.0, -800.0) for k in range(n)]).astype(np.float32)
    return cubes, radius


@pytest.mark.parametrize("n_panels", [1, 2, 3])
def test_plot_tsne(tmp_path, n_panels):
    rng = np.random.default_rng(n_panels)
    labels = np.arange(30) % 2
    embeddings = [rng.normal(size=(30, 2)) + labels[:, None] * 3 for _ in range(n_panels)]
    embedding = embeddings[0] if n_panels == 1 else embeddings
    _assert_png(plot_tsne(embedding, labels, tmp_path / "fig6.png", title="test"))


def test_plot_tsne_rejects_mismatch(tmp_path):
    with pytest.raises(DataError):
        plot_tsne(np.zeros((5, 2)), np.zeros(4), tmp_path / "bad.png")
    with pytest.raises(DataError):
        plot_tsne([np.zeros((5, 2))] * 2, [np.zeros(5)], tmp_path / "bad.png")


# [cube layout, map size, labels] maps smaller than the cube are upsampled
PANEL_CASES = [
    ["batch", 8, [1, 0, 1, 0]],
    ["channel_first_list", 16, [1, 1, 1, 1]],  # one class only
    ["tensor", 4, [0, 1, 0, 0]],
]


@pytest.mark.parametrize("layout, map_size, labels", PANEL_CASES)
@pytest.mark.parametrize("plot", [plot_attention_panels, plot_gradcam_panels])
def test_overlay_panels(tmp_path, plot, layout, map_size, labels):
    cubes, radius = _cubes()
    maps = np.exp(-((radius - 4) ** 2) / 8.0)[:: 16 // map_size, :: 16 // map_size, :: 16 // map_size]
    maps = np.stack([maps] * 4)
    if layout == "channel_first_list":
        cubes, maps = [c[None] for c in cubes], [m[None] for m in maps]
    elif layout == "tensor":
        cubes, maps = torch.from_numpy(cubes)[:, None], torch.from_numpy(maps)[:, None]
    path = plot(cubes, maps, labels, tmp_path / "fig5.png", max_per_class=2)
    _assert_png(path)


def test_overlay_panels_reject_bad_input(tmp_path):
    cubes, _ = _cubes(2)
    with pytest.raises(DataError):
        plot_attention_panels(cubes, cubes[:1], [0, 1], tmp_path / "bad.png")
    with pytest.raises(DataError):
        plot_attention_panels(cubes[:, :4, :4, 0], cubes[:, :4, :4, 0], [0, 1], tmp_path / "bad.png")


HISTORY_CASES = [
    {"train_loss": [1.0, 0.5, 0.3], "val_f1": [0.6, 0.7, 0.8], "lr": [2e-4, 1e-4, 5e-5]},
    [{"epoch": e, "train_loss": 1 / (e + 1), "val_accuracy": 0.7 if e % 2 else None, "spec": "x"} for e in range(6)],
]


@pytest.mark.parametrize("history", HISTORY_CASES)
def test_plot_training_curves(tmp_path, history):
    _assert_png(plot_training_curves(history, tmp_path / "curves.png"))


def test_plot_training_curves_rejects_empty(tmp_path):
    with pytest.raises(DataError):
        plot_training_curves([{"spec": "x"}], tmp_path / "bad.png")
