"""The one network factory: NAS-Lung candidates by spec, and 3D baselines (MONAI's nets, MC3-18) by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch.nn as nn
from monai.networks.nets import DenseNet121, SEResNet50, resnet18, resnet50, resnet101

from naslung.networks.cbam_resnet import CBAMResNet3D
from naslung.networks.errors import ConfigError
from naslung.networks.heads import classification_head
from naslung.networks.mc3 import mc3_18
from naslung.networks.reference_convres import ReferenceConvRes3D
from naslung.networks.spec import PAPER_MODEL_1, ArchSpec

__all__ = ["LAYOUTS", "NETWORKS", "BASELINES", "build_network", "registered_name"]


def _with_head(network: nn.Module, attribute: str, head: str, margin: int) -> nn.Module:
    """Give a MONAI network the head ``head``: keep its final ``nn.Linear`` at ``attribute`` (a dotted module name)
    for ``"linear"``, or replace it by an :class:`AngularLinear` of the same sizes for ``"angular"`` (A-Softmax)."""
    parent_name, _, name = attribute.rpartition(".")
    parent = network.get_submodule(parent_name) if parent_name else network
    linear = getattr(parent, name)
    if head != "linear":
        setattr(parent, name, classification_head(head, linear.in_features, linear.out_features, margin))
    return network


LAYOUTS: dict[str, type[nn.Module]] = {"naslung": CBAMResNet3D, "reference": ReferenceConvRes3D}
"""``layout`` values of NAS-Lung candidates: ``"naslung"`` (default, :class:`CBAMResNet3D`: downsampling folded into
the first residual block, identity shortcuts where shapes allow) or ``"reference"`` (:class:`ReferenceConvRes3D`,
the authors' ``ConvRes`` layer for layer, whose weights ``naslung import-reference`` converts)."""


def _layout(layout: str | None) -> str:
    """Validate a ``layout`` option (``None`` is the default ``"naslung"``)."""
    if layout is None:
        return "naslung"
    if layout not in LAYOUTS:
        raise ConfigError(f"network layout {layout!r} is not supported; use one of {tuple(LAYOUTS)}.")
    return layout


def _cbam_resnet3d(
    arch: ArchSpec | str | Sequence[Any] = PAPER_MODEL_1, layout: str | None = "naslung", **kwargs: Any
) -> nn.Module:
    return LAYOUTS[_layout(layout)](arch=arch, **kwargs)


def _monai_baseline(
    monai_builder: Callable[..., nn.Module], in_arg: str, out_arg: str, head_attribute: str
) -> Callable[..., nn.Module]:
    """A factory builder around one of MONAI's 3D classifiers.

    Args:
        monai_builder: MONAI's class or function (``DenseNet121``, ``resnet18``, ``SEResNet50``, ...).
        in_arg: its name for the input channels (``in_channels`` or ``n_input_channels``).
        out_arg: its name for the number of classes (``out_channels`` or ``num_classes``).
        head_attribute: dotted name of its final ``nn.Linear``, which ``head="angular"`` replaces.
    """

    def build(
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        head: str = "linear",
        margin: int = 4,
        **kwargs: Any,
    ) -> nn.Module:
        network = monai_builder(spatial_dims=spatial_dims, **{in_arg: in_channels, out_arg: num_classes}, **kwargs)
        return _with_head(network, head_attribute, head, margin)

    return build


NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "cbam_resnet3d": _cbam_resnet3d,
    "densenet121": _monai_baseline(DenseNet121, "in_channels", "out_channels", "class_layers.out"),
    "mc3_18": mc3_18,
    "resnet18": _monai_baseline(resnet18, "n_input_channels", "num_classes", "fc"),
    "resnet50": _monai_baseline(resnet50, "n_input_channels", "num_classes", "fc"),
    "resnet101": _monai_baseline(resnet101, "n_input_channels", "num_classes", "fc"),
    "seresnet50": _monai_baseline(SEResNet50, "in_channels", "num_classes", "last_linear"),
}
"""Registered names. Every builder takes MONAI's ``spatial_dims, in_channels, num_classes`` (defaults 3, 1, 2), a
``head`` (``"linear"``, or ``"angular"`` for A-Softmax, :class:`AngularLinear`) with its ``margin``, and its own
keyword arguments (e.g. ``widen_factor`` of the ResNets and MC3, ``init_features`` of DenseNet121).
``cbam_resnet3d`` takes ``arch`` (default Table 5's Model-1) and the options of :class:`CBAMResNet3D`; the others
are the baselines (:data:`BASELINES`): MONAI's 3D DenseNet121, ResNet-18/50/101 and SE-ResNet50, and MC3-18
(:class:`naslung.networks.mc3.MC3`), CovidNet3D's baselines being ResNet3D-101, DenseNet3D-121 and MC3_18."""

