"""Import the NAS-Lung authors' trained weights into a run folder, as a network of the reference layout.

The step reads a ``state_dict`` with the authors' key names (or, when allowed, their pickled ``ckpt.t7``),
converts it with :func:`naslung.networks.convert_authors_state_dict` and writes a fold folder that the rest of the
pipeline reads like one ``naslung train`` wrote: ``checkpoints/best_model.pt`` (a plain ``state_dict``),
``config.json`` (the training config with ``network_def#layout = "reference"``) and ``reference_import.json``
(where the weights came from). ``naslung export-bundle --run RUN --member SLUG`` then ships it when the folder is
``RUN/train/SLUG/all``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from naslung.networks import ArchSpec, convert_authors_state_dict, count_parameters
from naslung.pipeline.atomic_io import atomic_path, write_json
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.training.step import load_train_config

__all__ = ["ImportedReference", "load_authors_weights", "import_reference"]

logger = logging.getLogger(__name__)

_PICKLE_HINT = (
    "a NAS-Lung ckpt.t7 holds a pickled module under 'net'; if you trust the file, pass --allow-pickle "
    "(allow_pickle=True), which unpickles it and so runs code from it"
)


@dataclass(frozen=True)
class ImportedReference:
    """What :func:`import_reference` wrote.

    Args:
        fold_dir: the fold folder written.
        weights: its ``checkpoints/best_model.pt``.
        spec: the architecture spec, in the paper's notation.
        parameters: number of parameters of the network.
        source_format: ``"state_dict"`` or ``"pickled checkpoint"``.
        source_sha256: SHA-256 of the input file.
    """

    fold_dir: Path
    weights: Path
    spec: str
    parameters: int
    source_format: str
    source_sha256: str


def _state_dict_of(content: Any, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors inside a loaded file: a plain ``state_dict``, ``{'net': module or state_dict}`` or a module."""
    kind = "state_dict"
    if isinstance(content, Mapping) and "net" in content:
        content, kind = content["net"], "pickled checkpoint"
    if isinstance(content, torch.nn.Module):
        return dict(content.state_dict()), "pickled checkpoint"
    if isinstance(content, Mapping) and all(isinstance(k, str) for k in content):
        return dict(content), kind
    raise DataError(
        f"holds a {type(content).__name__}, not the authors' weights: expected a state_dict (names such as "
        "'conv1.0.weight') or a NAS-Lung ckpt.t7 ({'net': ConvRes, ...})",
        path=str(path),
    )


def load_authors_weights(path: str | os.PathLike, allow_pickle: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """Read the authors' weights from ``path``.

    The file is first read with ``torch.load(weights_only=True)``, which loads tensors and plain containers only.
    A NAS-Lung ``ckpt.t7`` (``{'net': ConvRes module, 'acc': ..., 'epoch': ...}``) needs full unpickling, which
    runs code from the file: it is done only with ``allow_pickle``, and needs the authors' code (the folder that
    holds ``models/cnn_res.py``) importable, e.g. on ``PYTHONPATH``.

    Args:
        path: a ``.pt``/``.pth`` state_dict or a ``ckpt.t7``.
        allow_pickle: allow full unpickling of a checkpoint that is not a plain state_dict.

    Returns:
        ``(state_dict, source_format)`` with the authors' key names; ``source_format`` is ``"state_dict"`` or
        ``"pickled checkpoint"``.

    Raises:
        DataError: the file is missing or unreadable, needs unpickling without ``allow_pickle``, names classes
            that cannot be imported, or holds something else than the authors' weights.
    """
    source = Path(path)
    if not source.is_file():
        raise DataError("file not found; give the authors' weights (a state_dict or ckpt.t7)", path=str(source))
    try:
        return _state_dict_of(torch.load(source, map_location="cpu", weights_only=True), source)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - torch raises several kinds for files it will not load safely
        if not allow_pickle:
            raise DataError(
                f"not a plain state_dict ({type(err).__name__}); {_PICKLE_HINT}", path=str(source)
            ) from None
    logger.warning("unpickling %s with weights_only=False: this runs code from the file", source)
    try:
        content = torch.load(source, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as err:
        raise DataError(
            f"unpickling needs the classes the checkpoint names ({err}); put the NAS-Lung code (the folder that "
            "holds models/cnn_res.py) on PYTHONPATH, or export its state_dict there with "
            "torch.save(torch.load('ckpt.t7')['net'].state_dict(), 'weights.pt')",
            path=str(source),
        ) from err
    except Exception as err:  # noqa: BLE001
        raise DataError(f"cannot unpickle ({err})", path=str(source)) from err
    state, _ = _state_dict_of(content, source)
    return state, "pickled checkpoint"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_reference(
    weights: str | os.PathLike,
    arch: ArchSpec | str,
    out: str | os.PathLike,
    allow_pickle: bool = False,
    margin: int = 4,
) -> ImportedReference:
    """Convert the authors' weights of ``arch`` into a fold folder ``out`` of the reference layout.

    Writes ``out/checkpoints/best_model.pt`` (the converted plain ``state_dict``, written to a temporary file and
    renamed), ``out/config.json`` (naslung's training config with ``arch``, ``attention = "channel_first"``,
    ``loss_name = "asoftmax"``, ``margin`` and ``network_def#layout = "reference"``) and
    ``out/reference_import.json`` (source file, its SHA-256, format, spec, parameters).

    Args:
        weights: the authors' weights, see :func:`load_authors_weights`.
        arch: the spec they were trained with, e.g. ``"[4,4,[4,4],[4,8],[8,8]]"`` (the authors' ``config`` is its
            stages 3-5; their code fixes stages 1-2 at 4 channels).
        out: the fold folder to write, e.g. ``RUN/train/<slug>/all``.
        allow_pickle: allow unpickling a ``ckpt.t7`` (runs code from the file).
        margin: A-Softmax margin recorded in the config (the authors' 4).

    Returns:
        what was written.

    Raises:
        ConfigError: a bad spec, or a key of the weights unknown, missing or mis-shaped for it (named).
        DataError: the weights cannot be read (see :func:`load_authors_weights`).
    """
    spec = ArchSpec.coerce(arch)
    source = Path(weights)
    state, source_format = load_authors_weights(source, allow_pickle=allow_pickle)
    try:
        converted, network = convert_authors_state_dict(state, arch=spec, margin=margin)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    fold_dir = Path(out)
    overrides = {
        "arch": str(spec),
        "attention": "channel_first",
        "loss_name": "asoftmax",
        "margin": margin,
        "network_def#layout": "reference",
    }
    if network.in_channels != 1 or network.num_classes != 2:
        overrides["network_def#in_channels"] = network.in_channels
        overrides["network_def#num_classes"] = network.num_classes
    config = load_train_config(None, overrides)
    weights_path = fold_dir / "checkpoints" / "best_model.pt"
    with atomic_path(weights_path) as tmp:
        torch.save({key: value.detach().clone().contiguous() for key, value in converted.items()}, tmp)
    write_json(fold_dir / "config.json", config)
    result = ImportedReference(
        fold_dir=fold_dir,
        weights=weights_path,
        spec=str(spec),
        parameters=count_parameters(network),
        source_format=source_format,
        source_sha256=_sha256(source),
    )
    write_json(
        fold_dir / "reference_import.json",
        {
            "source": str(source.resolve()),
            "source_sha256": result.source_sha256,
            "source_format": source_format,
            "spec": result.spec,
            "layout": "reference",
            "parameters": result.parameters,
        },
    )
    logger.info("imported %s (%s, %d parameters) into %s", source, result.spec, result.parameters, fold_dir)
    return result
