"""The NAS-Lung authors' trained weights (``ConvRes`` state_dicts) converted to :class:`ReferenceConvRes3D`'s keys.

Kept apart from the network so that bundles, which only run :class:`ReferenceConvRes3D`, do not ship it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from naslung.networks.errors import ConfigError
from naslung.networks.reference_convres import STAGES, ReferenceConvRes3D
from naslung.networks.spec import PAPER_MODEL_1, ArchSpec

__all__ = ["authors_key_map", "convert_authors_state_dict"]


_CONV_UNIT = {"0.weight": "conv.weight", "0.bias": "conv.bias"}
_NORM_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_CBAM_ENTRIES = {
    "ch_Linear1.weight": "channel_mlp.0.weight",
    "ch_Linear2.weight": "channel_mlp.1.weight",
    "sp_Conv.weight": "spatial_conv.weight",
}


def _unit_keys(authors: str, ours: str, bias: bool = True) -> dict[str, str]:
    """Keys of one authors' ``Sequential(conv, BN, ReLU)`` mapped to a MONAI ``Convolution`` (``conv``, ``adn.N``)."""
    keys = {f"{authors}.{a}": f"{ours}.{o}" for a, o in _CONV_UNIT.items() if bias or a != "0.bias"}
    keys.update({f"{authors}.1.{entry}": f"{ours}.adn.N.{entry}" for entry in _NORM_ENTRIES})
    return keys


def _cbam_keys(authors: str, ours: str) -> dict[str, str]:
    return {f"{authors}.{a}": f"{ours}.{o}" for a, o in _CBAM_ENTRIES.items()}


def authors_key_map(arch: ArchSpec | str | Sequence[Any] = PAPER_MODEL_1) -> dict[str, str]:
    """Every ``state_dict`` key of the authors' ``ConvRes`` for ``arch`` -> its key in :class:`ReferenceConvRes3D`.

    The authors' names: ``conv1``, ``conv2`` (``Sequential(conv, BN, ReLU)``, entries ``.0``/``.1``),
    ``first_cbam`` (``ch_Linear1``, ``ch_Linear2``, ``sp_Conv``), one flat ``layers`` list holding, per stage 3-5,
    the stride-2 unit, the residual blocks (``my_conv1``, ``my_conv2``, ``conv3``) and the CBAM layer, and ``fc``.
    Ours (with ``attention="channel_first"``, ``head="angular"``): ``stage1``, ``stage2.conv2``, ``stage2.cbam``,
    ``stageN.downsample``, ``stageN.block<i>.conv1/conv2/shortcut``, ``stageN.cbam``, ``head``.

    Args:
        arch: the spec the checkpoint was trained with (the authors' ``config`` is its stages 3-5).

    Returns:
        An ordered mapping, in the authors' ``state_dict`` order.
    """
    spec = ArchSpec.coerce(arch)
    keys = {**_unit_keys("conv1", "stage1"), **_unit_keys("conv2", "stage2.conv2")}
    keys.update(_cbam_keys("first_cbam", "stage2.cbam"))
    index = 0
    for stage, blocks in zip(STAGES, spec.stages, strict=True):
        keys.update(_unit_keys(f"layers.{index}", f"{stage}.downsample", bias=False))
        index += 1
        for block in range(1, len(blocks) + 1):
            for authors, ours in (("my_conv1", "conv1"), ("my_conv2", "conv2"), ("conv3", "shortcut")):
                keys.update(_unit_keys(f"layers.{index}.{authors}", f"{stage}.block{block}.{ours}"))
            index += 1
        keys.update(_cbam_keys(f"layers.{index}", f"{stage}.cbam"))
        index += 1
    keys["fc.weight"] = "head.weight"
    return keys


def convert_authors_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    arch: ArchSpec | str | Sequence[Any] = PAPER_MODEL_1,
    in_channels: int | None = None,
    num_classes: int | None = None,
    margin: int = 4,
) -> tuple[dict[str, torch.Tensor], ReferenceConvRes3D]:
    """Convert a ``state_dict`` of the authors' ``ConvRes`` into one of :class:`ReferenceConvRes3D`.

    Every key of :func:`authors_key_map` must be present with the shape the network of ``arch`` gives it, and no
    other key may be. Only ``num_batches_tracked`` of a batch norm may be missing (checkpoints of PyTorch < 0.4.1
    lack it; it does not enter an eval forward pass): it is set to 0. A ``module.`` prefix on every key
    (``nn.DataParallel``) is removed. ``fc.weight`` (F, K) is transposed to the angular head's (K, F).

    Args:
        state_dict: the authors' weights (names such as ``conv1.0.weight``, ``layers.3.ch_Linear1.weight``,
            ``fc.weight``).
        arch: the spec the weights were trained with.
        in_channels: input channels; ``None`` reads them from ``conv1.0.weight`` (the authors' 1).
        num_classes: classes K; ``None`` reads them from ``fc.weight`` (the authors' 2).
        margin: A-Softmax margin of the head (the authors' 4; it does not change eval logits).

    Returns:
        ``(converted, network)``: the converted ``state_dict`` (our keys, a new dict of the same tensors, cloned
        where transposed) and the network, built with ``head="angular"`` and the converted weights loaded,
        in eval mode.

    Raises:
        ConfigError: naming the key, for an unknown key, a missing key or a key whose shape does not fit ``arch``.
    """
    spec = ArchSpec.coerce(arch)
    weights = dict(state_dict)
    if weights and all(key.startswith("module.") for key in weights):
        weights = {key[len("module.") :]: value for key, value in weights.items()}
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise ConfigError(f"authors' weights: {key!r} is a {type(value).__name__}, not a tensor.")
    if in_channels is None:
        in_channels = int(weights["conv1.0.weight"].shape[1]) if "conv1.0.weight" in weights else 1
    if num_classes is None:
        fc_weight = weights.get("fc.weight")
        num_classes = int(fc_weight.shape[1]) if fc_weight is not None and fc_weight.ndim == 2 else 2
    network = ReferenceConvRes3D(
        spatial_dims=3, in_channels=in_channels, num_classes=num_classes, arch=spec, head="angular", margin=margin
    )
    expected = network.state_dict()
    mapping = authors_key_map(spec)
    unknown = sorted(set(weights) - set(mapping))
    if unknown:
        raise ConfigError(
            f"authors' weights: unknown key {unknown[0]!r}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f"; it is not in ConvRes for spec {spec}: check --arch (the authors' config is the spec's stages 3-5)."
        )
    converted: dict[str, torch.Tensor] = {}
    for authors, ours in mapping.items():
        target = expected[ours]
        if authors not in weights:
            if authors.endswith("num_batches_tracked"):
                converted[ours] = torch.zeros_like(target)
                continue
            raise ConfigError(
                f"authors' weights: missing key {authors!r} (our {ours!r}) for spec {spec}; check --arch "
                "and that the file holds the whole ConvRes state_dict."
            )
        value = weights[authors]
        if authors == "fc.weight":
            value = value.t().contiguous() if value.ndim == 2 else value
        if tuple(value.shape) != tuple(target.shape):
            shape = tuple(weights[authors].shape)
            wanted = tuple(reversed(target.shape)) if authors == "fc.weight" else tuple(target.shape)
            raise ConfigError(
                f"authors' weights: key {authors!r} has shape {shape}, spec {spec} needs {wanted}; check "
                "--arch (channels of each block) and the checkpoint."
            )
        converted[ours] = value.to(dtype=target.dtype)
    network.load_state_dict(converted, strict=True)
    return converted, network.eval()
