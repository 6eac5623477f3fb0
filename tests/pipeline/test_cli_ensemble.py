"""``naslung ensemble`` and ``naslung evaluate`` on the command line: outputs, printed summary, error exit codes."""

from __future__ import annotations

import json

import pytest

from naslung.pipeline.atomic_io import write_csv
from naslung.pipeline.cli import main
from naslung.pipeline.ensemble.step import ENSEMBLE_OUTPUTS

LABELS = [1, 1, 0, 0, 1, 0]
PROBS = {"a": [0.9, 0.6, 0.2, 0.7, 0.4, 0.1], "b": [0.8, 0.4, 0.1, 0.6, 0.6, 0.3], "c": [0.7, 0.7, 0.6, 0.2, 0.3, 0.2]}


def make_run(root):
    """RUN/train/{a,b,c}/fold_{1,2}/test_predictions.csv written by hand."""
    for slug, probs in PROBS.items():
        for fold in (1, 2):
            pairs = enumerate(zip(LABELS, probs, strict=True))
            rows = [{"nodule_id": f"f{fold}n{i}", "label": y, "probability": p} for i, (y, p) in pairs]
            write_csv(root / "train" / slug / f"fold_{fold}" / "test_predictions.csv", rows, list(rows[0]))
    return root


CLI_CASES = [
    [[], ["a", "b", "c"]],
    [["--members", "a", "c"], ["a", "c"]],
]


@pytest.mark.parametrize("extra, members", CLI_CASES)
def test_ensemble_command(tmp_path, capsys, extra, members):
    run = make_run(tmp_path)
    assert main(["-q", "ensemble", "--run", str(run), "--no-latency", "--draws", "3", *extra]) == 0
    printed = capsys.readouterr().out
    assert f"ensemble of {len(members)} ({', '.join(members)})" in printed
    assert "fold 1" in printed and "fold 2" in printed and "mean ± std" in printed
    saved = json.loads((run / "ensemble" / "metrics.json").read_text(encoding="utf-8"))
    assert [m["slug"] for m in saved["members"]] == members
    for name in ENSEMBLE_OUTPUTS:
        assert (run / "ensemble" / name).is_file(), name
        assert name in printed  # the printed list of outputs names every file the step wrote
    assert "reference_per_fold.png" in printed
    assert main(["-q", "ensemble", "--run", str(run), "--no-latency", "--draws", "3", *extra]) == 0
    assert "up to date" in capsys.readouterr().out


ERROR_CASES = [
    [["ensemble", "--run", "{run}"], "no trained network"],
    [["ensemble", "--run", "{run}", "--members", "x"], "no trained network"],
    [["evaluate", "--run", "{run}"], "manifest not found"],
    [["evaluate", "--run", "{run}", "--set", "nonsense=1"], "unknown evaluation config key"],
]


@pytest.mark.parametrize("argv, message", ERROR_CASES)
def test_errors_exit_with_one(tmp_path, capsys, argv, message):
    assert main(["-q", *[a.format(run=tmp_path) for a in argv]]) == 1
    assert message in capsys.readouterr().err