BASELINES: tuple[str, ...] = tuple(name for name in NETWORKS if name != "cbam_resnet3d")
"""The registered networks that are not NAS-Lung candidates: they have no CBAM, so ``attention`` must be
``"none"`` for them."""


_CANDIDATE_ONLY = ("arch", "cbam_reduction", "spatial_kernel_size", "record_attention")
"""Options of :class:`CBAMResNet3D` that the baselines do not take (``attention`` they take as ``"none"`` only)."""


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "").replace("-", "")


def registered_name(name: str) -> str:
    """The :data:`NETWORKS` key of a network name, ignoring case, ``_`` and ``-`` (``"ResNet-18"`` -> ``"resnet18"``).

    Raises:
        ConfigError: when no registered network has that name.
    """
    names = {_key(registered): registered for registered in NETWORKS}
    found = names.get(_key(name)) if isinstance(name, str) else None
    if found is None:
        raise ConfigError(
            f"unknown network {name!r}; use one of {sorted(NETWORKS)} or an architecture spec such as "
            "'[4,4,[4,4],[4,8],[8,8]]'."
        )
    return found


def build_network(name_or_spec: str | ArchSpec | Sequence[Any], **kwargs: Any) -> nn.Module:
    """Build a network from a registered name or an architecture spec.

    Every network takes ``spatial_dims, in_channels, num_classes``, ``head`` and ``margin``, so the training config
    (``network_def`` of ``train.json``) builds any of them with the same arguments and A-Softmax works for all.
    ``attention`` configures CBAM: the baselines have none and accept only ``attention="none"`` (``None``).

    Args:
        name_or_spec: a name of :data:`NETWORKS` (see :func:`registered_name`: ``"DenseNet121"`` works), or a
            NAS-Lung spec as :class:`ArchSpec`, its text ``"[4,4,[4,4],[4,8],[8,8]]"`` or nested lists, which
            builds :class:`CBAMResNet3D`, or with ``layout="reference"`` :class:`ReferenceConvRes3D` (see
            :data:`LAYOUTS`).
        kwargs: passed to the builder, e.g. ``spatial_dims=3, in_channels=1, num_classes=2``, ``head="angular",
            margin=4``, or ``attention="spatial_first"`` or ``layout="reference"`` for a spec.

    Returns:
        The network (in training mode, freshly initialised).

    Raises:
        ConfigError: for an unknown name, a malformed spec, an unknown layout, an unsupported head, a CBAM option
            other than ``attention="none"`` or a layout other than ``"naslung"`` given to a baseline, or a
            candidate-only option (``arch``, ``cbam_reduction``, ...) given to a baseline.

    Example::

        build_network("[4,4,[4,4],[4,8],[8,8]]", head="angular")
        build_network("densenet121", head="angular", margin=4, attention="none")
    """
    if isinstance(name_or_spec, ArchSpec) or (isinstance(name_or_spec, Sequence) and not isinstance(name_or_spec, str)):
        return _cbam_resnet3d(arch=name_or_spec, **kwargs)
    if not isinstance(name_or_spec, str):
        raise ConfigError(f"build_network: expected a network name or an architecture spec, got {name_or_spec!r}.")
    if name_or_spec.lstrip().startswith("["):
        return _cbam_resnet3d(arch=ArchSpec.parse(name_or_spec), **kwargs)
    name = registered_name(name_or_spec)
    if name in BASELINES:
        misplaced = sorted(set(kwargs) & set(_CANDIDATE_ONLY))
        if misplaced:
            raise ConfigError(
                f"network {name!r} does not take {misplaced}: these options belong to NAS-Lung candidates "
                "(architecture specs); leave them out of the config for the baselines."
            )
        if _layout(kwargs.pop("layout", None)) != "naslung":
            raise ConfigError(
                f"network {name!r} has no reference layout: layout 'reference' is for NAS-Lung specs (the authors' "
                "ConvRes); leave layout out of the config (or 'naslung') for the baselines."
            )
        attention = kwargs.pop("attention", None)
        if attention not in (None, "none"):
            raise ConfigError(
                f"network {name!r} has no CBAM attention, so attention must be 'none', got {attention!r}; "
                f"`naslung train --network {name}` sets it (or --set attention=none)."
            )
    return NETWORKS[name](**kwargs)
