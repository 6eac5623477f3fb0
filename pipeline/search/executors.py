"""Where search candidates train: in this process one after another, or in parallel as Ray tasks.

Both executors are context managers whose :meth:`map` has the ``map_fn`` signature of
:func:`naslung.pipeline.search.pop.run_search`: ``map(function, items)`` yields one result per item, the Ray one in
the order the trials finish, so the journal gets each candidate as soon as it is trained.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from naslung.networks import fixed_threads
from naslung.pipeline.cpu_allocator import retain_freed_memory
from naslung.pipeline.errors import ConfigError, SearchError
from naslung.pipeline.search.space import arch_to_text

__all__ = [
    "EXECUTORS",
    "SequentialExecutor",
    "RayExecutor",
    "make_executor",
    "ray_available",
    "default_threads_per_trial",
    "shared_ray_instance",
]

logger = logging.getLogger(__name__)

EXECUTORS = ("ray", "sequential")

#: Object store of a local Ray instance in MiB: the search ships only small records and specs.
LOCAL_OBJECT_STORE_MB = 256

#: Open :func:`shared_ray_instance` blocks, and whether an executor inside one left its instance running.
_shared = {"depth": 0, "left_running": False}


@contextmanager
def shared_ray_instance() -> Iterator[None]:
    """Within the block, a Ray instance a :class:`RayExecutor` starts stays up for the executors after it (the steps
    of ``naslung run``: starting and stopping a local instance takes ~5 s each time); it is shut down when the
    outermost block ends. Nothing is started when no executor needs Ray."""
    _shared["depth"] += 1
    try:
        yield
    finally:
        _shared["depth"] -= 1
        if _shared["depth"] == 0 and _shared["left_running"]:
            _shared["left_running"] = False
            import ray  # optional dependency, imported only when an executor started it

            if ray.is_initialized():
                ray.shutdown()
                logger.info("shut down the Ray instance shared by the steps")


def ray_available() -> bool:
    """Whether ``import ray`` works."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def default_threads_per_trial(workers: int, cpus: int | None = None) -> int:
    """Torch threads per trial so that ``workers`` trials share ``cpus`` cores without oversubscription (>= 1)."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // max(1, workers))


def _describe(item: Any) -> str:
    if isinstance(item, dict) and {"out_dir", "test_fold"} <= set(item):  # a (network, fold) training job
        return f"{os.path.basename(str(item['out_dir']))} fold {item['test_fold']}"
    try:
        return arch_to_text(item)
    except Exception:  # noqa: BLE001 - only for messages
        return repr(item)


class SequentialExecutor:
    """Runs each item in this process, one after another, with torch's CPU threads fixed to ``num_threads``.

    Args:
        num_threads: torch intra-op threads while an item runs (``None``: leave torch's setting).
    """

    kind = "sequential"

    def __init__(self, num_threads: int | None = None) -> None:
        if num_threads is not None and num_threads < 1:
            raise ConfigError(f"threads_per_trial must be >= 1, got {num_threads}")
        self.num_threads = num_threads
        self.workers = 1

    def __enter__(self) -> SequentialExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def map(self, function: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """Yield ``function(item)`` for each item in order."""
        for item in items:
            with fixed_threads(self.num_threads):
                result = function(item)
            yield result

    def describe(self) -> dict[str, Any]:
        """Settings for the run record."""
        return {"executor": self.kind, "workers": 1, "threads_per_trial": self.num_threads or torch.get_num_threads()}


def _run_trial(function: Callable[[Any], Any], item: Any, num_threads: int) -> Any:
    """Body of a Ray task: fix torch's threads and keep freed memory in the worker, then run the trial."""
    retain_freed_memory()
    torch.set_num_threads(int(num_threads))
    return function(item)


def _ready(_item: Any) -> None:
    """A trial that does nothing: running one per worker starts the workers."""
    return None


def _run_trial_on_node(function: Callable[[Any], Any], item: Any, num_threads: int) -> tuple[str, Any]:
    """:func:`_run_trial`, returning also the id of the Ray node that ran it: ``(node_id, result)``."""
    import ray

    return ray.get_runtime_context().get_node_id(), _run_trial(function, item, num_threads)


class RayExecutor:
    """Runs items as Ray tasks, at most ``workers`` at a time, each with ``threads_per_trial`` torch threads.

    A local Ray instance is started with ``workers * threads_per_trial`` CPUs (and the machine's GPUs) unless
    ``address`` names an existing cluster (``"auto"``, ``"ray://host:10001"``, ...) or Ray is already initialised
    in this process; only an instance started here is shut down on exit. Each task reserves ``threads_per_trial``
    CPUs and, when the cluster has GPUs, ``gpus_per_trial`` of a GPU (default: the GPUs shared evenly among the
    workers, at most one each), so Ray never places more trials on a node than it has cores for.

    A failing trial does not stop the others: the finished ones are still yielded (and journaled), then the first
    failure is raised as a :class:`~naslung.pipeline.errors.SearchError`.

    Each finished trial is counted against the Ray node that ran it (:attr:`trials_per_node`, also in
    :meth:`describe`), so a run record shows how the work spread over a cluster.

    Args:
        workers: trials running at once (``None``: the cluster's CPUs // ``threads_per_trial``).
        address: address of an existing Ray cluster (``None``: a local instance).
        threads_per_trial: torch threads (and Ray CPUs) per trial (``None``: cores // workers locally, else 1).
        gpus_per_trial: GPU share per trial (``None``: automatic; 0: no GPU).
        object_store_mb: object store of a local instance in MiB.
    """

    kind = "ray"

    def __init__(
        self,
        workers: int | None = None,
        address: str | None = None,
        threads_per_trial: int | None = None,
        gpus_per_trial: float | None = None,
        object_store_mb: int = LOCAL_OBJECT_STORE_MB,
    ) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        if threads_per_trial is not None and threads_per_trial < 1:
            raise ConfigError(f"threads_per_trial must be >= 1, got {threads_per_trial}")
        if gpus_per_trial is not None and gpus_per_trial < 0:
            raise ConfigError(f"gpus_per_trial must be >= 0, got {gpus_per_trial}")
        self.workers = workers
        self.address = address or None
        self.threads_per_trial = threads_per_trial
        self.gpus_per_trial = gpus_per_trial
        self.object_store_mb = int(object_store_mb)
        self._started = False
        self._remote: Any = None
        #: Finished trials per Ray node id, counted by :meth:`map`.
        self.trials_per_node: dict[str, int] = {}

    def __enter__(self) -> RayExecutor:
        import ray

        local = self.address is None
        if local and self.workers is None:
            threads = self.threads_per_trial or 1
            self.workers = max(1, (os.cpu_count() or 1) // threads)
        if local and self.threads_per_trial is None:
            self.threads_per_trial = default_threads_per_trial(self.workers or 1)
        if ray.is_initialized():
            logger.info("using the Ray instance already initialised in this process")
        elif local:
            gpus = torch.cuda.device_count()
            ray.init(
                num_cpus=(self.workers or 1) * (self.threads_per_trial or 1),
                num_gpus=gpus,
                include_dashboard=False,
                log_to_driver=False,
                object_store_memory=self.object_store_mb * 1024 * 1024,
            )
            self._started = True
            logger.info("started a local Ray instance: %s", ray.cluster_resources())
        else:
            ray.init(address=self.address, log_to_driver=False)
            self._started = True
            logger.info("connected to the Ray cluster at %s: %s", self.address, ray.cluster_resources())
        resources = ray.cluster_resources()
        self.threads_per_trial = self.threads_per_trial or 1
        if self.workers is None:
            self.workers = max(1, int(resources.get("CPU", 1)) // self.threads_per_trial)
        cluster_gpus = float(resources.get("GPU", 0.0))
        if self.gpus_per_trial is None:
            self.gpus_per_trial = min(1.0, cluster_gpus / self.workers) if cluster_gpus > 0 else 0.0
        if self.gpus_per_trial > 0 and cluster_gpus == 0:
            raise ConfigError(f"gpus_per_trial={self.gpus_per_trial} but the Ray cluster has no GPU; set it to 0")
        self._remote = ray.remote(_run_trial_on_node).options(
            num_cpus=self.threads_per_trial, num_gpus=self.gpus_per_trial, max_retries=0
        )
        # Start the workers now rather than beside the first trials: each imports torch and naslung (a few seconds
        # of CPU), and the search times candidates in this process, where a single-thread call takes twice as long
        # while another core works.
        ray.get([self._remote.remote(_ready, None, 1) for _ in range(self.workers or 1)])
        logger.info(
            "Ray executor: %d workers, %d threads and %.2f GPU per trial",
            self.workers,
            self.threads_per_trial,
            self.gpus_per_trial,
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Shut Ray down if this executor started or connected it, unless a :func:`shared_ray_instance` block keeps
        it for the next executor."""
        if self._started:
            self._started = False
            if _shared["depth"]:
                _shared["left_running"] = True
                return
            import ray

            ray.shutdown()

    def map(self, function: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """Yield ``function(item)`` for each item as the trials finish (any order).

        Raises:
            SearchError: when a trial failed (after yielding every trial that did not).
        """
        import ray

        if self._remote is None:
            raise SearchError("RayExecutor.map called outside its `with` block")
        function_ref = ray.put(function)
        queue = list(items)
        pending: dict[Any, Any] = {}
        failures: list[tuple[Any, BaseException]] = []
        try:
            while queue or pending:
                while queue and len(pending) < (self.workers or 1):
                    item = queue.pop(0)
                    pending[self._remote.remote(function_ref, item, self.threads_per_trial)] = item
                ready, _ = ray.wait(list(pending), num_returns=1)
                item = pending.pop(ready[0])
                try:
                    node, result = ray.get(ready[0])
                except Exception as err:  # noqa: BLE001 - Ray wraps the trial's exception
                    logger.error("trial %s failed: %s", _describe(item), err)
                    failures.append((item, err))
                    continue
                self.trials_per_node[node] = self.trials_per_node.get(node, 0) + 1
                yield result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        if failures:
            item, err = failures[0]
            raise SearchError(
                f"training candidate {_describe(item)} failed on Ray ({len(failures)} failed trial(s)): {err}"
            ) from err

    def describe(self) -> dict[str, Any]:
        """Settings for the run record."""
        return {
            "executor": self.kind,
            "address": self.address,
            "workers": self.workers,
            "threads_per_trial": self.threads_per_trial,
            "gpus_per_trial": self.gpus_per_trial,
            "trials_per_node": dict(self.trials_per_node),
        }


def make_executor(
    kind: str = "ray",
    *,
    workers: int | None = None,
    address: str | None = None,
    threads_per_trial: int | None = None,
    gpus_per_trial: float | None = None,
) -> SequentialExecutor | RayExecutor:
    """An executor of ``kind``; ``"ray"`` falls back to sequential (with a warning) when Ray is not installed.

    Args:
        kind: ``"ray"`` or ``"sequential"``.
        workers: parallel trials (Ray only).
        address: Ray cluster address (``None``: a local instance).
        threads_per_trial: torch threads per trial (sequential: ``None`` leaves torch's setting).
        gpus_per_trial: GPU share per Ray trial (``None``: automatic).

    Raises:
        ConfigError: for an unknown kind or invalid counts; when an ``address`` is given but Ray is missing.
    """
    if kind not in EXECUTORS:
        raise ConfigError(f"executor {kind!r} is not one of {EXECUTORS}")
    if kind == "ray":
        if ray_available():
            return RayExecutor(workers, address, threads_per_trial, gpus_per_trial)
        if address:
            raise ConfigError(
                f"ray_address {address!r} is set but Ray is not installed; `pip install 'naslung[ray]'` "
                "or unset ray_address"
            )
        logger.warning(
            "Ray is not installed (`pip install 'naslung[ray]'`); training the candidates sequentially in this "
            "process instead (same journal)"
        )
    return SequentialExecutor(threads_per_trial)
