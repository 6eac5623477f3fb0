"""(network, fold) jobs on an executor: a failing job is reported with its network, fold and log, the others
finish, and running the same jobs again retries only the failed one (issue 15)."""

from __future__ import annotations

import shutil

import pytest
from cube_data import make_cubes

from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.search.executors import RayExecutor, SequentialExecutor
from naslung.pipeline.training.jobs import TrainingJobsError, job_identity, run_fold_job, run_fold_jobs

SPEC = "[4,4,[4],[4],[4]]"
#: One epoch of one or two steps on 6 training cubes.
ONE_EPOCH = {"arch": SPEC, "max_epochs": 1, "batch_size": 4, "val_fraction": 0.3, "seed": 0}


@pytest.fixture(scope="module")
def cube_dirs(tmp_path_factory):
    """Two copies of 12 cubes in folds 1 and 2: ``good`` and ``broken`` (whose cube n3 is then corrupted)."""
    good = make_cubes(tmp_path_factory.mktemp("good"), n=12, folds=2)
    broken = tmp_path_factory.mktemp("broken") / "cubes_copy"
    shutil.copytree(good, broken)
    return good, broken


def _jobs(out, good, broken):
    """Network ``good``: folds 1 and 2 on the good cubes; network ``broken``: fold 1 on the copy."""
    good_list, broken_list = read_manifest(good / "manifest.csv"), read_manifest(broken / "manifest.csv")
    jobs = [
        {"datalist": good_list, "test_fold": k, "out_dir": str(out / "good"), "overrides": ONE_EPOCH} for k in (1, 2)
    ]
    jobs.append({"datalist": broken_list, "test_fold": 1, "out_dir": str(out / "broken"), "overrides": ONE_EPOCH})
    return jobs


def _outputs(fold_dir):
    return {p: p.stat().st_mtime_ns for p in fold_dir.rglob("*") if p.is_file() and p.name != "job.log"}


def _fail_then_retry(executor_factory, cube_dirs, out):
    good, broken = cube_dirs
    (broken / "cubes" / "n3.npy").write_bytes(b"not a numpy file")  # n3 is in fold 2: every fold-1 job reads it
    jobs = _jobs(out, good, broken)
    with executor_factory() as executor, pytest.raises(TrainingJobsError) as failed:
        run_fold_jobs(executor, jobs)
    log = out / "broken" / "fold_1" / "job.log"
    assert "broken fold 1: " in str(failed.value) and f"(log: {log})" in str(failed.value)
    assert "1 of 3 training jobs failed" in str(failed.value)
    assert [(f["network"], f["fold"], f["log"]) for f in failed.value.failures] == [("broken", 1, str(log))]
    assert "Traceback" in log.read_text(encoding="utf-8") and "n3.npy" in log.read_text(encoding="utf-8")
    finished = [out / "good" / f"fold_{k}" for k in (1, 2)]
    assert all((fold_dir / "done.json").is_file() for fold_dir in finished)  # the others finished
    assert not (out / "broken" / "fold_1" / "done.json").is_file()
    stamps = {p: s for fold_dir in finished for p, s in _outputs(fold_dir).items()}

    shutil.copy(good / "cubes" / "n3.npy", broken / "cubes" / "n3.npy")  # the cause fixed, the same jobs again
    with executor_factory() as executor:
        outcomes = run_fold_jobs(executor, jobs)
    assert sorted((o["network"], o["fold"], o["status"]) for o in outcomes) == [
        ("broken", 1, "ok"),
        ("good", 1, "ok"),
        ("good", 2, "ok"),
    ]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished jobs were not redone
    assert (out / "broken" / "fold_1" / "done.json").is_file()
    assert "test" in next(o for o in outcomes if o["network"] == "broken")["result"]


def test_failing_job_is_reported_and_retried_alone_sequentially(cube_dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where MLFlowHandler would put its default ./mlruns.db
    _fail_then_retry(lambda: SequentialExecutor(num_threads=1), cube_dirs, tmp_path / "out")


@pytest.mark.slow
def test_failing_job_is_reported_and_retried_alone_on_ray(cube_dirs, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)
    _fail_then_retry(lambda: RayExecutor(workers=2, threads_per_trial=1), cube_dirs, tmp_path / "out")


def test_job_identity_and_a_job_that_raises(tmp_path):
    job = {"out_dir": str(tmp_path / "net"), "test_fold": 3}
    assert job_identity(job) == {
        "network": "net",
        "fold": 3,
        "fold_dir": str(tmp_path / "net" / "fold_3"),
        "log": str(tmp_path / "net" / "fold_3" / "job.log"),
    }

    def impossible(job):
        raise ValueError("max_epochs must be positive, got -1")

    outcome = run_fold_job(job, impossible)
    assert outcome["status"] == "failed" and outcome["error"] == "ValueError: max_epochs must be positive, got -1"
    assert "Traceback" in (tmp_path / "net" / "fold_3" / "job.log").read_text(encoding="utf-8")
    assert run_fold_job(job, lambda job: 7)["result"] == 7


def test_an_interruption_is_not_a_failure(tmp_path):
    """A kill (here ``KeyboardInterrupt``) stops the run instead of being reported and passed over."""

    def interrupted(job):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_fold_jobs(SequentialExecutor(), [{"out_dir": str(tmp_path / "net"), "test_fold": 0}], interrupted)
