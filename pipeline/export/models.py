"""A bundle's ``models/``: the shipped weights loaded into the network naslung builds, the ONNX graph checked against
PyTorch, and the CPU latency written into the metadata."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from naslung.bundles.runtime.onnx_predictor import OnnxPredictor
from naslung.networks import fixed_threads, measure_latency_ms
from naslung.networks.export import to_onnx
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.export.scripts import SCRIPTS_TARGET

__all__ = ["ONNX_TOLERANCE", "build_project_network", "load_state_dict_file", "export_onnx", "latency_ms"]


#: Largest accepted difference between ``models/model.onnx`` on ONNX Runtime and the PyTorch network at export
#: (logits of a classifier, relative to their size beyond 1; probabilities of an ensemble).
ONNX_TOLERANCE = 1e-4


_STATE_DICT_HINT = "a plain state_dict (the `best_model.pt` naslung train writes)"


def build_project_network(network_def: dict[str, Any], weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The member as naslung builds it, with its weights loaded (strict), in eval mode."""
    target = network_def["_target_"].replace(SCRIPTS_TARGET, "naslung.")
    kwargs = {k: v for k, v in network_def.items() if not k.startswith("_")}
    parser = ConfigParser({"net": {"_target_": target, **kwargs}})
    network = parser.get_parsed_content("net")
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"the weights do not fit the network {kwargs}: {err}") from err
    return network.eval()


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A plain ``state_dict`` read from ``path`` with ``weights_only=True``.

    Raises:
        DataError: the file cannot be read or is not a mapping of tensors.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several kinds for unreadable files
        raise DataError(f"cannot load the weights ({err}); expected {_STATE_DICT_HINT}", path=str(path)) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"not {_STATE_DICT_HINT}", path=str(path))
    return state


class _EnsembleGraph(torch.nn.Module):
    """The ensemble as one ONNX graph: ``x`` (B, 1, D, H, W) -> the members' mean class probabilities (B, 2) and
    each member's probability of malignancy (B, n), as ``EnsembleClassifier``'s ``forward`` and
    ``member_probabilities`` compute them."""

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.stack([torch.softmax(member(x), dim=1) for member in self.members], dim=1)
        return probabilities.mean(dim=1), probabilities[:, :, 1]


def export_onnx(networks: Sequence[torch.nn.Module], path: Path, ensemble: bool) -> OnnxPredictor:
    """Write ``models/model.onnx`` (atomically) and check it on ONNX Runtime against the PyTorch network(s).

    A classifier's graph returns the logits (B, 2); an ensemble's one graph returns ``probabilities`` (B, 2), the
    members' mean, and ``member_probabilities`` (B, n), which the ensemble's inferer reads.

    Returns:
        the bundle's :class:`~naslung.bundles.runtime.onnx_predictor.OnnxPredictor` of the file, one thread.

    Raises:
        ConfigError: the export fails, or ONNX Runtime differs from PyTorch by more than :data:`ONNX_TOLERANCE`.
    """
    model = _EnsembleGraph(networks).eval() if ensemble else networks[0]
    names = ("probabilities", "member_probabilities") if ensemble else ("logits",)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer warnings
            to_onnx(model, path, (1, 32, 32, 32), output_names=names)
    except Exception as err:  # noqa: BLE001 - the exporter raises many kinds
        raise ConfigError(f"ONNX export of the bundle's network to {path} failed: {err}") from err
    predictor = OnnxPredictor(path, num_threads=1)
    cubes = torch.rand((3, 1, 32, 32, 32), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(cubes)
        produced = predictor.outputs(cubes)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for name, reference in zip(names, expected, strict=True):
        difference = ((produced[name] - reference).abs() / reference.abs().clamp(min=1.0)).max().item()
        if not difference <= ONNX_TOLERANCE:
            raise ConfigError(
                f"{path}: ONNX Runtime's {name!r} differs from PyTorch's by {difference:.2e} > {ONNX_TOLERANCE:g}; "
                "report the exporter issue (configs/inference.json, PyTorch, is unaffected)"
            )
    return predictor


def latency_ms(networks: Sequence[torch.nn.Module]) -> float:
    """Median CPU latency in ms of running every network on one (1, 1, 32, 32, 32) cube, one thread."""
    example = torch.rand(1, 1, 32, 32, 32)

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        return [network(x) for network in networks]

    with fixed_threads(1):
        return measure_latency_ms(run, example, warmup=2, repeats=7)
