"""Cross-validation folds of the nodule cohort: by patient, stratified by label, or LUNA16's own ten subsets.

NAS-Lung (section 4.1) uses "the 10-fold cross validation split" LUNA16 gives and evaluates "on folds 1-5".
Folds here are numbered 0..9 like LUNA16's ``subset0`` .. ``subset9``: fold ``f`` is LUNA16's ``subset f``, so
the paper's folds 1-5 are folds (subsets) 0-4. Without LUNA16's lists, :func:`assign_folds` makes a split of the
same kind: every patient's nodules in one fold, each fold with about a tenth of the malignant and of the benign
nodules, deterministic from a seed.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from naslung.pipeline.errors import ConfigError, DataError

__all__ = ["assign_folds", "read_luna16_subsets", "PAPER_FOLDS"]

logger = logging.getLogger(__name__)

#: The folds NAS-Lung reports on ("folds 1-5" in the paper), in this module's 0-based numbering (= LUNA16 subsets).
PAPER_FOLDS: tuple[int, ...] = (0, 1, 2, 3, 4)

_SUBSET_NAME = re.compile(r"^(?:subset)?\s*(\d+)$", re.IGNORECASE)


def assign_folds(
    rows: Iterable[Mapping[str, Any]],
    n_folds: int = 10,
    seed: int = 0,
    subsets: Mapping[str, int] | None = None,
    on_missing: str = "drop",
    keep: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Copies of the cohort rows with a ``fold`` (0 .. n_folds-1): by patient and stratified by label.

    Greedy stratification: patients are shuffled with ``seed``, then taken in order of decreasing nodule count
    (ties in shuffled order), and each goes to the fold whose squared distance from the per-fold targets (a
    ``1/n_folds`` share of the malignant and of the benign nodules) grows least by taking it; ties go to the
    fold with fewer nodules, then the lower index. All nodules of a patient share a fold.

    With ``keep`` (patient id -> fold, e.g. the folds of an earlier version of the cohort) the patients it names
    keep their fold and count towards the per-fold totals first; only the other patients are placed greedily.
    A rebuilt cohort thus moves no patient between folds (its folds may be a little less balanced).

    With ``subsets`` (series UID -> LUNA16 subset, from :func:`read_luna16_subsets`) the fold of a nodule is the
    subset of its series instead, and ``n_folds``/``seed`` are ignored.

    Args:
        rows: cohort rows with ``patient_id``, ``series_uid`` and ``label`` (0/1).
        n_folds: number of folds (>= 2).
        seed: seed of the patient shuffle.
        subsets: series UID -> subset (0..9); None for the stratified split.
        on_missing: with ``subsets``, what to do with rows whose series is not listed: ``"drop"`` them (LUNA16
            excluded that scan; logged) or ``"error"``.
        keep: patient id -> fold (0 .. n_folds-1) for patients whose fold must not change; patients it names
            that have no row are ignored. Not used with ``subsets``.

    Returns:
        new dict rows, in the input order (minus dropped rows), each with ``fold`` set.

    Raises:
        ConfigError: ``n_folds`` < 2, an unknown ``on_missing``, or a ``keep`` fold outside 0 .. n_folds-1.
        DataError: a row lacks ``patient_id``/``series_uid``/``label``, or (``on_missing="error"``) a series is
            not in ``subsets``.
    """
    rows = [dict(r) for r in rows]
    if subsets is not None:
        return _folds_from_subsets(rows, subsets, on_missing)
    if int(n_folds) != n_folds or n_folds < 2:
        raise ConfigError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    n_folds = int(n_folds)
    counts: dict[str, np.ndarray] = {}  # patient -> [benign, malignant]
    for row in rows:
        try:
            patient, label = str(row["patient_id"]), int(float(row["label"]))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(
                f"cohort row {row.get('nodule_id', '?')!r} needs patient_id and a 0/1 label ({err!r})"
            ) from err
        if label not in (0, 1):
            raise DataError(f"cohort row {row.get('nodule_id', '?')!r} has label {label}; labels are 0 or 1")
        counts.setdefault(patient, np.zeros(2, dtype=np.int64))[label] += 1

    patients = sorted(counts)
    order = np.random.default_rng(seed).permutation(len(patients))
    shuffled = [patients[n] for n in order]
    shuffled.sort(key=lambda p: -int(counts[p].sum()))  # stable: ties stay in shuffled order
    total = np.sum([counts[p] for p in patients], axis=0) if patients else np.zeros(2)
    target = total / n_folds
    per_fold = np.zeros((n_folds, 2), dtype=np.float64)
    fold_of: dict[str, int] = {}
    for patient, fold in sorted((keep or {}).items()):
        if str(patient) not in counts:
            continue
        if int(fold) != fold or not 0 <= fold < n_folds:
            raise ConfigError(f"patient {patient} is to keep fold {fold!r}, outside 0..{n_folds - 1}")
        fold_of[str(patient)] = int(fold)
        per_fold[int(fold)] += counts[str(patient)]
    for patient in shuffled:
        if patient in fold_of:
            continue
        after = per_fold + counts[patient]
        # growth of the squared distance from the targets if the patient joins each fold
        cost = ((after - target) ** 2).sum(axis=1) - ((per_fold - target) ** 2).sum(axis=1)
        size = per_fold.sum(axis=1)
        best = min(range(n_folds), key=lambda f: (round(float(cost[f]), 9), float(size[f]), f))
        per_fold[best] += counts[patient]
        fold_of[patient] = best
    for row in rows:
        row["fold"] = fold_of[str(row["patient_id"])]
    return rows


