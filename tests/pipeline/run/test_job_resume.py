"""``naslung run``'s train step on its executor (``train.parallel``): a retrain killed between its (network, fold)
jobs resumes without redoing the finished ones (issue 15)."""

from __future__ import annotations

import shutil

import pytest
from cube_data import make_cubes

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.run import job as run_job
from naslung.pipeline.run.job import RunContext
from naslung.pipeline.run.layout import spec_slug

SPECS = ["[4,4,[4],[4],[4]]", "[4,4,[4],[4],[8]]"]
TRAIN = {
    "max_epochs": 1,
    "batch_size": 4,
    "val_fraction": 0.3,
    "folds": [1, 2],
    "parallel": {"executor": "sequential", "threads_per_job": 1},
}


class _Killed(BaseException):
    """A simulated kill of the process (not an ``Exception``: no job reports it and goes on)."""


def _fold_dirs(run):
    return [run / "train" / spec_slug(spec) / f"fold_{fold}" for spec in SPECS for fold in TRAIN["folds"]]


def _outputs(fold_dir):
    return {p: p.stat().st_mtime_ns for p in fold_dir.rglob("*") if p.is_file() and p.name != "job.log"}


def test_killed_retrain_resumes_without_redoing_finished_jobs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where MLFlowHandler would put its default ./mlruns.db
    run = tmp_path / "run"
    shutil.copytree(make_cubes(tmp_path / "cubes", n=12, folds=2), run / "data")
    write_json(run / "search" / "selected.json", {"specs": SPECS})
    ctx = RunContext(run_dir=run, settings={"train": TRAIN})
    real_job, started = run_job.train_fold_job, []

    def killed_at_the_third_job(job):
        started.append((job["out_dir"], job["test_fold"]))
        if len(started) == 3:
            raise _Killed("simulated kill during the retrain")
        return real_job(job)

    monkeypatch.setattr(run_job, "train_fold_job", killed_at_the_third_job)
    with pytest.raises(_Killed):
        run_job._step_train(ctx)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    fold_dirs = _fold_dirs(run)
    assert [(d / "done.json").is_file() for d in fold_dirs] == [True, True, False, False]
    stamps = {p: s for d in fold_dirs[:2] for p, s in _outputs(d).items()}
    assert any(p.name == "best_model.pt" for p in stamps)

    seen = []
    monkeypatch.setattr(run_job, "train_fold_job", lambda job: seen.append(job["test_fold"]) or real_job(job))
    line = run_job._step_train(ctx)
    assert "2 networks on folds [1, 2]" in line
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the finished jobs' files were not rewritten
    assert all((d / "done.json").is_file() for d in fold_dirs)
    assert all((run / "train" / spec_slug(spec) / "cv_metrics.json").is_file() for spec in SPECS)
    assert seen == [1, 2, 1, 2]  # every job was offered again; the finished ones skipped themselves
    assert "up to date; skipping" in (fold_dirs[0] / "job.log").read_text(encoding="utf-8")
