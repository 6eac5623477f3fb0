"""The one network factory: NAS-Lung candidates by spec and MONAI's 3D baselines by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch.nn as nn
from monai.networks.nets import DenseNet121, SEResNet50, resnet18, resnet50

from naslung.networks.cbam_resnet import CBAMResNet3D
from naslung.networks.spec import PAPER_MODEL_1, ArchSpec
from naslung.pipeline.errors import ConfigError

__all__ = ["NETWORKS", "build_network"]


def _cbam_resnet3d(arch: ArchSpec | str | Sequence[Any] = PAPER_MODEL_1, **kwargs: Any) -> nn.Module:
    return CBAMResNet3D(arch=arch, **kwargs)


def _densenet121(spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2, **kwargs: Any) -> nn.Module:
    return DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes, **kwargs)


def _resnet18(spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2, **kwargs: Any) -> nn.Module:
    return resnet18(spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=num_classes, **kwargs)


def _resnet50(spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2, **kwargs: Any) -> nn.Module:
    return resnet50(spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=num_classes, **kwargs)


def _seresnet50(spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2, **kwargs: Any) -> nn.Module:
    return SEResNet50(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, **kwargs)


NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "cbam_resnet3d": _cbam_resnet3d,
    "densenet121": _densenet121,
    "resnet18": _resnet18,
    "resnet50": _resnet50,
    "seresnet50": _seresnet50,
}
"""Registered names. Every builder takes MONAI's ``spatial_dims, in_channels, num_classes`` (defaults 3, 1, 2)
plus its own keyword arguments; ``cbam_resnet3d`` takes ``arch`` (default Table 5's Model-1) and the options of
:class:`CBAMResNet3D`."""


_CANDIDATE_ONLY = ("arch", "attention", "head", "margin", "cbam_reduction", "spatial_kernel_size", "record_attention")
"""Options of :class:`CBAMResNet3D` that MONAI's baselines do not take."""


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "").replace("-", "")


def build_network(name_or_spec: str | ArchSpec | Sequence[Any], **kwargs: Any) -> nn.Module:
    """Build a network from a registered name or an architecture spec.

    Args:
        name_or_spec: a name of :data:`NETWORKS` (case, ``_`` and ``-`` ignored: ``"DenseNet121"`` works), or a
            NAS-Lung spec as :class:`ArchSpec`, its text ``"[4,4,[4,4],[4,8],[8,8]]"`` or nested lists, which
            builds :class:`CBAMResNet3D`.
        kwargs: passed to the builder, e.g. ``spatial_dims=3, in_channels=1, num_classes=2``, or
            ``attention="none", head="angular"`` for a spec.

    Returns:
        The network (in training mode, freshly initialised).

    Raises:
        ConfigError: for an unknown name, a malformed spec, or a candidate-only option (``attention``, ``head``,
            ``margin``, ...) given to a MONAI baseline.

    Example::

        build_network("[4,4,[4,4],[4,8],[8,8]]", head="angular")
        build_network("resnet18", spatial_dims=3, in_channels=1, num_classes=2)
    """
    if isinstance(name_or_spec, ArchSpec) or (isinstance(name_or_spec, Sequence) and not isinstance(name_or_spec, str)):
        return CBAMResNet3D(arch=name_or_spec, **kwargs)
    if not isinstance(name_or_spec, str):
        raise ConfigError(f"build_network: expected a network name or an architecture spec, got {name_or_spec!r}.")
    if name_or_spec.lstrip().startswith("["):
        return CBAMResNet3D(arch=ArchSpec.parse(name_or_spec), **kwargs)
    builders = {_key(name): builder for name, builder in NETWORKS.items()}
    builder = builders.get(_key(name_or_spec))
    if builder is None:
        raise ConfigError(
            f"unknown network {name_or_spec!r}; use one of {sorted(NETWORKS)} or an architecture spec such as "
            f"'[4,4,[4,4],[4,8],[8,8]]'."
        )
    if builder is not _cbam_resnet3d:
        misplaced = sorted(set(kwargs) & set(_CANDIDATE_ONLY))
        if misplaced:
            raise ConfigError(
                f"network {name_or_spec!r} does not take {misplaced}: these options belong to NAS-Lung candidates "
                "(architecture specs); leave them out of the config for MONAI baselines (and train those with the "
                "'softmax' loss, as they have no angular head)."
            )
    return builder(**kwargs)