def _folds_from_subsets(
    rows: list[dict[str, Any]], subsets: Mapping[str, int], on_missing: str
) -> list[dict[str, Any]]:
    if on_missing not in ("drop", "error"):
        raise ConfigError(f"on_missing must be 'drop' or 'error', got {on_missing!r}")
    kept: list[dict[str, Any]] = []
    missing: set[str] = set()
    for row in rows:
        try:
            uid = str(row["series_uid"])
        except KeyError as err:
            raise DataError(f"cohort row {row.get('nodule_id', '?')!r} has no series_uid") from err
        if uid in subsets:
            row["fold"] = int(subsets[uid])
            kept.append(row)
        else:
            missing.add(uid)
    if missing:
        if on_missing == "error":
            raise DataError(
                f"{len(missing)} series of the cohort are in no LUNA16 subset, e.g. {sorted(missing)[:3]}; "
                "pass the complete subset table or on_missing='drop'"
            )
        logger.warning(
            "%d series of the cohort (%d nodules) are in no LUNA16 subset and were dropped, e.g. %s",
            len(missing),
            len(rows) - len(kept),
            sorted(missing)[:3],
        )
    return kept


def _parse_subset(value: str) -> int:
    match = _SUBSET_NAME.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a subset (0..9 or 'subset0'..'subset9')")
    subset = int(match.group(1))
    if not 0 <= subset <= 9:
        raise ValueError(f"subset {subset} is outside 0..9")
    return subset


def read_luna16_subsets(csv_path: str | os.PathLike) -> dict[str, int]:
    """LUNA16's series UID -> subset (0..9) table.

    Accepts a CSV with a ``seriesuid`` (or ``series_uid``) column and a ``subset`` (or ``fold``) column holding
    ``3`` or ``subset3``, or LUNA16's own layout: a folder holding ``subset0`` .. ``subset9`` folders of
    ``<seriesuid>.mhd`` files.

    Args:
        csv_path: the CSV file, or the LUNA16 folder.

    Returns:
        series UID -> subset.

    Raises:
        DataError: the file is missing, lacks the columns, has a bad subset, lists a series in two subsets, or
            lists nothing (the message names the file and line).
    """
    source = Path(csv_path)
    if source.is_dir():
        return _subsets_from_folders(source)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise DataError("LUNA16 subset table not found", path=str(source)) from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the LUNA16 subset table ({err})", path=str(source)) from err
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    uid_column = next((c for c in ("seriesuid", "series_uid") if c in header), None)
    subset_column = next((c for c in ("subset", "fold") if c in header), None)
    if uid_column is None or subset_column is None:
        raise DataError(
            f"the LUNA16 subset table needs a 'seriesuid' and a 'subset' column, found {header}", path=str(source)
        )
    table: dict[str, int] = {}
    for line, record in enumerate(reader, start=2):
        uid = (record.get(uid_column) or "").strip()
        try:
            if not uid:
                raise ValueError("empty series UID")
            subset = _parse_subset(record.get(subset_column) or "")
        except ValueError as err:
            raise DataError(f"line {line}: {err}", path=str(source)) from err
        if table.get(uid, subset) != subset:
            raise DataError(f"line {line}: series {uid} is listed in subsets {table[uid]} and {subset}", str(source))
        table[uid] = subset
    if not table:
        raise DataError("the LUNA16 subset table lists no series", path=str(source))
    return table


def _subsets_from_folders(root: Path) -> dict[str, int]:
    table: dict[str, int] = {}
    for folder in sorted(root.iterdir()):
        match = re.fullmatch(r"subset(\d)", folder.name)
        if not (folder.is_dir() and match):
            continue
        for mhd in sorted(folder.glob("*.mhd")):
            table[mhd.stem] = int(match.group(1))
    if not table:
        raise DataError("no subset0..subset9 folders with .mhd files: not a LUNA16 folder", path=str(root))
    return table
