"""Atomic writers: nothing half-written on error, torn JSONL lines dropped."""

from __future__ import annotations

import pytest

from naslung.pipeline.atomic_io import append_jsonl, atomic_open, atomic_path, read_jsonl, write_csv
from naslung.pipeline.errors import DataError


def test_atomic_open_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("partial")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_suffix_and_replaces(tmp_path):
    target = tmp_path / "cube.nii.gz"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_text("new")
    assert target.read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.nii.gz"]


def test_write_csv_roundtrip(tmp_path):
    path = write_csv(tmp_path / "a.csv", [{"x": 1, "y": "b"}], ["x", "y"])
    assert path.read_text(encoding="utf-8").splitlines() == ["x,y", "1,b"]


def test_jsonl_drops_torn_tail_and_appends_cleanly(tmp_path):
    path = tmp_path / "journal.jsonl"
    append_jsonl(path, {"spec": "a", "f1": 0.5})
    with open(path, "a") as handle:  # a write torn by a kill
        handle.write('{"spec": "b", "f1"')
    assert read_jsonl(path) == [{"spec": "a", "f1": 0.5}]
    append_jsonl(path, {"spec": "c"})
    assert [r["spec"] for r in read_jsonl(path)] == ["a", "c"]


def test_jsonl_corrupt_middle_line_names_file(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(DataError, match="journal.jsonl: line 2 is not valid JSON"):
        read_jsonl(path)


def test_atomic_file_gets_umask_mode(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = write_csv(tmp_path / "m.csv", [], ["a"])
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
