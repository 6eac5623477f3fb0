"""The cohort table: its columns, its CSV file (plain or gzip) and the packaged default cohort with its rules."""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from naslung.pipeline.atomic_io import atomic_path
from naslung.pipeline.errors import DataError

__all__ = [
    "CHARACTERISTICS",
    "COHORT_COLUMNS",
    "REQUIRED_COLUMNS",
    "DEFAULT_COHORT_FILE",
    "DEFAULT_RULES_FILE",
    "summarise_cohort",
    "write_cohort_csv",
    "read_cohort_csv",
    "load_default_cohort",
    "load_default_rules",
]

#: The nine LIDC characteristics each reader rated, in pylidc's order (``pylidc.annotation_feature_names``).
CHARACTERISTICS: tuple[str, ...] = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)

#: Columns every cohort CSV must have (what ``prepare`` and the renderers read).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "series_uid",
    "nodule_id",
    "i",
    "j",
    "k",
    "z_mm",
    "diameter_mm",
    "n_readers",
    "malignancy_mean",
    "label",
    "fold",
    "pixel_spacing_mm",
    "slice_thickness_mm",
    "slice_spacing_mm",
    "n_slices",
    "annotation_ids",
)

#: All columns of a derived cohort, in file order: the required ones, then each characteristic as the
#: ';'-joined per-reader integers (in the order of ``annotation_ids``).
COHORT_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + CHARACTERISTICS

_STR_COLUMNS = ("patient_id", "series_uid", "nodule_id")
_INT_COLUMNS = ("n_readers", "label", "fold", "n_slices")
_FLOAT_COLUMNS = (
    "i",
    "j",
    "k",
    "z_mm",
    "diameter_mm",
    "malignancy_mean",
    "pixel_spacing_mm",
    "slice_thickness_mm",
    "slice_spacing_mm",
)
_LIST_COLUMNS = ("annotation_ids", *CHARACTERISTICS)

#: The packaged default cohort and the rules/counts it was made with (files of ``naslung.pipeline``).
DEFAULT_COHORT_FILE = "data/cohort_default.csv.gz"
DEFAULT_RULES_FILE = "data/cohort_default.json"


def summarise_cohort(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Counts of a cohort: ``nodules``, ``malignant``, ``benign``, ``scans``, ``patients``."""
    labels = [int(float(r["label"])) for r in rows]
    return {
        "nodules": len(rows),
        "malignant": sum(1 for v in labels if v == 1),
        "benign": sum(1 for v in labels if v == 0),
        "scans": len({str(r["series_uid"]) for r in rows}),
        "patients": len({str(r["patient_id"]) for r in rows}),
    }


def write_cohort_csv(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write cohort rows atomically as CSV (gzip-compressed, reproducibly, when ``path`` ends in ``.gz``).

    Columns are :data:`COHORT_COLUMNS` (empty where a row lacks one) followed by any extra keys of the rows.
    ``None`` is written as an empty cell.

    Args:
        rows: cohort rows (dicts as returned by :func:`derive_cohort` or :func:`read_cohort_csv`).
        path: the CSV file to write.

    Returns:
        ``path``.
    """
    rows = list(rows)
    extra: list[str] = []
    for row in rows:
        extra.extend(k for k in row if k not in COHORT_COLUMNS and k not in extra)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=[*COHORT_COLUMNS, *extra], restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    data = buffer.getvalue().encode("utf-8")
    target = Path(path)
    with atomic_path(target) as tmp:
        if target.name.endswith(".gz"):
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as handle:
                handle.write(data)
        else:
            tmp.write_bytes(data)
    return target


def _convert(value: str, column: str) -> Any:
    """One CSV cell to its type; raises ValueError on a bad value."""
    text = value.strip()
    if column in _STR_COLUMNS:
        if not text:
            raise ValueError("empty")
        return text
    if column in _INT_COLUMNS:
        if column == "fold" and text in ("", "None"):
            return None
        number = float(text)
        if not number.is_integer():
            raise ValueError("not an integer")
        if column == "label" and number not in (0, 1):
            raise ValueError("labels are 0 (benign) or 1 (malignant)")
        return int(number)
    if column in _FLOAT_COLUMNS:
        number = float(text)
        if not math.isfinite(number):
            raise ValueError("not finite")
        return number
    if column in _LIST_COLUMNS:
        for part in text.split(";") if text else []:
            int(part)
        return text
    return value


def read_cohort_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a cohort CSV (plain or gzip) into typed rows.

    Types: ``patient_id``, ``series_uid``, ``nodule_id`` str; ``n_readers``, ``label`` (0/1), ``n_slices`` int;
    ``fold`` int or None (empty cell); coordinates, spacings, ``diameter_mm`` and ``malignancy_mean`` float;
    ``annotation_ids`` and the characteristic columns stay ';'-joined strings of integers (checked). The
    characteristic columns are optional; unknown columns are kept as strings.

    Args:
        path: the CSV file.

    Returns:
        the rows, in file order.

    Raises:
        DataError: the file is missing or unreadable, lacks a required column, or has a bad value (the message
            names the line and column).
    """
    source = Path(path)
    try:
        raw = source.read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8-sig")
    except FileNotFoundError as err:
        raise DataError("cohort file not found; write one with `naslung prepare cohort`", path=str(source)) from err
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the cohort file ({err}); regenerate it", path=str(source)) from err
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"cohort CSV lacks column(s) {missing}; a cohort needs {list(REQUIRED_COLUMNS)} "
            "(write it with naslung.pipeline.data.cohort_table.write_cohort_csv)",
            path=str(source),
        )
    rows: list[dict[str, Any]] = []
    for line, record in enumerate(reader, start=2):
        if None in record or any(v is None for v in record.values()):
            raise DataError(f"line {line} does not have the header's {len(header)} columns", path=str(source))
        row: dict[str, Any] = {}
        for column, value in record.items():
            try:
                row[column] = _convert(value, column)
            except ValueError as err:
                raise DataError(
                    f"line {line}, column {column!r}: bad value {value!r} ({err})", path=str(source)
                ) from err
        rows.append(row)
    return rows


def _package_file(relative: str) -> Any:
    return importlib.resources.files("naslung.pipeline").joinpath(relative)


_DEFAULT_ROWS: list[dict[str, Any]] | None = None


def load_default_cohort() -> list[dict[str, Any]]:
    """The packaged default cohort (:class:`CohortRules` defaults), read once per process; each call returns copies.

    Raises:
        DataError: the packaged file is missing or malformed (rebuild it with :func:`regenerate_default_cohort`).
    """
    global _DEFAULT_ROWS
    if _DEFAULT_ROWS is None:
        with importlib.resources.as_file(_package_file(DEFAULT_COHORT_FILE)) as path:
            _DEFAULT_ROWS = read_cohort_csv(path)
    return [dict(row) for row in _DEFAULT_ROWS]


def load_default_rules() -> dict[str, Any]:
    """The packaged ``cohort_default.json``: ``rules`` (as :meth:`CohortRules.as_dict`), ``counts`` and provenance.

    Raises:
        DataError: the file is missing or not JSON.
    """
    resource = _package_file(DEFAULT_RULES_FILE)
    try:
        return json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the packaged cohort rules ({err})", path=str(resource)) from err
