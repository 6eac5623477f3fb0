"""Cost of a network per nodule: parameters, multiply-accumulates and measured latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from naslung.networks.errors import ConfigError

__all__ = [
    "LATENCY_STATISTICS",
    "CostProfile",
    "count_parameters",
    "count_macs",
    "measure_latency_ms",
    "fixed_threads",
    "profile",
]

LATENCY_STATISTICS = ("median", "min")
"""How :func:`measure_latency_ms` summarises its timed calls."""


@dataclass(frozen=True)
class CostProfile:
    """What one candidate costs (the search's latency objective, Sec. 3.4).

    Attributes:
        parameters: number of parameters.
        macs_per_nodule: multiply-accumulates of one forward pass on one nodule (conv and matmul only).
        latency_ms_per_nodule: median (or least, :func:`profile`'s ``statistic``) wall time per nodule at batch 1,
            in ms.
        large_batch_latency_ms_per_nodule: the same of a batch of ``large_batch``, divided by it, in ms.
        large_batch: size of the large batch.
        device: where latency was measured, e.g. ``"cpu"`` or ``"cuda:0"``.
        num_threads: CPU threads torch used while timing.
    """

    parameters: int
    macs_per_nodule: int
    latency_ms_per_nodule: float
    large_batch_latency_ms_per_nodule: float
    large_batch: int
    device: str
    num_threads: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable fields."""
        return asdict(self)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _one_nodule_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ConfigError(
            f"profile: input_shape must be the shape of one nodule (C, *spatial), e.g. (1, 32, 32, 32); got {shape}."
        )
    return shape


def count_macs(model: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu") -> int:
    """Multiply-accumulates of one eval-mode forward pass on one nodule.

    Counted with ``torch.utils.flop_counter.FlopCounterMode``, which counts the FLOPs of convolutions and matrix
    products (2 per multiply-accumulate) at the ATen level, so every layer is covered whatever module computes it
    (CBAM's MLP and spatial convolution, the angular head, MONAI's baselines). Normalisation, activations, pooling
    and element-wise products are not counted; they are memory-bound and a few percent of the total.

    Args:
        model: the network (its training mode is restored afterwards).
        input_shape: shape of one nodule without the batch axis, (C, *spatial).
        device: where to run the counting pass.
    """
    shape = _one_nodule_shape(input_shape)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros((1, *shape), device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


@contextmanager
def fixed_threads(num_threads: int | None):
    """Fix torch's intra-op CPU threads inside the block (``None``: leave as is); restore afterwards."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        if num_threads < 1:
            raise ConfigError(f"num_threads must be positive, got {num_threads}.")
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure_latency_ms(
    run: Callable[[torch.Tensor], Any],
    example: torch.Tensor,
    warmup: int = 5,
    repeats: int = 20,
    statistic: str = "median",
) -> float:
    """Median (or least) wall time in ms of ``run(example)`` after ``warmup`` untimed calls, under
    ``torch.inference_mode``.

    On CUDA the device is synchronised before starting and after each call, so the time covers the kernels.

    Args:
        run: the callable to time (a module, a TorchScript module, an ONNX Runtime runner).
        example: its input, already on the device.
        warmup: untimed calls first (allocator, autotuning, lazy initialisation).
        repeats: timed calls.
        statistic: ``"median"`` of the timed calls (what a user sees on average), or ``"min"``: the least, which
            other work on the machine can only raise (on this project's 2-core machine a single-thread call takes
            twice as long while the other core is busy), so it ranks networks the same way whatever else runs.
    """
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"measure_latency_ms: need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}.")
    if statistic not in LATENCY_STATISTICS:
        raise ConfigError(f"measure_latency_ms: statistic must be one of {LATENCY_STATISTICS}, got {statistic!r}.")
    cuda = example.device.type == "cuda"

    def synchronise() -> None:
        if cuda:
            torch.cuda.synchronize(example.device)

    timings = []
    with torch.inference_mode():
        for _ in range(warmup):
            run(example)
        synchronise()
        for _ in range(repeats):
            start = time.perf_counter()
            run(example)
            synchronise()
            timings.append(time.perf_counter() - start)
    return 1e3 * (min(timings) if statistic == "min" else statistics.median(timings))


def profile(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 32, 32, 32),
    device: str | torch.device = "cpu",
    large_batch: int = 64,
    warmup: int = 5,
    repeats: int = 20,
    num_threads: int | None = 1,
    seed: int = 0,
    statistic: str = "median",
) -> CostProfile:
    """Parameters, MACs per nodule and latency per nodule of ``model`` in eval mode (eager PyTorch).

    Latency is measured at batch 1 and at ``large_batch``: ``warmup`` untimed runs, then the median (or least, see
    ``statistic``) of ``repeats`` timed runs (:func:`measure_latency_ms`), with torch's CPU threads fixed to
    ``num_threads`` and CUDA synchronised on GPU. MACs are counted as in :func:`count_macs`.

    Args:
        model: the network; it is moved to ``device`` and put in eval mode for the measurement, then its training
            mode is restored (it stays on ``device``).
        input_shape: shape of one nodule without the batch axis, (C, *spatial).
        device: ``"cpu"``, ``"cuda"``, ...
        large_batch: the large batch size.
        warmup: untimed runs before timing.
        repeats: timed runs.
        num_threads: CPU threads during timing (``None``: torch's current setting). One thread by default, so
            candidates are ranked without interference between cores.
        seed: seed of the random input.
        statistic: ``"median"`` or ``"min"`` of the timed runs, see :func:`measure_latency_ms`.

    Returns:
        A :class:`CostProfile`.
    """
    shape = _one_nodule_shape(input_shape)
    if large_batch < 1:
        raise ConfigError(f"profile: large_batch must be positive, got {large_batch}.")
    device = torch.device(device)
    model = model.to(device)
    was_training = model.training
    generator = torch.Generator().manual_seed(seed)
    try:
        model.eval()
        with fixed_threads(num_threads):
            threads = torch.get_num_threads()
            macs = count_macs(model, shape, device)
            single = torch.rand((1, *shape), generator=generator).to(device)
            batch = torch.rand((large_batch, *shape), generator=generator).to(device)
            ms_single = measure_latency_ms(model, single, warmup=warmup, repeats=repeats, statistic=statistic)
            ms_batch = measure_latency_ms(
                model, batch, warmup=max(1, warmup // 2), repeats=max(1, repeats // 2), statistic=statistic
            )
    finally:
        model.train(was_training)
    return CostProfile(
        parameters=count_parameters(model),
        macs_per_nodule=macs,
        latency_ms_per_nodule=ms_single,
        large_batch_latency_ms_per_nodule=ms_batch / large_batch,
        large_batch=large_batch,
        device=str(device),
        num_threads=threads,
    )
