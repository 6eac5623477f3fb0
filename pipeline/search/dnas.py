"""The DNAS search strategy (CovidNet3D-style): a Gumbel-Softmax supernet over the NAS-Lung space, trained with
alternating weight and architecture steps on two patient-disjoint halves of the search data, then its most
probable architectures in the space trained like POP candidates.

``run_dnas_search`` writes into the search folder::

    settings.json            what the search depends on; a resume with other settings is refused
    journal.jsonl            one record per supernet epoch: temperature, losses, architecture probabilities,
                             derived spec, its F1 on the architecture half, expected latency
    supernet.pt              the last finished epoch (supernet, both optimisers, the epoch records, the engine's
                             epoch); it loads with ``weights_only=True``
    latency_table.json       per-operation latencies (ms) when latency_weight > 0, measured once
    candidates.jsonl         the derived specs trained like POP candidates (spec, params, macs, latency_ms, f1, ...)
    candidates/<slug>/all/   their training folders
    alphas.png               architecture-probability evolution (one panel per decision kind)
    pareto.csv               the Pareto front of the trained derived specs
    selected.json            the same format as POP's, read by retraining, the ensemble and the bundles
    summary.json, done.json  counts and timings; the marker that makes an identical re-run a no-op

The supernet epochs run as an Ignite engine (:func:`~naslung.pipeline.search.supernet_trainer.create_supernet_trainer`)
with the training's epoch seeding and resumable checkpoint. A killed search resumes from ``supernet.pt``: finished
epochs are not run again, and it ends as an uninterrupted search would; trained candidates are not trained again.
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, DataLoader

from naslung.networks.gumbel import TemperatureSchedule
from naslung.networks.spec import ArchSpec
from naslung.networks.supernet import KEEP, SKIP, CBAMSupernet3D, measure_latency_table
from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.data.datalists import split_for_fold
from naslung.pipeline.errors import ConfigError, SearchError
from naslung.pipeline.progress import Progress, no_progress
from naslung.pipeline.run.markers import fingerprint, is_done, mark_done
from naslung.pipeline.search.candidate import CandidateEvaluator, resolve_device
from naslung.pipeline.search.candidate_latency import candidate_profiler
from naslung.pipeline.search.figures import plot_architecture_probabilities
from naslung.pipeline.search.journal import SearchJournal, write_pareto_csv
from naslung.pipeline.search.pareto import pareto_front
from naslung.pipeline.search.search_folder import check_search_settings, selected_payload, table_row
from naslung.pipeline.search.selection import select_candidates
from naslung.pipeline.search.space import SearchSpace, to_arch_spec
from naslung.pipeline.search.supernet_trainer import (
    BilevelUpdate,
    PairedLoader,
    SupernetEpochRecorder,
    create_supernet_trainer,
)
from naslung.transforms import train_transforms

__all__ = ["DNAS_OUTPUTS", "supernet_for_space", "derive_specs", "run_dnas_search"]

logger = logging.getLogger(__name__)

#: Files of a finished DNAS search, relative to its folder.
DNAS_OUTPUTS = ["journal.jsonl", "candidates.jsonl", "pareto.csv", "alphas.png", "selected.json", "summary.json"]

#: Largest space the derivation scores exhaustively.
_MAX_DERIVE_SPACE = 5_000_000


def supernet_for_space(
    space: SearchSpace,
    widths: Sequence[int] | None = None,
    kernel_sizes: Sequence[int] = (3, 5),
    attention: str = "channel_first",
) -> CBAMSupernet3D:
    """The supernet covering ``space``: its stem, its widths (or the subset ``widths``), and as many slots per
    stage as the space's deepest stage, the first ``min depth`` of them never skipped.

    Raises:
        ConfigError: when ``widths`` are not widths of the space.
    """
    chosen = tuple(space.channels) if widths is None else tuple(sorted(int(w) for w in widths))
    outside = sorted(set(chosen) - set(space.channels))
    if outside:
        raise ConfigError(f"dnas widths {outside} are not in the search space's channels {list(space.channels)}")
    depths = space.depths
    max_blocks = tuple(max(d[s] for d in depths) for s in range(3))
    min_blocks = tuple(max(1, min(d[s] for d in depths)) for s in range(3))
    return CBAMSupernet3D(
        stem=space.stem,
        widths=chosen,
        kernel_sizes=kernel_sizes,
        max_blocks=max_blocks,
        min_blocks=min_blocks,
        attention=attention,
    )


def derive_specs(supernet: CBAMSupernet3D, space: SearchSpace, top_n: int = 1) -> list[tuple[ArchSpec, float]]:
    """The ``top_n`` most probable architectures of ``space`` under the supernet's architecture probabilities.

    A candidate of depth ``d`` in a stage is the stage's first ``d`` slots: its log-probability is the sum over
    its blocks of ``log p(width)`` and ``log p(keep)`` (optional slots), plus ``log p(skip)`` of the slots after
    ``d``; each block gets its most probable kernel size (kernels are not constrained by the space). The arg-max
    of every decision alone may break the space's rules (depth balance, non-decreasing widths); this projection
    never does.

    Returns:
        ``[(spec, log-probability), ...]``, most probable first; specs carry kernel sizes.

    Raises:
        SearchError: when the space is too large to score, or no candidate fits the supernet.
    """
    if space.size() > _MAX_DERIVE_SPACE:
        raise SearchError(
            f"the search space has {space.size():,} candidates; DNAS scores at most {_MAX_DERIVE_SPACE:,} when "
            "deriving its architecture: narrow the space (channels, max_blocks, monotone='global')"
        )
    logp = {d.name: torch.log_softmax(supernet.arch_logits[i].detach().double(), -1) for i, d in
            enumerate(supernet.decisions)}  # fmt: skip
    width_index = {w: i for i, w in enumerate(supernet.widths)}
    kernels: list[list[int]] = []
    for stage, count in zip((3, 4, 5), supernet.max_blocks, strict=True):
        kernels.append(
            [supernet.kernel_sizes[int(logp[f"stage{stage}.block{slot + 1}.kernel"].argmax())] for slot in range(count)]
        )

    def depth_score(stage: int, depth: int) -> float:
        total = 0.0
        for slot in range(supernet.max_blocks[stage - 3]):
            name = f"stage{stage}.block{slot + 1}.keep"
            if name in logp:
                total += float(logp[name][KEEP if slot < depth else SKIP])
        return total

    best: list[tuple[float, int, Any]] = []
    for rank, arch in enumerate(space.iter()):
        stages = arch[2:]
        if any(not lo <= len(s) <= hi for s, lo, hi in zip(stages, supernet.min_blocks, supernet.max_blocks,
                                                             strict=True)):  # fmt: skip
            continue
        if any(c not in width_index for s in stages for c in s):
            continue
        score = 0.0
        for stage, channels in zip((3, 4, 5), stages, strict=True):
            score += depth_score(stage, len(channels))
            for slot, c in enumerate(channels):
                prefix = f"stage{stage}.block{slot + 1}"
                score += float(logp[f"{prefix}.width"][width_index[c]]) + float(logp[f"{prefix}.kernel"].max())
        item = (score, -rank, arch)
        if len(best) < top_n:
            heapq.heappush(best, item)
        elif item > best[0]:
            heapq.heapreplace(best, item)
    if not best:
        raise SearchError("no candidate of the search space fits the supernet (check dnas widths and the space)")
    out = []
    for score, _, arch in sorted(best, reverse=True):
        base = to_arch_spec(arch)
        sizes = tuple(tuple(kernels[s][: len(base.stages[s])]) for s in range(3))
        spec = ArchSpec(base.stage1, base.stage2, *base.stages, kernels=sizes)  # type: ignore[arg-type]
        out.append((spec, score))
    return out


# ------------------------------------------------------------------------------------------------------- training
def _loader(items: Sequence[Mapping[str, Any]], batch_size: int, seed: int) -> DataLoader:
    dataset = CacheDataset([dict(i) for i in items], train_transforms(), cache_rate=1.0, num_workers=0, progress=False)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, generator=generator)


def _uniform_latency(supernet: CBAMSupernet3D, table: Mapping[str, float]) -> float:
    """Expected latency with every decision uniform: the scale that makes the latency term unitless."""
    saved = [p.detach().clone() for p in supernet.arch_parameters()]
    with torch.no_grad():
        for p in supernet.arch_parameters():
            p.zero_()
        value = float(supernet.expected_latency(table))
        for p, s in zip(supernet.arch_parameters(), saved, strict=True):
            p.copy_(s)
    return value


def _check_settings(out: Path, settings: dict[str, Any], checkpoint: Path) -> None:
    check_search_settings(out, settings, "dnas", checkpoint.is_file, checkpoint)
    if checkpoint.is_file() and "trainer" not in torch.load(checkpoint, map_location="cpu", weights_only=True):
        raise SearchError(
            f"{checkpoint} was written by a naslung whose DNAS loop was not an Ignite engine and cannot be resumed; "
            "delete it to run the supernet epochs again, or use a new --out folder"
        )
    write_json(out / "settings.json", settings)


def run_dnas_search(
    out: Path,
    cfg: Mapping[str, Any],
    datalist: Sequence[Mapping[str, Any]],
    space: SearchSpace,
    train_config: Mapping[str, Any] | None = None,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Run (or resume) the DNAS search into ``out`` (see the module docstring) and return its summary.

    Args:
        out: the search folder.
        cfg: the merged search config (``dnas`` section plus the shared keys: ``space``, ``test_folds``, ``seed``,
            ``epochs_per_candidate``, ``attention``, ``loss_name``, ``train``, latency settings, ``select_top_n``,
            ``latency_budget_ms``).
        datalist: the search data (no nodule of a test fold).
        space: the search space.
        train_config: user training config for the candidates (``None``: the packaged one).
        progress: progress reporter over the supernet epochs and the candidates.

    Raises:
        ConfigError: a bad ``dnas`` option.
        SearchError: other settings than the checkpoint's, a checkpoint of an older naslung, or a failed candidate.
    """
    dcfg = dict(cfg["dnas"])
    epochs = int(dcfg["epochs"])
    if epochs < 1 or int(dcfg["warmup_epochs"]) < 0 or int(dcfg["candidates"]) < 1:
        raise ConfigError(f"dnas needs epochs >= 1, warmup_epochs >= 0 and candidates >= 1; got {dcfg}")
    seed = int(cfg["seed"])
    schedule = TemperatureSchedule(
        float(dcfg["temperature_start"]), float(dcfg["temperature_end"]), int(dcfg["anneal_epochs"])
    )
    data_key = sorted((str(d["nodule_id"]), int(d["label"]), int(d["fold"])) for d in datalist)
    settings = {
        "strategy": "dnas",
        "space": space.describe(),
        "test_folds": sorted(int(f) for f in cfg["test_folds"]),
        "seed": seed,
        "dnas": {k: v for k, v in dcfg.items() if k not in ("epochs", "device")},
        "data": fingerprint(data_key),
    }
    settings = json.loads(json.dumps(settings, default=str))
    candidate_keys = (
        "epochs_per_candidate",
        "attention",
        "loss_name",
        "train",
        "select_top_n",
        "latency_budget_ms",
        "score_metric",
        "select",
    )
    digest = fingerprint(
        settings, epochs, {k: cfg.get(k) for k in candidate_keys}, fingerprint(train_config) if train_config else None
    )
    if is_done(out, digest):
        logger.info("%s is up to date; skipping the DNAS search", out)
        return {**json.loads((out / "summary.json").read_text(encoding="utf-8")), "skipped": True}
    checkpoint_path = out / "supernet.pt"
    _check_settings(out, settings, checkpoint_path)

    device = torch.device(resolve_device(dcfg.get("device")))
    torch.manual_seed(seed)
    supernet = supernet_for_space(space, dcfg.get("widths"), dcfg["kernel_sizes"], cfg["attention"]).to(device)
    weight_opt = torch.optim.Adam(
        supernet.weight_parameters(), lr=float(dcfg["weight_lr"]), weight_decay=float(dcfg["weight_decay"])
    )
    arch_opt = torch.optim.Adam(
        supernet.arch_parameters(), lr=float(dcfg["arch_lr"]), betas=(0.5, 0.999),
        weight_decay=float(dcfg["arch_weight_decay"]),
    )  # fmt: skip
    split = split_for_fold(datalist, None, val_fraction=float(dcfg["arch_fraction"]), seed=seed)
    batch_size = int(dcfg["batch_size"])
    paired = PairedLoader(_loader(split.train, batch_size, seed), _loader(split.val, batch_size, seed + 1))

    latency_weight = float(dcfg["latency_weight"])
    table: dict[str, float] = {}
    latency_scale = 1.0
    if latency_weight > 0:
        table_path = out / "latency_table.json"
        known = json.loads(table_path.read_text(encoding="utf-8")) if table_path.is_file() else {}
        table = measure_latency_table(
            supernet, 32, device=resolve_device(cfg.get("latency_device")), warmup=int(dcfg["latency_warmup"]),
            repeats=int(dcfg["latency_repeats"]), num_threads=cfg.get("latency_threads"), known=known,
        )  # fmt: skip
        if table != known:
            write_json(table_path, table)
        latency_scale = _uniform_latency(supernet, table)

    update = BilevelUpdate(
        supernet, weight_opt, arch_opt, device, warmup_epochs=int(dcfg["warmup_epochs"]),
        grad_clip=float(dcfg["grad_clip"]), latency_weight=latency_weight, latency_table=table,
        latency_scale=latency_scale,
    )  # fmt: skip
    recorder = SupernetEpochRecorder(
        supernet, lambda net: derive_specs(net, space, 1)[0], split.val, out / "journal.jsonl", device, batch_size,
        warmup_epochs=int(dcfg["warmup_epochs"]), latency_table=table,
    )  # fmt: skip
    trainer = create_supernet_trainer(update, recorder, paired, schedule, seed, checkpoint_path, epochs, progress)
    start = time.perf_counter()
    trainer.run(paired, max_epochs=epochs)
    supernet_seconds = time.perf_counter() - start

    # the most probable architectures of the space, each trained and timed exactly like a POP candidate
    specs = [spec for spec, _ in derive_specs(supernet, space, int(dcfg["candidates"]))]
    evaluator = CandidateEvaluator(
        datalist, out / "candidates", epochs=int(cfg["epochs_per_candidate"]), attention=cfg["attention"],
        loss_name=cfg["loss_name"], seed=seed, train_config=train_config, train_overrides=cfg.get("train") or {},
        score_metric=cfg["score_metric"],
    )  # fmt: skip
    journal = SearchJournal(out / "candidates.jsonl")
    profiler = candidate_profiler(
        cfg, evaluator.merged_config("[4,4,[4],[4],[4]]"), {r["spec"]: r["latency_ms"] for r in journal.records()}
    )
    done = journal.done_specs()
    candidate_start = time.perf_counter()
    trained_now = 0
    todo = [spec for spec in specs if str(spec) not in done]
    for spec in progress(todo, total=len(todo), desc="DNAS candidates"):
        latency_ms = profiler(spec)
        journal.append({**evaluator(spec), "latency_ms": latency_ms, "strategy": "dnas"})
        trained_now += 1
    candidate_seconds = time.perf_counter() - candidate_start

    wanted = {str(s) for s in specs}
    candidates = [r for r in journal.records() if r["spec"] in wanted]
    score_key = str(cfg["score_metric"])
    front = pareto_front(candidates, score_key=score_key)
    write_pareto_csv(candidates, out / "pareto.csv", score_key=score_key)
    options = {d.name: d.options for d in supernet.decisions}
    records = recorder.records
    plot_architecture_probabilities(records, out / "alphas.png", options=options)
    selected = select_candidates(
        candidates, int(cfg["select_top_n"]), cfg.get("latency_budget_ms"), score_key=score_key, rule=cfg["select"]
    )
    write_json(out / "selected.json", {**selected_payload(cfg, selected, settings["test_folds"]), "strategy": "dnas"})
    final = records[-1] if records else {}
    summary = {
        "strategy": "dnas",
        "space": space.describe(),
        "stop_reason": f"{epochs} supernet epochs",
        "epochs": epochs,
        "resumed_epochs": recorder.resumed_epochs,
        "iterations": len(records),
        "trained": len(candidates),
        "evaluated": trained_now,
        "resumed": len(candidates) - trained_now,
        "pruned": None,
        "derived": [str(s) for s in specs],
        "final_temperature": final.get("temperature"),
        "expected_latency_ms": final.get("expected_latency_ms"),
        "supernet_seconds": supernet_seconds,
        "candidate_seconds": candidate_seconds,
        "search_seconds": supernet_seconds + candidate_seconds,
        "search_nodules": len(datalist),
        "weight_nodules": len(split.train),
        "arch_nodules": len(split.val),
        "test_folds": settings["test_folds"],
        "device": str(device),
        "latency": profiler.describe(),
        "score_metric": score_key,
        "select": cfg["select"],
        "front": [table_row(r) for r in front],
        "selected": [r["spec"] for r in selected],
    }
    write_json(out / "summary.json", summary)
    mark_done(out, digest, DNAS_OUTPUTS, {k: summary[k] for k in ("stop_reason", "trained", "selected")})
    return summary
