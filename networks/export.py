"""Deployment exports of a network: TorchScript (scripted, frozen) and ONNX, and an ONNX Runtime runner."""

from __future__ import annotations

import copy
import io
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from monai.utils import look_up_option

from naslung.networks.errors import ConfigError

__all__ = [
    "INFERENCE_BACKENDS",
    "to_torchscript",
    "load_torchscript",
    "to_onnx",
    "OnnxRuntimeModel",
    "inference_runner",
]

INFERENCE_BACKENDS = ("onnxruntime", "torchscript", "eager")
"""Inference paths, fastest first on CPU for NAS-Lung's candidates (see ``benchmarks/latency.py``)."""

logger = logging.getLogger(__name__)


def _eval_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode (the caller's module keeps its mode and attributes)."""
    return copy.deepcopy(model).eval()


def to_torchscript(
    model: nn.Module, path: str | os.PathLike | None = None, freeze: bool = True
) -> torch.jit.ScriptModule:
    """Compile ``model`` for inference with ``torch.jit.script``, optionally frozen, and save it.

    Freezing (``torch.jit.freeze``) inlines parameters and attributes as constants and folds batch norm into the
    preceding convolutions; the result computes the eval-mode output of ``model`` (same values up to float
    rounding) and keeps its ``features`` method.

    Args:
        model: the network; it is copied, not changed.
        path: where to write the ``.pt`` archive (read back with :func:`load_torchscript`); ``None`` to skip.
        freeze: freeze the scripted module (faster inference; no training, no ``state_dict`` changes).

    Returns:
        The scripted (and frozen) module, in eval mode.
    """
    scripted = torch.jit.script(_eval_copy(model))
    if freeze:
        preserved = ["features"] if hasattr(scripted, "features") else []
        scripted = torch.jit.freeze(scripted, preserved_attrs=preserved)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(scripted, str(path))
        logger.info("saved TorchScript module to %s", path)
    return scripted


def load_torchscript(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript archive written by :func:`to_torchscript` onto ``device``, in eval mode."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no TorchScript archive there; write one with to_torchscript(model, path).")
    return torch.jit.load(str(path), map_location=device).eval()


def to_onnx(
    model: nn.Module,
    path: str | os.PathLike | None,
    input_shape: Sequence[int],
    opset_version: int = 17,
    dynamic_batch: bool = True,
    output_names: Sequence[str] = ("logits",),
) -> bytes:
    """Export the eval-mode ``model`` to ONNX with the TorchScript-based exporter (``dynamo=False``).

    The graph has one input ``nodule_cube`` (B, *input_shape) and one output ``logits`` (B, K) (or one output per
    name of ``output_names``, for a model returning a tuple); the batch axis is dynamic unless ``dynamic_batch`` is
    false. The file is written to a temporary name beside ``path`` and renamed onto it, so a reader never sees half
    a graph.

    Args:
        model: the network; it is copied, not changed.
        path: where to write the ``.onnx`` file; ``None`` to only return the bytes.
        input_shape: shape of one nodule without the batch axis, e.g. ``(1, 32, 32, 32)``.
        opset_version: ONNX opset.
        dynamic_batch: export a dynamic batch axis.
        output_names: names of the model's outputs, in the order it returns them.

    Returns:
        The serialised ONNX model.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ConfigError(f"to_onnx: input_shape must be (C, *spatial) of one nodule, got {tuple(input_shape)}.")
    exported = _eval_copy(model).cpu()
    example = torch.zeros((1, *shape))
    buffer = io.BytesIO()
    names = [str(name) for name in output_names]
    axes = {name: {0: "batch"} for name in ("nodule_cube", *names)} if dynamic_batch else None
    with torch.no_grad():
        torch.onnx.export(
            exported,
            (example,),
            buffer,
            input_names=["nodule_cube"],
            output_names=names,
            dynamic_axes=axes,
            opset_version=opset_version,
            dynamo=False,
        )
    data = buffer.getvalue()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        logger.info("saved ONNX model to %s", path)
    return data


class OnnxRuntimeModel:
    """Run an exported ONNX network on ONNX Runtime's CPU provider like a module: tensor in, logits out.

    Args:
        model: path of an ``.onnx`` file or its bytes (from :func:`to_onnx`).
        num_threads: intra-op threads (``None``: ONNX Runtime's default, all cores).
        providers: execution providers, CPU by default.

    Example::

        runner = OnnxRuntimeModel(to_onnx(net, None, (1, 32, 32, 32)), num_threads=1)
        logits = runner(torch.rand(4, 1, 32, 32, 32))  # (4, 2) torch tensor
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        num_threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        source = model if isinstance(model, bytes) else str(model)
        if not isinstance(model, bytes) and not Path(source).is_file():
            raise ConfigError(f"{model}: no ONNX file there; write one with to_onnx(model, path, input_shape).")
        self.session = ort.InferenceSession(source, sess_options=options, providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def run(self, nodule_cubes: np.ndarray) -> np.ndarray:
        """Logits (B, K) for ``nodule_cubes`` (B, C, *spatial), both NumPy float32 arrays."""
        inputs = np.ascontiguousarray(nodule_cubes, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: inputs})[0]

    def __call__(self, nodule_cubes: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) for ``nodule_cubes`` (B, C, *spatial) as a CPU tensor."""
        return torch.from_numpy(self.run(nodule_cubes.detach().cpu().numpy()))


def inference_runner(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 32, 32, 32),
    backend: str = "onnxruntime",
    num_threads: int | None = None,
    atol: float = 1e-4,
    check_batch: int = 2,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A deployment callable ``nodule_cubes (B, C, *spatial) -> logits (B, K)`` checked against eager PyTorch.

    ``"onnxruntime"`` (the default, fastest on CPU at batch 1 in ``benchmarks/latency.py``) and ``"torchscript"``
    (frozen) are verified on a random batch to give the eval-mode eager logits within ``atol``; ``"eager"`` is
    the model itself in eval mode (a copy).

    Args:
        model: the trained network; it is copied, not changed.
        input_shape: shape of one nodule without the batch axis.
        backend: one of :data:`INFERENCE_BACKENDS`.
        num_threads: intra-op CPU threads of ONNX Runtime (``None``: its default).
        atol: largest absolute logit difference accepted against eager.
        check_batch: batch size of the equality check.

    Raises:
        ConfigError: for an unknown backend, or when the exported path differs from eager by more than ``atol``.
    """
    try:
        backend = look_up_option(backend, INFERENCE_BACKENDS)
    except ValueError:
        raise ConfigError(f"inference backend {backend!r} is not supported; use one of {INFERENCE_BACKENDS}.") from None
    eager = _eval_copy(model).cpu()
    if backend == "eager":
        return eager
    runner: Callable[[torch.Tensor], torch.Tensor]
    if backend == "torchscript":
        runner = to_torchscript(eager)
    else:
        runner = OnnxRuntimeModel(to_onnx(eager, None, input_shape), num_threads=num_threads)
    example = torch.rand((check_batch, *(int(s) for s in input_shape)), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        difference = (runner(example) - eager(example)).abs().max().item()
    if not difference <= atol:
        raise ConfigError(
            f"{backend} inference differs from eager PyTorch by {difference:.3g} > {atol:g}; "
            "deploy with backend='eager' or report the exporter issue."
        )
    return runner
