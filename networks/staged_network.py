"""The five-stage skeleton that both network layouts share: argument checks, stage assembly, pooling, head."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.layers.factories import Pool
from monai.utils import look_up_option

from naslung.networks.blocks.cbam import SpatialMapRecorder
from naslung.networks.errors import ConfigError
from naslung.networks.heads import HEADS, classification_head
from naslung.networks.spec import ArchSpec

__all__ = ["STAGE_NAMES", "StagedCBAMNetwork"]

STAGE_NAMES = ("stage1", "stage2", "stage3", "stage4", "stage5")
"""Attribute names of the five stages; stages 2-5 end with CBAM (their ``cbam`` child) unless attention is off."""


class StagedCBAMNetwork(nn.Module):
    """NAS-Lung's general network (Jiang et al. 2021, Fig. 1) as a skeleton whose units each layout chooses.

    ``stage1``: conv unit; ``stage2``: conv unit ``conv2``, CBAM; stages 3-5: an optional opening (the authors'
    ``downsample``), residual blocks ``block1``, ``block2``, ..., CBAM (child ``cbam``, absent without attention);
    global average pooling (:meth:`features`); the head. Subclasses (:class:`~naslung.networks.CBAMResNet3D`,
    :class:`~naslung.networks.ReferenceConvRes3D`) call :meth:`_build_stages`, which creates modules in that order.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: input channels (1 for a CT cube).
        num_classes: K, the number of classes.
        arch: the spec, as :class:`ArchSpec`, its text or nested lists.
        attention: one of ``attention_options`` (``None`` means ``"none"``).
        head: one of :data:`~naslung.networks.heads.HEADS`.
        attention_options: the ``attention`` values the layout supports.

    Raises:
        ConfigError: for invalid sizes, spec or options; the message names the layout's class.
    """

    layout = "naslung"  # the layout's name in naslung.networks.LAYOUTS

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        arch: ArchSpec | str | Sequence[Any],
        attention: str | None,
        head: str,
        attention_options: Sequence[str],
    ) -> None:
        super().__init__()
        who = type(self).__name__
        if spatial_dims not in (1, 2, 3):
            raise ConfigError(f"{who}: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}.")
        if in_channels < 1 or num_classes < 1:
            raise ConfigError(f"{who}: in_channels and num_classes must be positive, got {in_channels}, {num_classes}.")
        self.arch = ArchSpec.coerce(arch)
        self.attention = self._option(attention, attention_options, "attention")
        self.head_type = self._option(head, HEADS, "head")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes

    def _option(self, value: Any, supported: Sequence[str], what: str) -> str:
        """Validate a string option with MONAI's ``look_up_option``; ``None`` is ``"none"``."""
        try:
            return look_up_option("none" if value is None else value, supported)
        except ValueError:
            raise ConfigError(
                f"{type(self).__name__}: {what} {value!r} is not supported in the {self.layout} layout; use one of "
                f"{tuple(supported)}."
            ) from None

    def _build_stages(
        self,
        conv_unit: Callable[[int, int], nn.Module],
        residual_block: Callable[[int, int, int, int], nn.Module],
        attention_block: Callable[[int], nn.Module],
        margin: int,
        stage_opening: Callable[[int], OrderedDict[str, nn.Module]] | None = None,
    ) -> None:
        """Create stages 1-5, the pooling and the head from the layout's parts: ``conv_unit(c_in, c_out)`` (stages 1-2),
        ``residual_block(index, c_in, c_out, kernel)`` (index from 0 in each stage), ``attention_block(channels)``
        (CBAM, not called without attention), the angular head's ``margin`` and ``stage_opening(channels)`` (named
        layers opening each of stages 3-5; none by default)."""

        def cbam(channels: int) -> OrderedDict[str, nn.Module]:
            return OrderedDict() if self.attention == "none" else OrderedDict(cbam=attention_block(channels))

        spec = self.arch
        self.stage1 = conv_unit(self.in_channels, spec.stage1)
        self.stage2 = nn.Sequential(OrderedDict(conv2=conv_unit(spec.stage1, spec.stage2), **cbam(spec.stage2)))
        channels = spec.stage2
        for name, blocks, kernels in zip(STAGE_NAMES[2:], spec.stages, spec.kernel_sizes, strict=True):
            layers: OrderedDict[str, nn.Module] = stage_opening(channels) if stage_opening else OrderedDict()
            for index, (out_channels, kernel) in enumerate(zip(blocks, kernels, strict=True)):
                layers[f"block{index + 1}"] = residual_block(index, channels, out_channels, kernel)
                channels = out_channels
            layers.update(cbam(channels))
            setattr(self, name, nn.Sequential(layers))
        self.pool = Pool[Pool.ADAPTIVEAVG, self.spatial_dims](1)
        self.head = classification_head(self.head_type, channels, self.num_classes, margin)
        self.feature_channels = channels

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, C^5_N) of ``x`` (B, in_channels, *spatial): stage 5's output, globally pooled,
        the head's input (for t-SNE, Fig. 6, and the Davies-Bouldin index, Table 4)."""
        x = self.stage5(self.stage4(self.stage3(self.stage2(self.stage1(x)))))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify ``x`` (B, in_channels, *spatial): (B, num_classes) logits in eval mode."""
        return self.head(self.features(x))

    def attention_maps(self) -> dict[str, torch.Tensor]:
        """The spatial attention map of each stage's CBAM from the last forward pass.

        Returns:
            ``{"stage2": (B, 1, 32, 32, 32), "stage3": (B, 1, 16, 16, 16), ...}`` for a 32^3 input, detached,
            values in (0, 1); empty without attention, before any forward pass, or with ``record_attention=False``.
            Call it on the eager module (a TorchScript copy records too, in each ``stageN.cbam.spatial_map``).
        """
        maps: dict[str, torch.Tensor] = {}
        for name in STAGE_NAMES[1:]:
            block = getattr(getattr(self, name), "cbam", None)
            if isinstance(block, SpatialMapRecorder) and block.spatial_map is not None:
                maps[name] = block.spatial_map
        return maps
