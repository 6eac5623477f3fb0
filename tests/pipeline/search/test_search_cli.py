"""``naslung search --config FILE --out DIR --data DIR``: writes the journal and the front; the same command resumes."""

from __future__ import annotations

import csv
import json

import pytest
from cube_data import make_cubes

from naslung.pipeline.cli import main
from naslung.pipeline.search import candidate

#: A 19-candidate space, one-epoch candidates, cheap latency, trained in this process.
TINY = {
    "space": {"channels": [4, 8], "min_blocks": 3, "max_blocks": 4},
    "test_folds": [1],
    "epochs_per_candidate": 1,
    "executor": "sequential",
    "batch_size": 1,
    "latency_warmup": 1,
    "latency_repeats": 2,
    "train": {"val_fraction": 0.3, "batch_size": 8},
}
RECORD_FIELDS = {"spec", "params", "macs", "latency_ms", "f1", "accuracy", "seconds", "seed"}


class TrainingCounter:
    """Stands in for ``train_fold`` in the candidate module and records the specs it trains."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, datalist, test_fold, out_dir, config=None, overrides=None, show_progress=False):
        self.calls.append(overrides["arch"])
        return self.real(datalist, test_fold, out_dir, config, overrides, show_progress)


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("search_cli")
    data = make_cubes(root / "data", n=12, folds=3, seed=1)
    config = root / "search.json"
    config.write_text(json.dumps({**TINY, "max_candidates": 1}))
    return root, data, config


def test_search_command_writes_journal_and_front_and_resumes(cli_data, monkeypatch, capsys):
    root, data, config = cli_data
    counter = TrainingCounter(candidate.train_fold)
    monkeypatch.setattr(candidate, "train_fold", counter)
    argv = ["-q", "search", "--config", str(config), "--out", str(root / "out"), "--data", str(data)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "search space: 19 candidates" in printed and "Pareto front" in printed
    journal = [json.loads(line) for line in (root / "out" / "journal.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(journal) == 1 == len(counter.calls) and RECORD_FIELDS <= set(journal[0])
    with open(root / "out" / "pareto.csv", newline="") as handle:
        assert [row["spec"] for row in csv.DictReader(handle)] == [journal[0]["spec"]]
    assert json.loads((root / "out" / "selected.json").read_text(encoding="utf-8"))["specs"] == [journal[0]["spec"]]

    assert main(argv) == 0  # the same command again: nothing is trained
    assert "up to date" in capsys.readouterr().out and len(counter.calls) == 1
    assert len((root / "out" / "journal.jsonl").read_text(encoding="utf-8").splitlines()) == 1

    assert main([*argv, "--set", "max_candidates=2"]) == 0  # a larger budget continues the same journal
    specs = [
        json.loads(line)["spec"] for line in (root / "out" / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(counter.calls) == 2 and specs == counter.calls and len(set(specs)) == 2


ERROR_CASES = [
    [["--set", "test_folds=[1,2,3]"], "test_folds"],
    [["--set", "no_such_key=1"], "no_such_key"],
    [["--set", "executor=dask"], "executor"],
    [["--set", "attention=cbam"], "attention"],
    [["--set", "loss_name=arcface"], "loss_name"],
]


@pytest.mark.parametrize("extra, message", ERROR_CASES)
def test_search_command_reports_errors(cli_data, tmp_path, capsys, extra, message):
    _, data, config = cli_data
    argv = ["-q", "search", "--config", str(config), "--out", str(tmp_path / "out"), "--data", str(data), *extra]
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_search_command_needs_data(cli_data, tmp_path, capsys):
    _, _, config = cli_data
    assert main(["-q", "search", "--config", str(config), "--out", str(tmp_path / "out")]) == 1
    assert "--data" in capsys.readouterr().err
