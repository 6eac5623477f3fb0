"""Datalists of nodule cubes (MONAI-style lists of dicts) and the honest train/validation/test split per fold."""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.errors import DataError

__all__ = [
    "MANIFEST_FIELD_ORDER",
    "MANIFEST_COLUMNS",
    "read_manifest",
    "FoldSplit",
    "split_for_fold",
    "class_balanced_weights",
]

logger = logging.getLogger(__name__)

#: Every column of a cube manifest, in order (``prepare embedded`` and ``prepare dicom|luna16|lidc`` write them).
MANIFEST_FIELD_ORDER: tuple[str, ...] = (
    "nodule_id",
    "patient_id",
    "series_uid",
    "image",
    "label",
    "fold",
    "diameter_mm",
    "malignancy_mean",
    "x_mm",
    "y_mm",
    "z_mm",
    "i",
    "j",
    "k",
    "source",
)

#: Columns every cube manifest has (``prepare`` and ``prepare embedded`` write them).
MANIFEST_COLUMNS: tuple[str, ...] = ("nodule_id", "patient_id", "series_uid", "image", "label", "fold")


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a cube manifest CSV into a datalist with absolute ``image`` paths and int ``label``/``fold``.

    Args:
        path: ``manifest.csv`` written by ``naslung prepare``; ``image`` paths are relative to its folder.

    Raises:
        DataError: the file is missing, lacks a required column, or holds a bad label/fold/missing cube.
    """
    manifest = Path(path)
    if not manifest.is_file():
        raise DataError(
            "manifest not found; run `naslung prepare embedded|dicom|luna16|lidc` first", path=str(manifest)
        )
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"missing column(s) {missing}; expected at least {list(MANIFEST_COLUMNS)}", path=str(manifest)
            )
        rows = list(reader)
    datalist: list[dict[str, Any]] = []
    for line, row in enumerate(rows, start=2):
        try:
            label, fold = int(row["label"]), int(row["fold"])
        except ValueError:
            raise DataError(
                f"line {line}: label/fold must be integers, got {row['label']!r}/{row['fold']!r}", path=str(manifest)
            ) from None
        if label not in (0, 1):
            raise DataError(f"line {line}: label must be 0 (benign) or 1 (malignant), got {label}", path=str(manifest))
        image = (manifest.parent / row["image"]).resolve()
        if not image.is_file():
            raise DataError(f"line {line}: cube {image} does not exist; re-run prepare", path=str(manifest))
        item: dict[str, Any] = dict(row)
        item.update(image=str(image), label=label, fold=fold)
        datalist.append(item)
    if not datalist:
        raise DataError("manifest has no rows", path=str(manifest))
    return datalist


class FoldSplit:
    """Train, validation and test datalists for one held-out test fold.

    The test fold is never seen during training or model selection: validation is carved from the training
    folds by patient (all nodules of a patient on one side), stratified by label, deterministic from ``seed``.

    Args:
        train: items used for gradient steps.
        val: items used to pick checkpoints, candidates and thresholds.
        test: the held-out fold, used only for the final report.
    """

    def __init__(self, train: list[dict], val: list[dict], test: list[dict]) -> None:
        self.train, self.val, self.test = train, val, test

    def __repr__(self) -> str:
        return f"FoldSplit(train={len(self.train)}, val={len(self.val)}, test={len(self.test)})"


def split_for_fold(
    datalist: Sequence[dict[str, Any]], test_fold: int | None, val_fraction: float = 0.1, seed: int = 0
) -> FoldSplit:
    """Split a datalist into train/val/test for ``test_fold`` (``None``: no test set, e.g. the search).

    Args:
        datalist: items with ``patient_id``, ``label`` and ``fold``.
        test_fold: the held-out fold number; its items form ``test`` only.
        val_fraction: share of the remaining nodules (approximately, by whole patients) used for validation.
        seed: makes the patient draw deterministic.

    Raises:
        DataError: the test fold is empty, or too few patients remain to carve a validation set.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    test = [d for d in datalist if test_fold is not None and int(d["fold"]) == test_fold]
    if test_fold is not None and not test:
        folds = sorted({int(d["fold"]) for d in datalist})
        raise DataError(f"fold {test_fold} holds no nodules; folds present: {folds}")
    rest = [d for d in datalist if test_fold is None or int(d["fold"]) != test_fold]
    patients: dict[str, list[dict]] = {}
    for item in rest:
        patients.setdefault(str(item.get("patient_id", item.get("nodule_id"))), []).append(item)
    if len(patients) < 2:
        raise DataError(f"only {len(patients)} patient(s) outside the test fold: cannot carve a validation set")
    rng = np.random.default_rng(seed)
    val_ids: set[str] = set()
    for label in (1, 0):  # stratify: patients grouped by whether they carry any malignant nodule
        group = sorted(p for p, items in patients.items() if (max(int(i["label"]) for i in items) == 1) == (label == 1))
        if not group:
            continue
        order = rng.permutation(len(group))
        target = val_fraction * sum(len(patients[p]) for p in group)
        taken = 0
        for idx in order:
            if taken >= target or len(val_ids) >= len(patients) - 1:
                break
            pid = group[idx]
            val_ids.add(pid)
            taken += len(patients[pid])
    val = [i for p in sorted(val_ids) for i in patients[p]]
    train = [i for p, items in patients.items() if p not in val_ids for i in items]
    if not train or not val:
        raise DataError(f"split left train={len(train)} val={len(val)} items; use more data or another val_fraction")
    logger.info("fold %s: train %d, val %d, test %d nodules", test_fold, len(train), len(val), len(test))
    return FoldSplit(train=train, val=val, test=test)


def class_balanced_weights(datalist: Sequence[Mapping[str, Any]], label_key: str = "label") -> list[float]:
    """Per-item sampling weights that give every class the same expected share of a draw.

    For ``torch.utils.data.WeightedRandomSampler`` (the training config's ``class_balance``): an item of class
    ``c`` weighs ``1 / (K * n_c)``, so the weights sum to 1 and each of the K classes is drawn with probability
    ``1 / K``. The embedded cohort is 45% malignant; without balancing, short runs lean towards "benign".

    Raises:
        DataError: an item has no ``label_key``.
    """
    try:
        labels = [int(item[label_key]) for item in datalist]
    except KeyError:
        raise DataError(f"class_balanced_weights: an item has no {label_key!r} key") from None
    counts = Counter(labels)
    return [1.0 / (len(counts) * counts[label]) for label in labels]
