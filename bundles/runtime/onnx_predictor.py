"""A bundle's ONNX Runtime path: the exported graph (``models/model.onnx``) as a module the evaluator can run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from naslung.networks.errors import ConfigError

__all__ = ["ONNXRUNTIME_INSTALL", "import_onnxruntime", "OnnxPredictor"]

#: How to get the package ``configs/inference_onnx.json`` needs.
ONNXRUNTIME_INSTALL = "pip install onnxruntime"


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module.

    Raises:
        ModuleNotFoundError: naming the package and the command that installs it.
    """
    try:
        import onnxruntime
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"configs/inference_onnx.json runs the network on ONNX Runtime, but the package 'onnxruntime' is not "
            f"installed: install it with `{ONNXRUNTIME_INSTALL}`, or run configs/inference.json (PyTorch) instead",
            name="onnxruntime",
        ) from err
    return onnxruntime


class OnnxPredictor(nn.Module):
    """The bundle's network as an ``onnxruntime.InferenceSession``, callable like the PyTorch module it replaces.

    ``forward`` returns the graph's first output: the logits (B, 2) of a single network, or the members' mean class
    probabilities (B, 2) of an ensemble graph. :meth:`member_probabilities` returns the graph's
    ``member_probabilities`` output (B, n_members), so the ensemble's ``MemberProbabilityInferer`` works unchanged.
    The module has no parameters (no weights to load; ``.to(device)`` and ``.eval()`` are no-ops); inputs on any
    device are run on the session's providers and the outputs come back on the input's device.

    Args:
        model_path: the ``.onnx`` file (one input (B, 1, 32, 32, 32) float32, dynamic batch).
        num_threads: ONNX Runtime intra-op threads; ``None`` leaves its default (the machine's physical cores).
        providers: execution providers, in order of preference (default CPU).

    Raises:
        ModuleNotFoundError: onnxruntime is not installed (the message says how to install it).
        ConfigError: ``model_path`` is not a file.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        num_threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        super().__init__()
        ort = import_onnxruntime()
        path = Path(model_path)
        if not path.is_file():
            raise ConfigError(
                f"{path}: no ONNX model there; export the bundle again with `naslung export-bundle`, or run "
                "configs/inference.json (PyTorch) instead"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        self.model_path = str(path)
        self.session = ort.InferenceSession(self.model_path, sess_options=options, providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [output.name for output in self.session.get_outputs()]

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every output of the graph by name for ``x`` (B, 1, D, H, W), on ``x``'s device."""
        cubes = np.ascontiguousarray(x.detach().float().cpu().numpy())
        values = self.session.run(self.output_names, {self.input_name: cubes})
        return {
            name: torch.from_numpy(value).to(x.device) for name, value in zip(self.output_names, values, strict=True)
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's first output for ``x`` (B, 1, D, H, W): logits, or an ensemble's mean probabilities, (B, 2)."""
        return self.outputs(x)[self.output_names[0]]

    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Each ensemble member's probability of malignancy for ``x`` (B, 1, D, H, W): (B, n_members).

        Raises:
            ConfigError: the graph has no ``member_probabilities`` output (it is not an ensemble's).
        """
        if "member_probabilities" not in self.output_names:
            raise ConfigError(
                f"{self.model_path} has outputs {self.output_names}, not an ensemble's 'member_probabilities'; use "
                "the classifier's inferer (SimpleInferer) with it"
            )
        return self.outputs(x)["member_probabilities"]

    def extra_repr(self) -> str:
        return f"model_path={self.model_path!r}, providers={self.session.get_providers()}"
