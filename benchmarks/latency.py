"""Latency per nodule of NAS-Lung candidates on eager PyTorch, TorchScript and ONNX Runtime, side by side.

Run: ``python benchmarks/latency.py [--threads 1] [--repeats 30] [--large-batch 64] [--spec "[4,4,...]" ...]
[--bundle-cubes 512] [--bundle-repeats 3] [--bundle-only] [--out benchmarks/results/latency.json]``.

For each spec it first puts the two layouts side by side (``build_network(..., layout=...)``: naslung's
:class:`~naslung.networks.CBAMResNet3D` and the authors' ``ConvRes``, :class:`~naslung.networks.ReferenceConvRes3D`):
parameters, MACs per nodule and ms per nodule at batch 1, eager and ONNX Runtime, timed in turn within each repeat.

For each spec it prints parameters, MACs per nodule and ms per nodule at batch 1 and at the large batch for the
three inference paths (timed in turn within each repeat, median reported), each path's largest logit difference
from eager, and the speed-up of the fastest numerically equal path over eager. A square fp32 GEMM timed in the
same run gives this machine's compute rate, against which the fastest path's time is compared (MACs per nodule /
GEMM rate = the time a path would need at GEMM efficiency).

Last, what a bundle's user gets end to end: a classifier bundle of Model-1 (exported from a run folder whose weights
are freshly initialised, with trained-like batch-norm statistics: speed does not depend on the values) classifies a
datalist of ``--bundle-cubes`` generated cubes through ``python -m monai.bundle run`` with ``inference.json``
(PyTorch) and with ``inference_onnx.json`` (ONNX Runtime), in turn within each of ``--bundle-repeats`` repeats, both
on ``--threads`` threads. Each is also run on a one-cube datalist: the difference gives the nodules per second once
the process has started (start-up, imports and config parsing excluded), beside the whole-process rate.
Everything printed is also written to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser

from naslung.networks import (
    LAYOUTS,
    OnnxRuntimeModel,
    build_network,
    count_macs,
    count_parameters,
    fixed_threads,
    to_onnx,
    to_torchscript,
)
from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.export.smoke import run_bundle_inference
from naslung.pipeline.export.step import export_bundle
from naslung.pipeline.training.step import load_train_config, spec_slug

__all__ = ["main", "bench_layouts", "bench_spec", "bench_bundle_throughput"]

PAPER_MODEL_1 = "[4,4,[4,4],[4,8],[8,8]]"
SPEC_2M = "[4,4,[16,32],[64,64],[128,128]]"  # about 2.0 M parameters, inside eq. (5)-(6)
PAPER_PARAMS_M = {PAPER_MODEL_1: 0.14}  # Table 5
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latency.json"
#: The bundle's two inference configs: name -> configs merged after ``inference.json``.
BUNDLE_CONFIGS = {"inference.json": [], "inference_onnx.json": ["configs/inference_onnx.json"]}


class GemmRate:
    """Peak fp32 multiply-accumulates per second of a square GEMM on this CPU, kept as the best seen in the run.

    Each :meth:`measure` times ``size`` x ``size`` products and keeps the fastest; the best over the run is the
    compute limit, since other processes on a shared machine can only slow a measurement down.
    """

    def __init__(self, size: int = 1024) -> None:
        generator = torch.Generator().manual_seed(0)
        self.a = torch.rand((size, size), generator=generator)
        self.b = torch.rand((size, size), generator=generator)
        self.size = size
        self.best = 0.0

    def measure(self, repeats: int = 20) -> float:
        with torch.inference_mode():
            torch.mm(self.a, self.b)
            for _ in range(repeats):
                start = time.perf_counter()
                torch.mm(self.a, self.b)
                self.best = max(self.best, self.size**3 / (time.perf_counter() - start))
        return self.best


def interleaved_latency_ms(
    paths: dict[str, Callable[[torch.Tensor], Any]], example: torch.Tensor, warmup: int, repeats: int
) -> dict[str, float]:
    """Median ms per call of each path, the paths timed in turn within every repeat.

    Round-robin timing exposes every path to the same background load on a shared machine, so their ratios hold
    even when absolute times drift.
    """
    timings: dict[str, list[float]] = {name: [] for name in paths}
    with torch.inference_mode():
        for run in paths.values():
            for _ in range(warmup):
                run(example)
        for _ in range(repeats):
            for name, run in paths.items():
                start = time.perf_counter()
                run(example)
                timings[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in timings.items()}


def randomise_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Give batch norms non-trivial statistics and affine weights, as after training, so equality checks bite."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(n, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(n, generator=generator))


def bench_layouts(spec: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Both layouts of ``spec`` side by side: parameters, MACs and ms per nodule at batch 1, eager and ONNX Runtime.

    Returns:
        ``{layout: {"parameters", "macs", "eager_ms", "onnxruntime_ms"}}``.
    """
    shape = (1, 32, 32, 32)
    models: dict[str, torch.nn.Module] = {}
    for layout in LAYOUTS:
        torch.manual_seed(0)
        models[layout] = build_network(spec, head="angular", layout=layout).eval()
        randomise_norms(models[layout])
    paths: dict[str, Callable[[torch.Tensor], Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for layout, model in models.items():
            paths[f"{layout} eager"] = model
            paths[f"{layout} onnxruntime"] = OnnxRuntimeModel(to_onnx(model, None, shape), num_threads=args.threads)
    single = torch.rand((1, *shape), generator=torch.Generator().manual_seed(1))
    ms = interleaved_latency_ms(paths, single, warmup=5, repeats=args.repeats)
    rows = {
        layout: {
            "parameters": float(count_parameters(model)),
            "macs": float(count_macs(model, shape)),
            "eager_ms": ms[f"{layout} eager"],
            "onnxruntime_ms": ms[f"{layout} onnxruntime"],
        }
        for layout, model in models.items()
    }
    print(f"\n{spec}: layouts side by side (angular head, batch 1, median of {args.repeats})")
    print(f"  {'layout':<10} {'parameters':>10} {'M MACs':>8} {'eager ms':>9} {'ORT ms':>8}")
    for layout, row in rows.items():
        print(
            f"  {layout:<10} {int(row['parameters']):>10,} {row['macs'] / 1e6:>8.1f} {row['eager_ms']:>9.3f} "
            f"{row['onnxruntime_ms']:>8.3f}"
        )
    ours, authors = rows["naslung"], rows["reference"]
    print(
        f"  ratio reference / naslung: parameters {authors['parameters'] / ours['parameters']:.2f}x, MACs "
        f"{authors['macs'] / ours['macs']:.2f}x, eager {authors['eager_ms'] / ours['eager_ms']:.2f}x, "
        f"ONNX Runtime {authors['onnxruntime_ms'] / ours['onnxruntime_ms']:.2f}x"
    )
    return rows


def bench_spec(spec: str, args: argparse.Namespace, gemm: GemmRate) -> dict[str, Any]:
    """The three inference paths of ``spec`` side by side at batch 1 and at ``args.large_batch``.

    Returns:
        ``{"parameters", "macs", "paths": {path: {"ms_batch_1", "ms_large_batch", "max_abs_logit_difference"}}}``.
    """
    shape = (1, 32, 32, 32)
    torch.manual_seed(0)
    model = build_network(spec, head="angular").eval()
    randomise_norms(model)
    params = count_parameters(model)
    macs = count_macs(model, shape)
    paper = PAPER_PARAMS_M.get(spec)
    paper_text = f" (paper Table 5: {paper} M)" if paper is not None else ""
    print(f"\n{spec}: {params:,} parameters = {params / 1e6:.4f} M{paper_text}; {macs / 1e6:.1f} M MACs per nodule")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = {
            "eager": model,
            "torchscript": to_torchscript(model),
            "onnxruntime": OnnxRuntimeModel(to_onnx(model, None, shape), num_threads=args.threads),
        }
    generator = torch.Generator().manual_seed(1)
    single = torch.rand((1, *shape), generator=generator)
    batch = torch.rand((args.large_batch, *shape), generator=generator)
    with torch.inference_mode():
        reference = model(batch)
    differences = {}
    for name, run in paths.items():
        with torch.inference_mode():
            differences[name] = (run(batch) - reference).abs().max().item()
    ms_single = interleaved_latency_ms(paths, single, warmup=5, repeats=args.repeats)
    ms_batch = interleaved_latency_ms(paths, batch, warmup=2, repeats=max(3, args.repeats // 3))
    results = {name: (ms_single[name], ms_batch[name] / args.large_batch, differences[name]) for name in paths}

    eager1, eagerb, _ = results["eager"]
    header = f"  {'path':<12} {'ms/nodule b=1':>14} {f'ms/nodule b={args.large_batch}':>15} {'x eager b=1':>12}"
    print(header + f" {f'x eager b={args.large_batch}':>13} {'max|dlogit|':>12}")
    for name, (ms1, msb, difference) in results.items():
        print(f"  {name:<12} {ms1:>14.3f} {msb:>15.3f} {eager1 / ms1:>12.2f} {eagerb / msb:>13.2f} {difference:>12.1e}")
    equal = {name: r for name, r in results.items() if r[2] <= 1e-4}
    fastest = min(equal, key=lambda name: equal[name][0])
    fastest_b = min(equal, key=lambda name: equal[name][1])
    gemm_rate = gemm.measure()
    ideal_ms = macs / gemm_rate * 1e3
    print(
        f"  fastest numerically equal path at b=1: {fastest}, {eager1 / equal[fastest][0]:.2f}x over eager "
        f"(goal >= 2x); at b={args.large_batch}: {fastest_b}, {eagerb / equal[fastest_b][1]:.2f}x"
    )
    ms_1, ms_b = equal[fastest][0], equal[fastest_b][1]
    print(
        f"  compute limit: {macs / 1e6:.1f} M MACs at the best GEMM rate ({gemm_rate / 1e9:.1f} G MAC/s) take "
        f"{ideal_ms:.3f} ms per nodule; {fastest} at b=1 takes {ms_1 / ideal_ms:.1f}x that "
        f"({100 * ideal_ms / ms_1:.0f}% of the GEMM rate), {fastest_b} at b={args.large_batch} "
        f"{ms_b / ideal_ms:.1f}x ({100 * ideal_ms / ms_b:.0f}%)"
    )
    return {
        "parameters": params,
        "macs": macs,
        "paths": {
            name: {"ms_batch_1": ms1, "ms_large_batch": msb, "max_abs_logit_difference": difference}
            for name, (ms1, msb, difference) in results.items()
        },
    }


def classifier_bundle(spec: str, folder: Path) -> Path:
    """Export a classifier bundle of ``spec`` from a run folder made in ``folder``: the packaged training config
    with ``arch`` = ``spec`` and the network's initial weights (batch norms randomised as after training).

    Returns:
        the bundle folder.
    """
    fold_dir = folder / "run" / "train" / spec_slug(spec) / "all"
    (fold_dir / "checkpoints").mkdir(parents=True)
    config = load_train_config(overrides={"arch": spec})
    write_json(fold_dir / "config.json", config)
    torch.manual_seed(0)
    network = ConfigParser(config).get_parsed_content("network_def")
    randomise_norms(network)
    torch.save(network.state_dict(), fold_dir / "checkpoints" / "best_model.pt")
    return Path(export_bundle(folder / "run", folder / "naslung_classifier"))


def _cube_datalist(folder: Path, n_cubes: int) -> Path:
    """``n_cubes`` generated cubes (lung-like noise with a sphere of random radius) and their datalist."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    radius = np.sqrt(((np.mgrid[:32, :32, :32] - 15.5) ** 2).sum(axis=0))
    entries = []
    for index in range(n_cubes):
        cube = np.clip(rng.normal(0.15, 0.05, (32, 32, 32)), 0.0, 1.0).astype(np.float32)
        cube[radius < rng.uniform(2.0, 9.0)] = 0.65
        np.save(folder / f"cube_{index}.npy", cube)
        entries.append({"image": f"cube_{index}.npy", "nodule_id": f"cube_{index}"})
    path = folder / "datalist.json"
    path.write_text(json.dumps(entries))
    return path


def bench_bundle_throughput(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    """Nodules per second of a classifier bundle through ``python -m monai.bundle run``, both configs side by side.

    Each repeat runs, in turn, each config on the ``args.bundle_cubes`` datalist and on a one-cube datalist, in a
    fresh process on ``args.threads`` threads (``OMP_NUM_THREADS`` for PyTorch, ``onnx_num_threads`` for ONNX
    Runtime) that cannot import naslung; medians over the repeats are reported.

    Returns:
        ``{"spec", "n_cubes", "batch_size", "threads", "repeats", "configs": {config: {"seconds", "startup_seconds",
        "nodules_per_second", "steady_nodules_per_second"}}, "onnx_over_pytorch": {...}}``.
    """
    n_cubes = max(2, int(args.bundle_cubes))
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    timings: dict[str, dict[str, list[float]]] = {name: {"full": [], "one": []} for name in BUNDLE_CONFIGS}
    with tempfile.TemporaryDirectory(prefix="naslung-bundle-bench-") as workdir:
        folder = Path(workdir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bundle = classifier_bundle(spec, folder)
        datalists = {"full": _cube_datalist(folder / "cubes", n_cubes), "one": _cube_datalist(folder / "one", 1)}
        batch_size = int(json.loads((bundle / "configs" / "inference.json").read_text())["batch_size"])
        for _ in range(max(1, int(args.bundle_repeats))):
            for name, extra in BUNDLE_CONFIGS.items():
                overrides = {"onnx_num_threads": args.threads} if extra else {}
                for size, datalist in datalists.items():
                    out = folder / "out" / name / size
                    start = time.perf_counter()
                    run_bundle_inference(bundle, datalist, out, extra, overrides=overrides, env=env)
                    timings[name][size].append(time.perf_counter() - start)
    configs: dict[str, dict[str, float]] = {}
    for name, runs in timings.items():
        full, one = statistics.median(runs["full"]), statistics.median(runs["one"])
        configs[name] = {
            "seconds": full,
            "startup_seconds": one,
            "nodules_per_second": n_cubes / full,
            "steady_nodules_per_second": (n_cubes - 1) / max(full - one, 1e-9),
        }
    torch_row, onnx_row = configs["inference.json"], configs["inference_onnx.json"]
    ratios = {key: onnx_row[key] / torch_row[key] for key in ("nodules_per_second", "steady_nodules_per_second")}
    print(
        f"\nbundle throughput: {spec} classifier bundle, {n_cubes} cubes, batch {batch_size}, {args.threads} "
        f"thread(s), python -m monai.bundle run, median of {len(timings['inference.json']['full'])}"
    )
    print(f"  {'config':<20} {'wall s':>8} {'start-up s':>11} {'nodules/s':>10} {'after start-up':>15}")
    for name, row in configs.items():
        print(
            f"  {name:<20} {row['seconds']:>8.2f} {row['startup_seconds']:>11.2f} {row['nodules_per_second']:>10.1f} "
            f"{row['steady_nodules_per_second']:>15.1f}"
        )
    print(
        f"  ratio inference_onnx.json / inference.json: {ratios['nodules_per_second']:.2f}x nodules per second "
        f"end to end, {ratios['steady_nodules_per_second']:.2f}x after start-up"
    )
    return {
        "spec": spec,
        "n_cubes": n_cubes,
        "batch_size": batch_size,
        "threads": args.threads,
        "repeats": len(timings["inference.json"]["full"]),
        "configs": configs,
        "onnx_over_pytorch": ratios,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch and ONNX Runtime (fixed)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs at batch 1 (median reported)")
    parser.add_argument("--large-batch", type=int, default=64)
    parser.add_argument("--spec", action="append", help="spec(s) to time; default: Model-1 and a ~2M spec")
    parser.add_argument("--bundle-cubes", type=int, default=512, help="cubes in the bundle throughput datalist")
    parser.add_argument("--bundle-repeats", type=int, default=3, help="runs of each bundle config (median)")
    parser.add_argument("--bundle-only", action="store_true", help="only the bundle throughput (Model-1)")
    parser.add_argument("--skip-bundle", action="store_true", help="no bundle throughput")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON")
    args = parser.parse_args(argv)
    specs = args.spec or [PAPER_MODEL_1, SPEC_2M]
    results: dict[str, Any] = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
        "layouts": {},
        "paths": {},
    }
    with fixed_threads(args.threads):
        if not args.bundle_only:
            gemm = GemmRate()
            results["machine"]["gemm_gmacs"] = gemm.measure() / 1e9
            print(
                f"torch {torch.__version__}, {results['machine']['processor']}, {os.cpu_count()} CPUs, "
                f"{torch.get_num_threads()} thread(s); fp32 GEMM 1024^3: {results['machine']['gemm_gmacs']:.1f} "
                "G MAC/s (best of 20)"
            )
            for spec in specs:
                results["layouts"][spec] = bench_layouts(spec, args)
                results["paths"][spec] = bench_spec(spec, args, gemm)
    if not args.skip_bundle:
        results["bundle_throughput"] = bench_bundle_throughput(PAPER_MODEL_1, args)
    write_json(args.out, results)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
