"""(network, fold) training jobs on an executor: each job logs to its own fold folder, a failing job is reported
with its network, fold and log, and the other jobs still finish.

A job is the mapping :func:`naslung.pipeline.training.step.train_fold_job` takes (``datalist``, ``test_fold``,
``out_dir``, optionally ``config`` and ``overrides``). It writes only ``out_dir/fold_<k>/`` and skips itself when
that folder is finished, so running the same jobs again retries only those that failed or never ran.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from naslung.pipeline.errors import NaslungError, SearchError
from naslung.pipeline.progress import Progress, no_progress
from naslung.pipeline.run.layout import JOB_LOG, fold_dir_name
from naslung.pipeline.training.step import train_fold_job

__all__ = ["TrainingJobsError", "job_identity", "run_fold_job", "run_fold_jobs"]

logger = logging.getLogger(__name__)

#: The logger whose records (and its children's: every naslung module) a job's log file receives at INFO and above.
_PACKAGE_LOGGER = "naslung"


class TrainingJobsError(NaslungError):
    """Some (network, fold) jobs failed; the others finished.

    Args:
        message: names each failed job's network, fold and log file.
        failures: one outcome of :func:`run_fold_job` (``status == "failed"``) per failed job.
    """

    def __init__(self, message: str, failures: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(message)
        self.failures = [dict(f) for f in failures]


def job_identity(job: Mapping[str, Any]) -> dict[str, Any]:
    """``{"network", "fold", "fold_dir", "log"}`` of a job: the network is ``out_dir``'s folder name (a spec's slug,
    a baseline's name or an ablation variant), the log is ``fold_<k>/job.log``."""
    fold_dir = Path(job["out_dir"]) / fold_dir_name(job["test_fold"])
    return {
        "network": Path(job["out_dir"]).name,
        "fold": job["test_fold"],
        "fold_dir": str(fold_dir),
        "log": str(fold_dir / JOB_LOG),
    }


def _where() -> str:
    """This process's host and pid, and its Ray node id inside a Ray task (where a job ran, for its log)."""
    where = f"host {socket.gethostname()}, pid {os.getpid()}"
    ray = sys.modules.get("ray")  # only when the job runs as a Ray task: this module never imports Ray itself
    if ray is not None and ray.is_initialized():
        where += f", Ray node {ray.get_runtime_context().get_node_id()}"
    return where


class _JobLogHandler(logging.FileHandler):
    """Appends to the job's log, creating its fold folder only when a first record arrives."""

    def __init__(self, path: str) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.setLevel(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def _open(self) -> Any:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def run_fold_job(
    job: Mapping[str, Any], function: Callable[[Mapping[str, Any]], Any] = train_fold_job
) -> dict[str, Any]:
    """Run one job, logging the package's records to its ``fold_<k>/job.log``; a failure is returned, not raised.

    Only :class:`Exception` is caught: an interruption (``KeyboardInterrupt``, a kill) still stops the run, and the
    next run resumes the job from its last checkpoint.

    Args:
        job: a :func:`~naslung.pipeline.training.step.train_fold_job` mapping.
        function: what runs the job (default :func:`~naslung.pipeline.training.step.train_fold_job`).

    Returns:
        :func:`job_identity` plus ``status`` (``"ok"`` or ``"failed"``) and ``result`` (the function's return
        value) or ``error`` (the exception's type and message; the traceback is in the log).
    """
    identity = job_identity(job)
    handler = _JobLogHandler(identity["log"])
    package = logging.getLogger(_PACKAGE_LOGGER)
    root = logging.getLogger()
    level = package.level
    if not package.isEnabledFor(logging.INFO):
        package.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        logger.info("job %s fold %s started on %s", identity["network"], identity["fold"], _where())
        result = function(job)
    except Exception as err:  # noqa: BLE001 - reported with the job's network, fold and log; the others go on
        logger.error(
            "job %s fold %s failed: %s\n%s", identity["network"], identity["fold"], err, traceback.format_exc()
        )
        return {**identity, "status": "failed", "error": f"{type(err).__name__}: {err}"}
    finally:
        root.removeHandler(handler)
        handler.close()
        package.setLevel(level)
    return {**identity, "status": "ok", "result": result}


def run_fold_jobs(
    executor: Any,
    jobs: Iterable[Mapping[str, Any]],
    function: Callable[[Mapping[str, Any]], Any] = train_fold_job,
    progress: Progress = no_progress,
    desc: str = "training jobs",
) -> list[dict[str, Any]]:
    """Run every job on ``executor`` (entered; :func:`naslung.pipeline.search.executors.make_executor`), let each
    finish whatever the others do, then report the failed ones together.

    Args:
        executor: a :class:`~naslung.pipeline.search.executors.SequentialExecutor` or ``RayExecutor`` inside its
            ``with`` block.
        jobs: :func:`~naslung.pipeline.training.step.train_fold_job` mappings.
        function: what runs one job (a picklable callable for Ray).
        progress: wraps the stream of finished jobs.
        desc: the progress bar's label.

    Returns:
        one :func:`run_fold_job` outcome per job, in the order they finished (all ``"ok"``).

    Raises:
        TrainingJobsError: when a job failed (also when Ray lost a worker), naming each failed job's network, fold
            and log; finished jobs are kept, so the same call again retries only the failed ones.
    """
    jobs = list(jobs)
    outcomes: list[dict[str, Any]] = []
    lost: str | None = None
    try:
        mapped = executor.map(functools.partial(run_fold_job, function=function), jobs)
        for outcome in progress(mapped, total=len(jobs), desc=desc):
            outcomes.append(outcome)
            if outcome["status"] == "failed":
                logger.error(
                    "job %s fold %s failed (%s); log: %s",
                    outcome["network"],
                    outcome["fold"],
                    outcome["error"],
                    outcome["log"],
                )
    except SearchError as err:  # a Ray task died without returning (e.g. its worker process was killed)
        lost = str(err)[:500]
    returned = {o["fold_dir"] for o in outcomes}
    failures = [o for o in outcomes if o["status"] == "failed"]
    failures += [
        {**identity, "status": "failed", "error": f"no result from the executor ({lost})"}
        for identity in map(job_identity, jobs)
        if identity["fold_dir"] not in returned
    ]
    if failures:
        lines = "; ".join(f"{f['network']} fold {f['fold']}: {f['error']} (log: {f['log']})" for f in failures)
        raise TrainingJobsError(
            f"{len(failures)} of {len(jobs)} training jobs failed, the others finished: {lines}. Fix the cause and "
            "run the same command again: only the failed jobs are retried",
            failures,
        )
    return outcomes
