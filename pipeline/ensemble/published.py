"""The NAS-Lung paper's published results (Tables 1-5) as data, and the table putting our results beside them.

Every number here is *published*, copied from the paper (two text extractions cross-checked: seeds 002 and
004; where they differ the choice is noted). Metrics are percentages as printed, parameters in millions;
``None`` stands for the paper's "-" (not reported).

Checks made while transcribing (reproduced in the tests):

* Table 2's NASLung_single avg. row is the mean of Table 5's ten models (88.03, 83.39, 91.73, 86.18, 1.90),
  but its std. row (0.44, 0.87, 1.04, 0.49, 1.63) matches neither the population (0.40, 2.19, 1.68, 0.60,
  1.61) nor the sample std (0.43, 2.30, 1.77, 0.63, 1.70) of those models; the paper's std convention is
  unknown.
* Table 3's channel-first row repeats NASLung_single but prints Spec. 91.63 where Table 2 has 91.73 (both
  extractions agree, so the paper itself differs; 91.73 is the Table 5 mean).
* Table 4: DBI = (S0 + S1) / M01 (eq. 14) holds for the Softmax row ((0.565 + 0.515) / 0.470 = 2.298) but not
  for the A-Softmax row ((0.439 + 0.551) / 0.718 = 1.379, printed 1.453); both extractions agree.
* F1: the NASLung rows fit the usual F1 = 2TP / (2TP + FP + FN) (eq. 11 prints 2TP^2, a misprint), e.g.
  Model-1 with 450 malignant / 554 benign nodules gives 87.5; the F1 of the rows quoted from [28] and AE-DPN
  [9] is instead the harmonic mean of Sens. and Spec. (87.23, 87.25, 90.46), so those F1 are not comparable.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from naslung.pipeline.atomic_io import atomic_open, write_csv
from naslung.pipeline.errors import ConfigError

__all__ = [
    "PublishedRow",
    "TABLE1",
    "TABLE2_AVG",
    "TABLE2_STD",
    "TABLE3",
    "TABLE4",
    "TABLE5",
    "PUBLISHED_TABLES",
    "RESULTS_FIELDS",
    "published_rows",
    "results_table",
    "write_results_table",
]

SOURCE_PUBLISHED = "published"
SOURCE_OURS = "ours"
_METRICS = ("accuracy", "sensitivity", "specificity", "f1")


@dataclasses.dataclass(frozen=True)
class PublishedRow:
    """One row of a published table (percentages as printed; ``None`` where the paper prints "-").

    Args:
        table: ``"table1"`` ... ``"table5"`` (``"table2_avg"`` / ``"table2_std"`` for Table 2's halves).
        method: the row label as printed.
        accuracy, sensitivity, specificity, f1: percent.
        params_m: parameters in millions.
        spec: architecture in the paper's notation (eq. 7 with the stage-1/2 widths in front), when printed.
        note: transcription remark.
    """

    table: str
    method: str
    accuracy: float | None
    sensitivity: float | None
    specificity: float | None
    f1: float | None
    params_m: float | None = None
    spec: str | None = None
    note: str = ""
    source: str = SOURCE_PUBLISHED

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _rows(table: str, data: Sequence[tuple]) -> tuple[PublishedRow, ...]:
    return tuple(PublishedRow(table, *values) for values in data)


# Table 1: comparison with existing methods, folds 1-5 of LUNA16's split of LIDC-IDRI. Both extractions agree.
TABLE1 = _rows(
    "table1",
    [
        ("Multi-crop CNN [12]", 87.14, None, None, None, None),
        ("Nodule-level 2D CNN [28]", 87.30, 88.50, 86.00, 87.23, None, None, "F1 = harmonic mean of Sens./Spec."),
        ("Vanilla 3D CNN [28]", 87.40, 89.40, 85.20, 87.25, None, None, "F1 = harmonic mean of Sens./Spec."),
        ("DeepLung [8]", 90.44, 81.42, None, None, 141.57),
        ("AE-DPN [9]", 90.24, 92.04, 88.94, 90.45, 678.69, None, "F1 ~ harmonic mean of Sens./Spec. (90.46)"),
        ("NASLung (ours)", 90.77, 85.37, 95.04, 89.29, 16.84, None, "ensemble of 9 networks"),
    ],
)

# Table 2: ablation over the best 5 NAS models (NASLung_single: the 10 of Table 5). Seed 002 garbles the std.
# half (its NAS+L_ang / NAS+CBAM+L_ang / NASLung_single std. rows are lost); they are taken from seed 004.
TABLE2_AVG = _rows(
    "table2_avg",
    [
        ("NAS (base)", 87.58, 84.03, 90.50, 85.74, 7.80),
        ("NAS+CBAM", 87.61, 84.01, 90.41, 85.86, 7.84),
        ("NAS+L_ang", 87.87, 82.89, 91.75, 85.96, 7.80),
        ("NAS+CBAM+L_ang", 87.77, 84.26, 90.60, 86.10, 7.84),
        ("NASLung_single", 88.03, 83.39, 91.73, 86.18, 1.90, None, "= mean of Table 5's Model-1..10"),
    ],
)
TABLE2_STD = _rows(
    "table2_std",
    [
        ("NAS (base)", 1.06, 3.01, 0.92, 1.50, 4.35),
        ("NAS+CBAM", 0.74, 2.15, 1.17, 1.01, 4.37),
        ("NAS+L_ang", 0.62, 2.41, 2.18, 0.73, 4.35),
        ("NAS+CBAM+L_ang", 0.56, 1.24, 1.33, 0.56, 4.37),
        ("NASLung_single", 0.44, 0.87, 1.04, 0.49, 1.63, None, "not the std of Table 5 (ddof 0 or 1)"),
    ],
)

# Table 3: order of channel and spatial attention in CBAM. Seed 002 lost spatial-first's Accu./Sens./Spec.;
# seed 004 has the full row.
TABLE3 = _rows(
    "table3",
    [
        ("channel-first", 88.03, 83.39, 91.63, 86.18, None, None, "Spec. 91.73 in Table 2 (same models)"),
        ("spatial-first", 87.14, 80.95, 92.15, 84.90),
    ],
)

# Table 4: discriminability of penultimate features (eq. 12-14). Both extractions agree.
TABLE4: tuple[dict[str, Any], ...] = (
    {
        "loss": "A-Softmax",
        "S0": 0.439,
        "S1": 0.551,
        "M01": 0.718,
        "DBI": 1.453,
        "source": SOURCE_PUBLISHED,
        "note": "(S0 + S1) / M01 = 1.379, not the printed DBI",
    },
    {"loss": "Softmax", "S0": 0.565, "S1": 0.515, "M01": 0.470, "DBI": 2.298, "source": SOURCE_PUBLISHED, "note": ""},
)

# Table 5: the best 10 searched single networks. Both extractions agree. Only Model-1's architecture is
# printed (in the text of section 4.6); the others are not given in the paper.
TABLE5 = _rows(
    "table5",
    [
        ("Model-1", 88.83, 87.20, 90.12, 87.50, 0.14, "[4,4,[4,4],[4,8],[8,8]]"),
        ("Model-2", 88.42, 84.38, 91.46, 86.67, 2.61),
        ("Model-3", 88.17, 84.44, 91.60, 86.50, 3.90),
        ("Model-4", 88.13, 83.20, 92.28, 86.30, 2.54),
        ("Model-5", 87.97, 83.72, 91.31, 86.22, 0.43),
        ("Model-6", 87.77, 83.67, 91.00, 86.03, 0.22),
        ("Model-7", 87.76, 84.14, 89.79, 85.98, 0.86),
        ("Model-8", 88.00, 82.43, 92.69, 85.97, 4.02),
        ("Model-9", 88.04, 78.01, 96.09, 85.36, 4.06),
        ("Model-10", 87.22, 82.70, 90.92, 85.32, 0.24),
        ("NASLung", 90.77, 85.37, 95.04, 89.29, 16.84, None, "the ensemble, as in Table 1"),
    ],
)

PUBLISHED_TABLES: dict[str, tuple[PublishedRow, ...]] = {
    "table1": TABLE1,
    "table2_avg": TABLE2_AVG,
    "table2_std": TABLE2_STD,
    "table3": TABLE3,
    "table5": TABLE5,
}

#: Columns of the rows :func:`results_table` returns (and the CSV it writes).
RESULTS_FIELDS: tuple[str, ...] = (
    "source",
    "table",
    "method",
    "accuracy",
    "accuracy_std",
    "sensitivity",
    "sensitivity_std",
    "specificity",
    "specificity_std",
    "f1",
    "f1_std",
    "params_m",
    "latency_ms",
)


def published_rows(table: str) -> tuple[PublishedRow, ...]:
    """The published rows of ``table`` (a key of :data:`PUBLISHED_TABLES`).

    Raises:
        ConfigError: for an unknown table name.
    """
    if table not in PUBLISHED_TABLES:
        raise ConfigError(f"unknown published table {table!r}; choose one of {sorted(PUBLISHED_TABLES)}")
    return PUBLISHED_TABLES[table]


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _our_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """One of our result dicts (fractions, parameter count) -> a results row (percent, millions)."""
    if "method" not in result:
        raise ConfigError(f"a result row lacks 'method' (keys: {sorted(result)}); name the model or ensemble")
    row: dict[str, Any] = {"source": SOURCE_OURS, "table": "", "method": str(result["method"])}
    for metric in _METRICS:
        mean = _number(result.get(f"{metric}_mean", result.get(metric)))
        std = _number(result.get(f"{metric}_std"))
        row[metric] = None if mean is None else round(100.0 * mean, 2)
        row[f"{metric}_std"] = None if std is None else round(100.0 * std, 2)
    params = _number(result.get("params"))
    params_m = _number(result.get("params_m"))
    row["params_m"] = round(params / 1e6, 4) if params is not None else params_m
    latency = _number(result.get("latency_ms"))
    row["latency_ms"] = None if latency is None else round(latency, 3)
    return row


def _published_row(row: PublishedRow) -> dict[str, Any]:
    out: dict[str, Any] = {"source": row.source, "table": row.table, "method": row.method}
    for metric in _METRICS:
        out[metric] = getattr(row, metric)
        out[f"{metric}_std"] = None
    out["params_m"] = row.params_m
    out["latency_ms"] = None
    return out


def _cell(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def results_table(
    ours: Sequence[Mapping[str, Any]], tables: Sequence[str] = ("table1",)
) -> tuple[str, list[dict[str, Any]]]:
    """Our results beside the paper's, as a Markdown table and as rows.

    Args:
        ours: one dict per method of ours: ``method``; metrics as fractions in [0, 1], either
            ``<metric>_mean`` and ``<metric>_std`` (from :func:`naslung.pipeline.metrics.summarise_folds`) or
            plain ``<metric>``, for accuracy, sensitivity, specificity and f1; ``params`` (a count) or
            ``params_m`` (millions); ``latency_ms`` (per nodule). Missing values stay empty.
        tables: published tables to append (keys of :data:`PUBLISHED_TABLES`).

    Returns:
        ``(markdown, rows)``: rows carry :data:`RESULTS_FIELDS`, percentages rounded to 2 decimals, ours
        first, each with ``source`` ``"ours"`` or ``"published"``.
    """
    rows = [_our_row(result) for result in ours]
    for table in tables:
        rows.extend(_published_row(row) for row in published_rows(table))
    header = "| Method | Source | Accu. (%) | Sens. (%) | Spec. (%) | F1 (%) | para. (M) | latency (ms/nodule) |"
    lines = [header, "|" + "---|" * 8]
    for row in rows:
        source = row["source"] if not row["table"] else f"{row['source']} ({row['table']})"
        cells = [row["method"], source]
        cells += [_cell(row[m], row[f"{m}_std"]) for m in _METRICS]
        cells.append(_cell(row["params_m"]))
        cells.append("–" if row["latency_ms"] is None else f"{row['latency_ms']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", rows


def write_results_table(
    ours: Sequence[Mapping[str, Any]],
    markdown_path: str | os.PathLike,
    csv_path: str | os.PathLike,
    tables: Sequence[str] = ("table1",),
) -> tuple[Path, Path]:
    """Write :func:`results_table` as Markdown and CSV, each atomically; returns both paths."""
    markdown, rows = results_table(ours, tables)
    with atomic_open(markdown_path, "w", encoding="utf-8") as handle:
        handle.write(markdown)
    csv_rows = [{k: ("" if v is None else v) for k, v in row.items()} for row in rows]
    return Path(markdown_path), write_csv(csv_path, csv_rows, RESULTS_FIELDS)
