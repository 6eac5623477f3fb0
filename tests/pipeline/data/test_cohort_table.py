"""The cohort CSV file: round trips (plain and gzip), the minimal columns, malformed and unreadable files."""

from __future__ import annotations

import gzip

import pytest

from naslung.pipeline.data.cohort_table import (
    COHORT_COLUMNS,
    REQUIRED_COLUMNS,
    load_default_cohort,
    read_cohort_csv,
    write_cohort_csv,
)
from naslung.pipeline.errors import DataError


@pytest.mark.parametrize("name", ["cohort.csv", "cohort.csv.gz"])
def test_csv_round_trip(tmp_path, name):
    rows = load_default_cohort()[:20]
    path = write_cohort_csv(rows, tmp_path / name)
    assert read_cohort_csv(path) == rows
    if name.endswith(".gz"):
        first = path.read_bytes()
        assert gzip.decompress(first).decode().splitlines()[0] == ",".join(COHORT_COLUMNS)
        assert write_cohort_csv(rows, tmp_path / "again.csv.gz").read_bytes() == first  # reproducible bytes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_minimal_cohort_csv_is_read(tmp_path):
    """The required columns suffice (characteristics are optional); an empty fold reads as None."""
    row = {c: v for c, v in load_default_cohort()[0].items() if c in REQUIRED_COLUMNS}
    path = tmp_path / "minimal.csv"
    path.write_text(",".join(REQUIRED_COLUMNS) + "\n" + ",".join(str(row[c]) for c in REQUIRED_COLUMNS) + "\n")
    assert read_cohort_csv(path) == [row]
    path.write_text(path.read_text(encoding="utf-8").replace(f",{row['fold']},", ",,", 1))
    assert read_cohort_csv(path)[0]["fold"] is None


def _corrupt(text, column, value):
    lines = text.splitlines()
    header = lines[0].split(",")
    cells = lines[2].split(",")
    cells[header.index(column)] = value
    lines[2] = ",".join(cells)
    return "\n".join(lines) + "\n"


MALFORMED = [
    [lambda t: t.replace("diameter_mm,", "diam,", 1), r"lacks column\(s\) \['diameter_mm'\]"],
    [lambda t: _corrupt(t, "i", "abc"), r"line 3, column 'i': bad value 'abc'"],
    [lambda t: _corrupt(t, "label", "2"), r"line 3, column 'label'.*0 \(benign\) or 1"],
    [lambda t: _corrupt(t, "n_readers", "3.5"), r"line 3, column 'n_readers'.*not an integer"],
    [lambda t: _corrupt(t, "z_mm", "nan"), r"line 3, column 'z_mm'.*not finite"],
    [lambda t: _corrupt(t, "malignancy", "4;x;5"), r"line 3, column 'malignancy'"],
    [lambda t: _corrupt(t, "nodule_id", ""), r"line 3, column 'nodule_id'.*empty"],
    [lambda t: t.rstrip("\n") + ",extra\n", r"columns"],
]


@pytest.mark.parametrize("corrupt, message", MALFORMED)
def test_malformed_cohort_csv_names_file_and_problem(tmp_path, corrupt, message):
    good = write_cohort_csv(load_default_cohort()[:3], tmp_path / "good.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text(corrupt(good.read_text(encoding="utf-8")))
    with pytest.raises(DataError, match=message) as info:
        read_cohort_csv(bad)
    assert str(bad) in str(info.value)


def test_unreadable_cohort_files(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        read_cohort_csv(tmp_path / "missing.csv")
    assert "missing.csv" in str(info.value)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(b"patient_id,series_uid\n")[:15])
    with pytest.raises(DataError, match="cannot read"):
        read_cohort_csv(broken)
