"""Where a training step of a NAS-Lung network goes on CPU: the whole step, without stage 2's CBAM, without any CBAM.

Run: ``python benchmarks/step_breakdown.py [--spec SPEC] [--batch-size 16] [--threads 1] [--rounds 4]``.

The step is the pipeline's CPU training path (channels-last, narrow-channel kernels
(:func:`~naslung.networks.blocks.use_narrow_channel_kernels`), A-Softmax head and loss, Adam) on random 32³ cubes. The
three variants are built from the same seed, the CBAM blocks replaced by identities, and timed in alternation
(``--rounds`` rounds of 6 timed steps after 2 warm-up steps each), so a slow spell of the machine touches them all.
Printed and written to ``benchmarks/results/step_breakdown.json``: each variant's median milliseconds per step and its
share of the whole step, which bounds what any faster attention kernel can buy (the rest of the step stays).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import torch.nn as nn

from naslung.networks import build_loss, build_network
from naslung.networks.blocks import use_narrow_channel_kernels
from naslung.networks.blocks.cbam import CBAMBlock
from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.cpu_allocator import retain_freed_memory

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "step_breakdown.json"
VARIANTS = ("whole step", "without stage 2's CBAM", "without any CBAM")


def build_variant(spec: str, variant: str) -> nn.Module:
    """The network of ``spec`` on the CPU training path, with the CBAM blocks that ``variant`` drops replaced."""
    torch.manual_seed(0)
    network = build_network(spec, head="angular")
    for name, module in list(network.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            drop = variant == VARIANTS[2] or (variant == VARIANTS[1] and full.startswith("stage2."))
            if isinstance(child, CBAMBlock) and drop:
                setattr(module, child_name, nn.Identity())
    return use_narrow_channel_kernels(network.to(memory_format=torch.channels_last_3d))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="[4,4,[4,4],[4,8],[8,8]]")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    retain_freed_memory()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch_size, 1, 32, 32, 32).contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, 2, (args.batch_size,))
    loss_fn = build_loss("asoftmax")
    networks = {v: build_variant(args.spec, v) for v in VARIANTS}
    optimisers = {v: torch.optim.Adam(n.parameters(), 2e-3) for v, n in networks.items()}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant, network in networks.items():
            optimiser = optimisers[variant]
            for step in range(8):
                if step == 2:
                    start = time.perf_counter()
                optimiser.zero_grad(set_to_none=True)
                loss_fn(network(x), y).backward()
                optimiser.step()
            times[variant].append((time.perf_counter() - start) / 6 * 1000.0)
    median = {v: sorted(t)[len(t) // 2] for v, t in times.items()}
    whole = median[VARIANTS[0]]
    for variant in VARIANTS:
        print(f"{variant:26s} {median[variant]:7.1f} ms/step  {median[variant] / whole:6.1%} of the whole step")
    write_json(
        args.out,
        {
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
            "torch": torch.__version__,
            "spec": args.spec,
            "batch_size": args.batch_size,
            "ms_per_step_runs": times,
            "median_ms_per_step": median,
            "share_of_whole_step": {v: median[v] / whole for v in VARIANTS},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
