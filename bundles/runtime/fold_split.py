"""The honest train/validation/test split of a datalist for one held-out fold: validation carved by patient.

The floor under :mod:`naslung.pipeline.data.datalists` (which re-exports it); a bundle's fine-tuning datalist is split
the same way (:func:`naslung.bundles.runtime.nodule_inputs.split_train_val`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from naslung.networks.errors import DataError

__all__ = ["FoldSplit", "split_for_fold"]

logger = logging.getLogger(__name__)


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
