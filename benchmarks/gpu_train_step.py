"""Training throughput and inference latency on a CUDA GPU, side by side: precision, memory layout, loader workers.

Run: ``python benchmarks/gpu_train_step.py [--cubes 512] [--epochs 3] [--out FILE]`` on a machine with a CUDA GPU
(``benchmarks/gpu/run.sh`` runs it on a lent one).

For Table 5's Model-1 ``[4,4,[4,4],[4,8],[8,8]]``, one of the standard profile's selected networks and a spec of
about 2 M parameters, a MONAI ``SupervisedTrainer`` (A-Softmax head and loss, Adam) trains on generated 32³ cubes
(:func:`train_step.make_cubes`) through the training transforms with a ``CacheDataset`` and MONAI ``DataLoader``,
as the packaged training config does, for each combination of:

- precision: float32, or MONAI's ``amp`` (float16 autocast and a gradient scaler: what the training config turns on
  for CUDA);
- layout: channels-last (``channels_last_3d``, the training config's choice, made for oneDNN on CPU) or contiguous;
- loader workers: 0 (the training config's ``num_workers``) or 4;
- batch size: 16 (the quick and standard profiles) or 64.

The full grid for Model-1; the other networks at batch size 16 without loader workers.

The first epoch is a warm-up (cuDNN's autotuning, the workers' start) and is not counted. Printed and written to
``--out`` (default ``benchmarks/results/gpu_train_step.json``): samples/s and the data-wait share of step time per
combination, and each network's single-nodule and batch-64 inference latency on the GPU (the least of the timed calls,
as the search measures it), beside the GPU's name.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from monai.data import CacheDataset, DataLoader
from monai.engines import SupervisedTrainer
from monai.utils import set_determinism

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import PAPER_MODEL_1, SPEC_2M, make_cubes, run_timed  # noqa: E402  (this folder's benchmark, not a package)

from naslung.networks import build_loss, build_network, count_parameters  # noqa: E402
from naslung.networks.profile import measure_latency_ms  # noqa: E402
from naslung.pipeline.atomic_io import write_json  # noqa: E402
from naslung.transforms import train_transforms  # noqa: E402

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "gpu_train_step.json"

#: The first network the standard profile's session-6 run selected (benchmarks/results/standard_run_session6/).
STANDARD_MEMBER = "[4,4,[8,16,16],[16],[16]]"


def bench_train(
    spec: str,
    items: list[dict],
    amp: bool,
    channels_last: bool,
    workers: int,
    batch_size: int,
    epochs: int,
    device_name: str = "cuda",
) -> dict[str, float]:
    """Train ``spec`` for ``epochs`` epochs; samples/s, data-wait share and step time of the epochs after the first."""
    set_determinism(seed=0)
    device = torch.device(device_name)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    network = build_network(spec, head="angular").to(device=device, memory_format=layout)
    dataset = CacheDataset(items, train_transforms(), cache_rate=1.0, num_workers=0, progress=False)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=epochs,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), 2e-3),
        loss_function=build_loss("asoftmax"),
        amp=amp,
    )
    row = run_timed(trainer, batch_size, cuda=device.type == "cuda")
    output = trainer.state.output
    row["last_loss"] = float((output[0] if isinstance(output, list) else output)["loss"])
    return row


def bench_latency(spec: str, device: str = "cuda") -> dict[str, float]:
    """Single-nodule and batch-64 latency (ms, least of 50 timed calls) of ``spec``, float32 and fp16 autocast."""
    network = build_network(spec, head="angular").to(device).eval()
    out = {"params": count_parameters(network)}
    for batch in (1, 64):
        example = torch.randn(batch, 1, 32, 32, 32, device=device)
        out[f"latency_ms_b{batch}"] = measure_latency_ms(network, example, warmup=10, repeats=50, statistic="min")

        def half(x: torch.Tensor):
            with torch.autocast(torch.device(device).type, dtype=torch.float16):
                return network(x)

        out[f"latency_ms_b{batch}_fp16"] = measure_latency_ms(half, example, warmup=10, repeats=50, statistic="min")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", type=int, default=256, help="generated cubes per training run")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is a warm-up")
    parser.add_argument("--specs", nargs="+", default=[PAPER_MODEL_1, STANDARD_MEMBER, SPEC_2M])
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_train_step.py: no CUDA device (torch.cuda.is_available() is False)")
    torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name()
    print(f"{gpu}; torch {torch.__version__}; {platform.processor() or platform.machine()}", flush=True)
    results: dict[str, object] = {"gpu": gpu, "torch": torch.__version__, "cubes": args.cubes, "runs": []}
    with tempfile.TemporaryDirectory() as scratch:
        items = make_cubes(Path(scratch) / "cubes", args.cubes)
        for spec in args.specs:
            latency = bench_latency(spec)
            results.setdefault("latency", {})[spec] = latency
            write_json(args.out, results)
            print(f"{spec}: {latency}", flush=True)
        grid = itertools.product(args.specs, (16, 64), (False, True), (True, False), (0, 4))
        for spec, batch, amp, channels_last, workers in grid:
            if spec != PAPER_MODEL_1 and (batch, workers) != (16, 0):
                continue  # the full grid for Model-1; the others at the profiles' batch size and loader
            start = time.perf_counter()
            row = bench_train(spec, items, amp, channels_last, workers, batch, args.epochs)
            row.update(
                spec=spec, batch_size=batch, amp=amp, channels_last=channels_last, workers=workers,
                seconds=time.perf_counter() - start,
            )  # fmt: skip
            results["runs"].append(row)
            print(
                f"{spec:32s} b{batch:<3d} amp={amp!s:5s} cl={channels_last!s:5s} w={workers}: "
                f"{row['samples_per_s']:8.0f} samples/s, data wait {100 * row['data_fraction']:4.0f}%",
                flush=True,
            )
            write_json(args.out, results)  # after every row, so a run stopped by a time limit keeps what it measured
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
