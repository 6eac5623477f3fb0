"""What the trained networks of a run hold: the network rebuilt from a fold folder, its cost, its test predictions.

The ensemble, the baselines' records, the analyses and the report read trained networks through these functions;
:mod:`naslung.pipeline.run.layout` finds the folders.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from naslung.networks import count_parameters, profile
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.run.layout import CHECKPOINT, FOLD_CONFIG

__all__ = ["PREDICTION_COLUMNS", "load_trained_network", "network_cost", "read_test_predictions"]

logger = logging.getLogger(__name__)

#: Columns of a fold's ``test_predictions.csv``.
PREDICTION_COLUMNS: tuple[str, ...] = ("nodule_id", "label", "probability")


def load_trained_network(
    fold_dir: str | os.PathLike, device: str | torch.device = "cpu", checkpoint: str = CHECKPOINT
) -> torch.nn.Module:
    """Rebuild a trained network from a fold folder: ``network_def`` of its ``config.json`` plus its weights.

    Args:
        fold_dir: ``.../fold_<k>`` written by :func:`naslung.pipeline.training.step.train_fold`.
        device: where to put the network.
        checkpoint: weights file relative to ``fold_dir`` (a plain ``state_dict``).

    Returns:
        the network in eval mode.

    Raises:
        DataError: when the config or checkpoint is missing or the weights do not fit the network.
        ConfigError: when ``network_def`` cannot be instantiated.
    """
    folder = Path(fold_dir)
    config_path, weights_path = folder / FOLD_CONFIG, folder / checkpoint
    for path in (config_path, weights_path):
        if not path.is_file():
            raise DataError("missing; re-run the training of this fold", path=str(path))
    try:
        network = ConfigParser(json.loads(config_path.read_text(encoding="utf-8"))).get_parsed_content("network_def")
    except Exception as err:  # noqa: BLE001 - bundle parsing raises many kinds
        raise ConfigError(f"{config_path}: cannot build network_def ({err})") from err
    try:
        network.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    except RuntimeError as err:
        raise DataError(f"weights do not fit the network of config.json ({err})", path=str(weights_path)) from err
    return network.to(device).eval()


def network_cost(
    fold_dir: str | os.PathLike, latency: bool = True, input_shape: Sequence[int] = (1, 32, 32, 32)
) -> dict[str, Any]:
    """Parameters and CPU latency (batch 1, ms per nodule) of the network trained in a fold folder.

    The network is rebuilt with :func:`load_trained_network`; latency comes from :func:`naslung.networks.profile`
    on one CPU thread. When the network cannot be rebuilt the parameters are counted from the checkpoint's
    tensors (running statistics excluded) and latency is left empty.

    Args:
        fold_dir: ``.../fold_<k>`` with ``config.json`` and ``checkpoints/best_model.pt``.
        latency: measure the latency (off: parameters only).
        input_shape: one input without the batch axis, ``(C, D, H, W)``.

    Returns:
        ``{"params": int | None, "latency_ms": float | None}``.
    """
    folder = Path(fold_dir)
    try:
        network = load_trained_network(folder, device="cpu")
    except Exception as err:  # noqa: BLE001 - any failure here only costs the latency column
        logger.warning("cannot rebuild %s (%s); counting parameters from its checkpoint", folder, err)
        checkpoint = folder / CHECKPOINT
        if not checkpoint.is_file():
            return {"params": None, "latency_ms": None}
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        skipped = ("running_mean", "running_var", "num_batches_tracked")
        params = sum(v.numel() for k, v in state.items() if not k.endswith(skipped))
        return {"params": int(params), "latency_ms": None}
    cost: dict[str, Any] = {"params": count_parameters(network), "latency_ms": None}
    if latency:
        measured = profile(network, input_shape, device="cpu", large_batch=1, warmup=3, repeats=10, num_threads=1)
        cost["latency_ms"] = measured.latency_ms_per_nodule
    return cost


def read_test_predictions(path: str | os.PathLike) -> dict[str, tuple[int, float]]:
    """``{nodule_id: (label, probability of malignancy)}`` from a ``test_predictions.csv``.

    Raises:
        DataError: a missing column, a duplicate nodule, or a label/probability that does not parse.
    """
    source = Path(path)
    with open(source, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in PREDICTION_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"missing column(s) {missing}; expected {list(PREDICTION_COLUMNS)}", path=str(source))
        rows: dict[str, tuple[int, float]] = {}
        for line, row in enumerate(reader, start=2):
            nodule_id = row["nodule_id"]
            if nodule_id in rows:
                raise DataError(f"line {line}: nodule {nodule_id!r} appears twice", path=str(source))
            try:
                rows[nodule_id] = (int(float(row["label"])), float(row["probability"]))
            except ValueError:
                raise DataError(
                    f"line {line}: label {row['label']!r} / probability {row['probability']!r} are not numbers",
                    path=str(source),
                ) from None
    if not rows:
        raise DataError("no predictions; re-run the training of this fold", path=str(source))
    return rows
