"""Datalists of nodule cubes (MONAI-style lists of dicts) and the honest train/validation/test split per fold."""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from naslung.bundles.runtime.fold_split import FoldSplit, split_for_fold
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
