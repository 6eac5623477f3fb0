"""Tests of the search journal: appends, torn last lines, duplicates, the latency sidecar and the Pareto CSV."""

from __future__ import annotations

import csv

import pytest

from naslung.pipeline.errors import SearchError
from naslung.pipeline.search.journal import JOURNAL_FIELDS, SearchJournal, write_pareto_csv

RECORDS = [
    {"spec": [4, 4, [4, 4], [4, 8], [8, 8]], "f1": 0.875, "latency_ms": 0.31, "params": 140000, "iteration": 0},
    {"extra": "x", "spec": "[4,4,[8],[16],[32]]", "f1": 0.80, "latency_ms": 0.20, "seed": 3, "iteration": 1},
    {"spec": "[4,4,[8],[16],[64]]", "f1": 0.79, "latency_ms": 0.25, "iteration": 2},
]


def test_append_and_read_back(tmp_path):
    journal = SearchJournal(tmp_path / "search" / "journal.jsonl")
    assert journal.records() == [] and not journal.exists()
    for record in RECORDS:
        journal.append(record)
    back = journal.records()
    assert [r["spec"] for r in back] == ["[4,4,[4,4],[4,8],[8,8]]", "[4,4,[8],[16],[32]]", "[4,4,[8],[16],[64]]"]
    assert list(back[1]) == ["spec", "latency_ms", "f1", "seed", "extra", "iteration"]  # standard fields first
    assert journal.done_specs() == {r["spec"] for r in back}
    assert len(journal) == 3


def test_torn_last_line_is_dropped_and_overwritten(tmp_path):
    journal = SearchJournal(tmp_path / "journal.jsonl")
    journal.append(RECORDS[0])
    with open(journal.path, "a", encoding="utf-8") as handle:
        handle.write('{"spec": "[4,4,[8],[16],[32]]", "f1": 0.8')  # killed mid-write
    assert [r["spec"] for r in journal.records()] == ["[4,4,[4,4],[4,8],[8,8]]"]
    journal.append(RECORDS[1])
    assert len(journal.records()) == 2
    assert journal.path.read_text(encoding="utf-8").count("\n") == 2


def test_duplicates_and_missing_spec_are_refused(tmp_path):
    journal = SearchJournal(tmp_path / "journal.jsonl")
    with pytest.raises(SearchError, match="spec"):
        journal.append({"f1": 0.5})
    journal.append(RECORDS[0])
    journal.append(RECORDS[0])
    with pytest.raises(SearchError, match="twice"):
        journal.records()


def test_latency_sidecar(tmp_path):
    journal = SearchJournal(tmp_path / "journal.jsonl")
    assert journal.latency_path.name == "journal.latency.jsonl"
    journal.append_latencies({})
    assert not journal.latency_path.exists()
    journal.append_latencies({"[4,4,[4],[8],[8]]": 0.1, "[4,4,[4],[8],[16]]": 0.2})
    journal.append_latencies({"[4, 4, [4], [8], [8]]": 0.15})
    assert journal.latencies() == {"[4,4,[4],[8],[8]]": 0.15, "[4,4,[4],[8],[16]]": 0.2}


def test_write_pareto_csv(tmp_path):
    path = write_pareto_csv(RECORDS, tmp_path / "pareto.csv")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    # [8],[16],[64] is slower than [8],[16],[32] and scores lower: dominated
    assert [r["spec"] for r in rows] == ["[4,4,[8],[16],[32]]", "[4,4,[4,4],[4,8],[8,8]]"]
    header = list(rows[0])
    assert header[:5] == [f for f in JOURNAL_FIELDS if f in header][:5]
    assert header[0] == "spec" and "extra" in header and "iteration" in header
