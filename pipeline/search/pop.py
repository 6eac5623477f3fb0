"""Partial Order Pruning (POP, Li et al., CVPR 2019) as used by NAS-Lung (sec. 3.4): state, pruning rule, driver.

How a candidate is trained is not decided here: the driver :func:`run_search` takes an ``evaluate`` callable that
returns a record (``latency_ms``, ``f1``, ...) and a cheap ``latency_fn`` that profiles an untrained candidate.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from naslung.pipeline.errors import SearchError
from naslung.pipeline.progress import Progress, no_progress
from naslung.pipeline.search.journal import SearchJournal
from naslung.pipeline.search.pareto import objectives, pareto_front
from naslung.pipeline.search.partial_order import arch_precedes
from naslung.pipeline.search.space import Arch, SearchSpace, arch_from, arch_to_text, to_arch_spec

__all__ = ["PartialOrderPruning", "SearchResult", "iteration_rng", "run_search"]

logger = logging.getLogger(__name__)

MapFn = Callable[[Callable[[Any], dict], Iterable[Any]], Iterable[Mapping[str, Any]]]


def iteration_rng(seed: int, iteration: int) -> np.random.Generator:
    """The random generator of one search iteration, derived from ``(seed, iteration)`` only.

    Every iteration draws its proposals from its own generator, so a resumed search that replays the journal
    proposes exactly what the uninterrupted search would have.
    """
    if seed < 0 or iteration < 0:
        raise SearchError(f"rng seed and iteration must be >= 0, got seed={seed}, iteration={iteration}")
    return np.random.default_rng([int(seed), int(iteration)])


class PartialOrderPruning:
    """Search state of Partial Order Pruning over a :class:`~naslung.pipeline.search.space.SearchSpace`.

    Re-implements POP (Li et al., "Partial Order Pruning: for Best Speed/Accuracy Trade-off in Neural Architecture
    Search", CVPR 2019) as NAS-Lung uses it (Jiang et al., sec. 3.4): train a candidate, add it to the trained set
    ``D``, prune the candidates that cannot improve the speed/accuracy front ``B(D)``, sample the next candidate from
    what is left.

    Partial order: :func:`~naslung.pipeline.search.partial_order.precedes` (``c <= m``: ``c`` is ``m`` with blocks
    deleted and/or channels reduced). POP's assumption: ``c <= m`` implies ``score(c) <= score(m)`` (a narrower or
    shallower network is no more accurate); latency is never assumed, it is measured (``latency_fn``, cheap, no
    training).

    Pruning rule. For a trained ``m`` let ``thr(m) = min { latency(y) : y in D, score(y) >= score(m) }`` (``m``
    itself counts, so ``thr(m) <= latency(m)``). An untrained candidate ``c`` is pruned when

        there is a trained ``m`` with ``c <= m`` and ``latency_fn(c) > thr(m)``.

    Then the trained ``y`` attaining ``thr(m)`` is strictly faster than ``c`` and, by the assumption, at least as
    accurate (``score(y) >= score(m) >= score(c)``), so ``c`` is dominated and cannot join the front. With ``y = m``
    this is "slower than a trained network it is below"; with other ``y`` it is the reference code's rule
    (``get_yw``: the fastest trained network at least as accurate as ``m``). Thresholds only decrease as ``D`` grows,
    so the pruned set only grows. Differences from the NAS-Lung reference code: the order is the transitive closure
    of its "narrower" and "shallower" relations (it applies them separately, never composed), and ``m`` itself may
    serve as ``y``; both prune more, under the same assumption.

    The pruned space is kept implicitly: the trained set, the thresholds and a latency cache; membership is
    tested lazily against the trained set. When ``space.size() <= exhaustive_limit`` the remaining candidates are
    also kept as an ordered set, updated incrementally after each observation (exact counts, exact "pruned space
    changed"), and proposals are drawn uniformly from it; otherwise proposals are drawn by rejection from the
    uniform sampler of the space with at most ``max_sample_tries`` draws per proposal.

    Iterations and the stop rule: one iteration is :meth:`propose` a batch, observe its records, :meth:`end_iteration`.
    An iteration is *stable* when the pruned set did not grow and the Pareto front of the trained set did not
    change (the paper: "stopped if no change to the search space happens for several iterations"; the reference code:
    front unchanged for more than 30 iterations). In the lazy (large-space) mode "the pruned set grew" is replaced by
    "a threshold decreased or the new cut is not implied by an existing one", which may count an iteration as
    changing when it pruned nothing new, so the patience rule fires later there; the budgets bound it.

    Args:
        space: the search space.
        latency_fn: ``spec -> latency in ms`` of an untrained candidate (``spec`` made by ``spec_factory``).
        score_key: record key of the score to maximise (``"f1"``, as the paper ranks models).
        latency_key: record key of the latency to minimise.
        exhaustive_limit: keep the remaining set explicitly when the space has at most this many candidates.
        max_sample_tries: uniform draws per proposal in the lazy mode before giving up.
        latencies: previously measured latencies ``{spec: ms}`` (e.g. :meth:`SearchJournal.latencies`) to reuse.
        spec_factory: turns an internal :data:`~naslung.pipeline.search.space.Arch` into what ``latency_fn`` and
            the evaluation take; default ``naslung.networks.spec.ArchSpec``.
    """

    def __init__(
        self,
        space: SearchSpace,
        latency_fn: Callable[[Any], float],
        *,
        score_key: str = "f1",
        latency_key: str = "latency_ms",
        exhaustive_limit: int = 100_000,
        max_sample_tries: int = 10_000,
        latencies: Mapping[Any, float] | None = None,
        spec_factory: Callable[[Arch], Any] = to_arch_spec,
    ) -> None:
        self.space = space
        self.latency_fn = latency_fn
        self.score_key = score_key
        self.latency_key = latency_key
        self.max_sample_tries = int(max_sample_tries)
        self.spec_factory = spec_factory
        self.exhaustive = space.size() <= exhaustive_limit
        self._latency: dict[Arch, float] = {arch_from(k): float(v) for k, v in (latencies or {}).items()}
        self._new_latencies: dict[Arch, float] = {}
        self._records: dict[Arch, dict[str, Any]] = {}
        self._objectives: dict[Arch, tuple[float, float]] = {}
        self._thr: dict[Arch, float] = {}
        self._remaining: dict[Arch, None] | None = None
        self.iteration = 0
        self.stable_iterations = 0
        self._front_at_end: frozenset[Arch] = frozenset()
        self._pruned_at_end = 0
        self._lazy_changed = False

    # -- latency ---------------------------------------------------------------------------------------------------
    def latency_of(self, spec: Any) -> float:
        """Measured latency (ms) of a candidate by ``latency_fn``, cached."""
        return self._candidate_latency(arch_from(spec))

    def _candidate_latency(self, arch: Arch) -> float:
        value = self._latency.get(arch)
        if value is None:
            value = float(self.latency_fn(self.spec_factory(arch)))
            if not math.isfinite(value):
                raise SearchError(f"latency_fn returned {value!r} for {arch_to_text(arch)}; it must be finite (ms)")
            self._latency[arch] = value
            self._new_latencies[arch] = value
        return value

    def take_new_latencies(self) -> dict[str, float]:
        """Latencies measured since the last call, ``{spec text: ms}`` (for the journal's sidecar)."""
        new = {arch_to_text(a): v for a, v in self._new_latencies.items()}
        self._new_latencies.clear()
        return new

    # -- trained set -----------------------------------------------------------------------------------------------
    @property
    def n_trained(self) -> int:
        """Number of candidates observed (trained)."""
        return len(self._records)

    def records(self) -> list[dict[str, Any]]:
        """Observed records in observation order."""
        return list(self._records.values())

    def front(self) -> list[dict[str, Any]]:
        """The Pareto front ``B(D)`` of the trained set, sorted by latency."""
        return list(pareto_front(self._records.values(), self.latency_key, self.score_key))

    def is_trained(self, spec: Any) -> bool:
        """Whether the candidate was observed."""
        return arch_from(spec) in self._records

    def threshold(self, spec: Any) -> float:
        """``thr(m)`` of a trained candidate (ms): the least latency of a trained network scoring at least as well."""
        arch = arch_from(spec)
        if arch not in self._thr:
            raise SearchError(f"{arch_to_text(arch)} has not been trained, so it has no pruning threshold")
        return self._thr[arch]

    def _recompute_thresholds(self) -> dict[Arch, float]:
        ordered = sorted(self._objectives.items(), key=lambda item: -item[1][1])
        thr: dict[Arch, float] = {}
        running = math.inf
        start = 0
        while start < len(ordered):
            stop = start
            score = ordered[start][1][1]
            while stop < len(ordered) and ordered[stop][1][1] == score:
                running = min(running, ordered[stop][1][0])
                stop += 1
            for arch, _ in ordered[start:stop]:
                thr[arch] = running
            start = stop
        return thr

    def observe(self, record: Mapping[str, Any]) -> None:
        """Add a trained candidate and update the pruned space.

        Args:
            record: a mapping with ``spec`` (any form), ``latency_key`` and ``score_key``.

        Raises:
            SearchError: when the spec is not in the space, was observed before, or lacks finite objectives.
        """
        if "spec" not in record:
            raise SearchError(f"a trained record needs a 'spec'; got keys {sorted(record)}")
        arch = self.space.validate(record["spec"])
        if arch in self._records:
            raise SearchError(f"candidate {arch_to_text(arch)} was already observed; each candidate is trained once")
        point = objectives(record, self.latency_key, self.score_key)
        self._records[arch] = dict(record)
        self._objectives[arch] = point
        old = self._thr
        self._thr = self._recompute_thresholds()
        tightened = [m for m, t in self._thr.items() if m in old and t < old[m]]
        new_cut_matters = not any(
            m != arch and self._thr[m] <= self._thr[arch] and arch_precedes(arch, m) for m in self._records
        )
        if tightened or new_cut_matters:
            self._lazy_changed = True
        if self._remaining is not None:
            self._remaining.pop(arch, None)
            self._apply_cuts([arch, *tightened])

    def _apply_cuts(self, cuts: list[Arch]) -> None:
        assert self._remaining is not None
        pruned = []
        for cand in self._remaining:
            for m in cuts:
                if arch_precedes(cand, m) and self._candidate_latency(cand) > self._thr[m]:
                    pruned.append(cand)
                    break
        for cand in pruned:
            del self._remaining[cand]

    # -- pruned space ----------------------------------------------------------------------------------------------
    def _pruned_lazily(self, arch: Arch) -> bool:
        limit = math.inf
        for m, thr in self._thr.items():
            if thr < limit and arch_precedes(arch, m):
                limit = thr
        return limit < math.inf and self._candidate_latency(arch) > limit

    def _ensure_remaining(self) -> dict[Arch, None]:
        if self._remaining is None:
            if not self.exhaustive:
                raise SearchError("the remaining set is only kept for spaces within exhaustive_limit")
            self._remaining = {
                arch: None for arch in self.space.iter() if arch not in self._records and not self._pruned_lazily(arch)
            }
        return self._remaining

    def is_pruned(self, spec: Any) -> bool:
        """Whether an untrained candidate of the space is pruned (trained candidates are not "pruned")."""
        arch = self.space.validate(spec)
        if arch in self._records:
            return False
        if self._remaining is not None:
            return arch not in self._remaining
        return self._pruned_lazily(arch)

    def is_remaining(self, spec: Any) -> bool:
        """Whether a candidate is in the space, untrained and not pruned."""
        return self.space.contains(spec) and not self.is_trained(spec) and not self.is_pruned(spec)

    def remaining_size(self) -> int | None:
        """Exact number of candidates left to train (``None`` in the lazy mode of large spaces)."""
        return len(self._ensure_remaining()) if self.exhaustive else None

    def pruned_size(self) -> int | None:
        """Exact number of pruned candidates (``None`` in the lazy mode of large spaces)."""
        if not self.exhaustive:
            return None
        return self.space.size() - self.n_trained - len(self._ensure_remaining())

    # -- proposals -------------------------------------------------------------------------------------------------
    def propose_archs(self, n: int, rng: np.random.Generator | int | None = None) -> list[Arch]:
        """Up to ``n`` distinct remaining candidates drawn uniformly (as internal :data:`Arch` tuples)."""
        generator = np.random.default_rng(rng)
        if n <= 0:
            return []
        if self.exhaustive:
            pool = list(self._ensure_remaining())
            if not pool:
                return []
            picks = generator.choice(len(pool), size=min(n, len(pool)), replace=False)
            return [pool[int(i)] for i in picks]
        chosen: list[Arch] = []
        for _ in range(n):
            for _ in range(self.max_sample_tries):
                cand = self.space.sample(generator)
                if cand not in self._records and cand not in chosen and not self._pruned_lazily(cand):
                    chosen.append(cand)
                    break
            else:
                logger.warning(
                    "no remaining candidate found in %d uniform draws; the unpruned space is (nearly) exhausted "
                    "or very small: raise max_sample_tries or exhaustive_limit",
                    self.max_sample_tries,
                )
                break
        return chosen

    def propose(self, n: int, rng: np.random.Generator | int | None = None) -> list[Any]:
        """Up to ``n`` distinct remaining candidates drawn uniformly, made by ``spec_factory`` (``ArchSpec``)."""
        return [self.spec_factory(arch) for arch in self.propose_archs(n, rng)]

    # -- iterations and stopping -----------------------------------------------------------------------------------
    def end_iteration(self) -> bool:
        """Close an iteration; returns whether the pruned space or the front changed during it."""
        front = frozenset(arch_from(r["spec"]) for r in self.front())
        if self.exhaustive:
            pruned = self.pruned_size() or 0
            grew = pruned > self._pruned_at_end
            self._pruned_at_end = pruned
        else:
            grew = self._lazy_changed
        changed = grew or front != self._front_at_end
        self._front_at_end = front
        self._lazy_changed = False
        self.iteration += 1
        self.stable_iterations = 0 if changed else self.stable_iterations + 1
        return changed

    def stop_reason(
        self,
        *,
        patience: int | None = None,
        max_candidates: int | None = None,
        max_seconds: float | None = None,
        elapsed_s: float = 0.0,
    ) -> str | None:
        """Why the search should stop now, or ``None`` to go on.

        Args:
            patience: stop after this many consecutive stable iterations (``None``: never).
            max_candidates: stop once this many candidates are trained in total.
            max_seconds: stop once ``elapsed_s`` reaches this (s).
            elapsed_s: wall time of the search so far (s).
        """
        if max_candidates is not None and self.n_trained >= max_candidates:
            return f"budget: {self.n_trained} candidates trained (max_candidates={max_candidates})"
        if max_seconds is not None and elapsed_s >= max_seconds:
            return f"budget: {elapsed_s:.0f} s elapsed (max_seconds={max_seconds})"
        if patience is not None and self.stable_iterations >= patience:
            return f"stable: pruned space and front unchanged for {self.stable_iterations} iterations"
        if self.exhaustive and self.remaining_size() == 0:
            return "exhausted: every candidate is trained or pruned"
        return None

    def summary(self) -> dict[str, Any]:
        """Counts for logs: iteration, trained, remaining, pruned, front size, stable iterations."""
        return {
            "iteration": self.iteration,
            "trained": self.n_trained,
            "remaining": self.remaining_size(),
            "pruned": self.pruned_size(),
            "front": len(self.front()),
            "stable_iterations": self.stable_iterations,
            "space_size": self.space.size(),
        }


class _TimedEvaluate:
    """Picklable wrapper: build the spec, evaluate it, stamp ``spec`` (paper notation) and ``seconds``."""

    def __init__(self, evaluate: Callable[[Any], Mapping[str, Any]], spec_factory: Callable[[Arch], Any]) -> None:
        self.evaluate = evaluate
        self.spec_factory = spec_factory

    def __call__(self, arch: Arch) -> dict[str, Any]:
        start = time.perf_counter()
        record = dict(self.evaluate(self.spec_factory(arch)))
        record.setdefault("seconds", time.perf_counter() - start)
        record["spec"] = arch_to_text(arch)
        return record


@dataclass
class SearchResult:
    """What :func:`run_search` returns.

    Attributes:
        records: every trained record in observation order (resumed and new).
        front: the Pareto front of ``records`` (sorted by latency).
        stop_reason: why the search stopped.
        iterations: iterations run, replayed ones included.
        evaluated: candidates trained by this call (not taken from the journal).
        resumed: records taken from the journal instead of training.
        space_size: candidates in the space.
        remaining: candidates left untrained and unpruned (``None`` for large spaces).
        pruned: candidates pruned (``None`` for large spaces).
        summary: :meth:`PartialOrderPruning.summary` at the stop.
    """

    records: list[dict[str, Any]]
    front: list[dict[str, Any]]
    stop_reason: str
    iterations: int
    evaluated: int
    resumed: int
    space_size: int
    remaining: int | None = None
    pruned: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def run_search(
    space: SearchSpace,
    evaluate: Callable[[Any], Mapping[str, Any]],
    latency_fn: Callable[[Any], float],
    *,
    journal: SearchJournal | str | os.PathLike | None = None,
    rng_seed: int = 0,
    batch_size: int = 1,
    patience: int | None = 30,
    max_candidates: int | None = None,
    max_seconds: float | None = None,
    map_fn: MapFn = map,
    score_key: str = "f1",
    latency_key: str = "latency_ms",
    exhaustive_limit: int = 100_000,
    max_sample_tries: int = 10_000,
    spec_factory: Callable[[Arch], Any] = to_arch_spec,
    progress: Progress = no_progress,
) -> SearchResult:
    """Run Partial Order Pruning until the stop rule or a budget ends it; resumable from its journal.

    Each iteration ``i`` proposes ``batch_size`` candidates with :func:`iteration_rng` ``(rng_seed, i)``, trains those
    not already in the journal with ``map_fn(wrapped_evaluate, candidates)`` (records are appended to the journal as
    they arrive, in any order), then observes the whole batch in proposal order. On restart the journal is replayed
    through the same iterations: finished candidates are never trained again, and because proposals depend only on
    ``(rng_seed, i)`` and the replayed state, the search continues exactly as if uninterrupted (latencies measured
    for pruning are replayed from the journal's sidecar). The wall-time budget counts this call only.

    Args:
        space: the search space.
        evaluate: ``spec -> record`` training one candidate; the record needs ``score_key`` and should carry
            ``latency_key`` (filled from ``latency_fn`` when missing), ``params``, ``macs``, ``accuracy``, ... . It
            must be picklable if ``map_fn`` ships it to other processes.
        latency_fn: ``spec -> ms``, cheap profiling of an untrained candidate, used to prune.
        journal: a :class:`SearchJournal` or its path, to record and resume; ``None`` keeps nothing on disk.
        rng_seed: seed of the proposals (>= 0); a journal written with another seed is refused.
        batch_size: candidates proposed per iteration.
        patience: stop after this many stable iterations (see :class:`PartialOrderPruning`); ``None``: never.
        max_candidates: stop when this many candidates are trained in total.
        max_seconds: stop after this many seconds of this call (checked between iterations).
        map_fn: ``(function, candidates) -> records``, builtin ``map`` by default; an executor's map for parallel
            training (results may arrive in any order).
        score_key: record key of the score to maximise.
        latency_key: record key of the latency to minimise.
        exhaustive_limit: see :class:`PartialOrderPruning`.
        max_sample_tries: see :class:`PartialOrderPruning`.
        spec_factory: internal architecture -> what ``evaluate`` and ``latency_fn`` take (``ArchSpec``).
        progress: progress reporter wrapped around each batch's results.

    Raises:
        SearchError: when the journal does not match these settings, or a record lacks its objectives.
    """
    if batch_size < 1:
        raise SearchError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(journal, (str, os.PathLike)):
        journal = SearchJournal(journal)
    done_list = journal.records() if journal is not None else []
    for record in done_list:
        if record.get("search_seed", rng_seed) != rng_seed:
            raise SearchError(
                f"{journal.path if journal else ''}: written with rng_seed={record.get('search_seed')}, "
                f"resumed with rng_seed={rng_seed}; pass the journal's seed or start a new journal"
            )
        if "iteration" not in record:
            raise SearchError(
                f"{journal.path if journal else ''}: record of {record['spec']} has no 'iteration', so the search "
                "cannot be replayed; start a new journal"
            )
    done = {record["spec"]: record for record in done_list}
    state = PartialOrderPruning(
        space,
        latency_fn,
        score_key=score_key,
        latency_key=latency_key,
        exhaustive_limit=exhaustive_limit,
        max_sample_tries=max_sample_tries,
        latencies=journal.latencies() if journal is not None else None,
        spec_factory=spec_factory,
    )
    wrapped = _TimedEvaluate(evaluate, spec_factory)
    if done:
        logger.info("resuming POP search from %d journal records", len(done))
    start = time.monotonic()
    evaluated = resumed = 0
    consumed: set[str] = set()

    def flush_latencies() -> None:
        new = state.take_new_latencies()
        if journal is not None and new:
            journal.append_latencies(new)

    while True:
        reason = state.stop_reason(
            patience=patience,
            max_candidates=max_candidates,
            max_seconds=max_seconds,
            elapsed_s=time.monotonic() - start,
        )
        if reason is not None:
            break
        n = batch_size if max_candidates is None else min(batch_size, max_candidates - state.n_trained)
        archs = state.propose_archs(n, iteration_rng(rng_seed, state.iteration))
        flush_latencies()
        if not archs:
            reason = "exhausted: no remaining candidate could be proposed"
            break
        texts = [arch_to_text(a) for a in archs]
        expected = {s for s, r in done.items() if r["iteration"] == state.iteration}
        stray = [t for t in texts if t in done and done[t]["iteration"] != state.iteration]
        if not expected.issubset(texts) or stray:
            raise SearchError(
                f"{journal.path if journal else ''}: iteration {state.iteration} replays differently from the journal "
                f"(journal has {sorted(expected - set(texts)) or sorted(stray)}); resume with the same space, seed, "
                "batch_size, latency_fn and budgets, or start a new journal"
            )
        results: dict[str, Mapping[str, Any]] = {t: done[t] for t in texts if t in done}
        resumed += len(results)
        consumed.update(results)
        todo = [a for a, t in zip(archs, texts, strict=True) if t not in done]
        if todo:
            batch: Iterator[Mapping[str, Any]] = iter(map_fn(wrapped, todo))
            for raw in progress(batch, total=len(todo), desc=f"POP iteration {state.iteration}"):
                record = dict(raw)
                arch = space.validate(record["spec"])
                if record.get(latency_key) is None:
                    record[latency_key] = state.latency_of(arch)
                if record.get(score_key) is None:
                    raise SearchError(
                        f"evaluate returned no {score_key!r} for {record['spec']}; it is the score POP ranks"
                    )
                record["iteration"] = state.iteration
                record["search_seed"] = rng_seed
                stored = journal.append(record) if journal is not None else record
                results[stored["spec"]] = stored
                evaluated += 1
        missing = [t for t in texts if t not in results]
        if missing:
            raise SearchError(f"map_fn returned no record for {missing}; it must return one record per candidate")
        for text in texts:
            state.observe(results[text])
        flush_latencies()
        changed = state.end_iteration()
        logger.info("POP %s (changed=%s)", state.summary(), changed)

    unused = set(done) - consumed
    if unused:
        logger.warning("%d journal records were not replayed (the search stopped earlier this time)", len(unused))
    logger.info("POP search stopped: %s", reason)
    return SearchResult(
        records=state.records(),
        front=state.front(),
        stop_reason=reason,
        iterations=state.iteration,
        evaluated=evaluated,
        resumed=resumed,
        space_size=space.size(),
        remaining=state.remaining_size(),
        pruned=state.pruned_size(),
        summary=state.summary(),
    )
