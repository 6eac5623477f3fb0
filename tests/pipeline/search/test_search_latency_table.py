"""The per-machine latency table: where it lives, how it merges, and that a second profiler reuses it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from naslung.pipeline.errors import SearchError
from naslung.pipeline.search.candidate import CandidateProfiler
from naslung.pipeline.search.latency_table import (
    LATENCY_TABLE_ENV,
    LatencyTable,
    machine_id,
    resolve_latency_table_path,
)
from naslung.pipeline.training.step import load_train_config

ID = machine_id()
HOME_CACHE = Path(os.path.expanduser("~")) / ".cache" / "naslung" / "latency" / f"{ID}.json"

# [config setting, environment, expected path (None: no table)]
RESOLVE_CASES = [
    ["/x/table.json", {}, Path("/x/table.json")],
    ["/x/tables", {}, Path(f"/x/tables/{ID}.json")],
    ["/x/table.json", {LATENCY_TABLE_ENV: "/env/t.json"}, Path("/x/table.json")],  # the config wins
    [False, {LATENCY_TABLE_ENV: "/env/t.json"}, None],
    ["off", {}, None],
    [None, {LATENCY_TABLE_ENV: "/env/t.json"}, Path("/env/t.json")],
    [None, {LATENCY_TABLE_ENV: "/env"}, Path(f"/env/{ID}.json")],
    [None, {LATENCY_TABLE_ENV: "OFF"}, None],
    [None, {"XDG_CACHE_HOME": "/cache"}, Path(f"/cache/naslung/latency/{ID}.json")],
    [None, {}, HOME_CACHE],
]


@pytest.mark.parametrize("setting, environ, expected", RESOLVE_CASES)
def test_where_the_table_lives(setting, environ, expected):
    assert resolve_latency_table_path(setting, environ) == expected


def test_machine_id_is_stable_and_short():
    assert machine_id() == ID and len(ID) == 16 and int(ID, 16) >= 0
    assert machine_id({"cpu": "other"}) != ID


def _key(slug="a", threads=1):
    return LatencyTable.key(
        slug,
        input_shape=(1, 32, 32, 32),
        batch=1,
        threads=threads,
        device="cpu",
        attention="channel_first",
        loss_name="asoftmax",
    )


def test_keys_name_every_setting():
    assert _key() == _key() and _key("b") != _key() and _key(threads=2) != _key()
    for part in (f"machine={ID}", "net=a", "input=1x32x32x32", "batch=1", "threads=1", "device=cpu", "torch="):
        assert part in _key()


def test_writes_merge_with_what_another_search_wrote(tmp_path):
    path = tmp_path / "sub" / "table.json"
    first, second = LatencyTable(path), LatencyTable(path)
    first.put({_key("a"): 1.5})
    second.put({_key("b"): 2.5})  # a second search writing the same file keeps the first one's entry
    assert first.entries() == {_key("a"): 1.5, _key("b"): 2.5} and len(first) == 2
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["machines"][ID]["logical_cores"] == os.cpu_count()
    assert first.get(_key("c")) is None and first.get(_key("b")) == 2.5


def test_a_broken_table_names_the_file(tmp_path):
    path = tmp_path / "table.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(SearchError, match="table.json"):
        LatencyTable(path).entries()


SPECS = ["[4,4,[4],[4],[4]]", "[4,4,[4],[8],[8]]"]


def _profiler(table, **kwargs):
    config = load_train_config(None, {"arch": SPECS[0]})
    return CandidateProfiler(config, device="cpu", warmup=0, repeats=1, table=table, **kwargs)


def test_a_second_profiler_reuses_the_table_instead_of_measuring(tmp_path):
    table = LatencyTable(tmp_path / "table.json")
    first = _profiler(table)
    measured = [first(spec) for spec in SPECS]
    assert first.measured == 2 and first.from_table == 0 and len(table) == 2

    second = _profiler(table)
    assert [second(spec) for spec in SPECS] == measured  # the very same numbers
    assert second.measured == 0 and second.from_table == 2 and not second.profiles  # nothing was timed

    other_threads = _profiler(table, num_threads=2)
    other_threads(SPECS[0])
    assert other_threads.measured == 1 and len(table) == 3  # other settings: another entry
    described = second.describe()
    assert described["table"] == str(table.path) and described["from_table"] == 2


def test_the_search_journal_wins_over_the_table(tmp_path):
    table = LatencyTable(tmp_path / "table.json")
    profiler = _profiler(table, known={SPECS[0]: 123.0})
    assert profiler(SPECS[0]) == 123.0 and profiler.measured == 0 and len(table) == 0


def test_without_a_table_every_profiler_measures(tmp_path):
    profiler = _profiler(None)
    profiler(SPECS[0])
    assert profiler.measured == 1 and profiler.describe()["table"] is None
