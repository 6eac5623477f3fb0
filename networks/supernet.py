"""The DNAS supernet over NAS-Lung's CBAM-3D residual space: per block a width, a kernel size and (optional blocks)
a skip, each chosen by straight-through Gumbel-Softmax; plus its per-operation latency table."""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from monai.networks.layers.utils import get_act_layer

from naslung.networks.blocks.cbam import CBAMBlock
from naslung.networks.blocks.residual import ResidualBlock
from naslung.networks.errors import ConfigError
from naslung.networks.gumbel import gumbel_softmax_st
from naslung.networks.initialisation import init_resnet_weights_
from naslung.networks.profile import fixed_threads, measure_latency_ms
from naslung.networks.spec import ArchSpec

__all__ = ["Decision", "SuperResidualBlock", "CBAMSupernet3D", "measure_latency_table"]

logger = logging.getLogger(__name__)

SKIP, KEEP = 0, 1
"""Option indices of a skip decision."""


@dataclass(frozen=True)
class Decision:
    """One architecture choice of the supernet.

    Attributes:
        name: ``"stage3.block2.width"``, ``"stage3.block2.kernel"`` or ``"stage3.block2.keep"``.
        stage: 3, 4 or 5.
        slot: 0-based block slot in the stage.
        kind: ``"width"``, ``"kernel"`` or ``"keep"``.
        options: the values chosen among (channels, kernel sizes, or ``(False, True)`` for keep).
    """

    name: str
    stage: int
    slot: int
    kind: str
    options: tuple[Any, ...]


class SuperResidualBlock(nn.Module):
    """A residual block of NAS-Lung (Fig. 2) holding every width and kernel size of one supernet slot.

    One pair of convolutions per kernel size, each ``max(widths)`` channels wide; a width ``w`` keeps the first
    ``w`` channels of the hidden and output activations (channel masking, FBNetV2, Wan et al. 2020), so all widths
    share weights and one forward pass serves every width. The shortcut is the identity when the sampled input and
    output widths are equal and the stride is 1, else a 1x1 projection, exactly as :class:`ResidualBlock` builds
    the derived block.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: channels of the (masked) input tensor.
        widths: candidate output widths, increasing.
        kernel_sizes: candidate kernel sizes (odd).
        stride: stride of the first convolution and of the projection.
        act: activation, a name or ``(name, kwargs)``.
        norm: normalisation, a name or ``(name, kwargs)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        widths: Sequence[int],
        kernel_sizes: Sequence[int],
        stride: int,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.stride = int(stride)
        width = max(self.widths)
        self.conv1 = nn.ModuleList(
            Convolution(spatial_dims, in_channels, width, strides=stride, kernel_size=k, act=act, norm=norm, bias=False)
            for k in self.kernel_sizes
        )
        self.conv2 = nn.ModuleList(
            Convolution(spatial_dims, width, width, kernel_size=k, act=None, norm=norm, bias=False)
            for k in self.kernel_sizes
        )
        self.projection = Convolution(
            spatial_dims, in_channels, width, strides=stride, kernel_size=1, act=None, norm=norm, bias=False
        )
        self.act = get_act_layer(act)
        masks = torch.zeros(len(self.widths), width)
        for index, w in enumerate(self.widths):
            masks[index, :w] = 1.0
        self.register_buffer("masks", masks, persistent=False)

    def forward(
        self, x: torch.Tensor, in_width: int, width_gate: torch.Tensor, kernel_gate: torch.Tensor
    ) -> torch.Tensor:
        """Apply the sampled block.

        Args:
            x: (B, in_channels, *spatial), channels beyond ``in_width`` zero.
            in_width: the sampled width of ``x``.
            width_gate: (len(widths),) one-hot (straight-through) width sample.
            kernel_gate: (len(kernel_sizes),) one-hot (straight-through) kernel sample.

        Returns:
            (B, max(widths), *spatial / stride), channels beyond the sampled width zero.
        """
        width_index = int(width_gate.argmax())
        kernel_index = int(kernel_gate.argmax())
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mask = (width_gate @ self.masks).view(shape)  # forward: the sampled mask; gradient: every width's
        hidden = self.conv1[kernel_index](x) * mask
        out = self.conv2[kernel_index](hidden) * kernel_gate[kernel_index]
        same = self.stride == 1 and in_width == self.widths[width_index] and x.shape[1] == out.shape[1]
        return self.act(out + (x if same else self.projection(x))) * mask


class CBAMSupernet3D(nn.Module):
    """Supernet of NAS-Lung's general network (Fig. 1) for differentiable search with Gumbel-Softmax.

    Stages 1-2 are the fixed stem (as in the POP search space); each of stages 3-5 has ``max_blocks[s]`` slots of
    :class:`SuperResidualBlock` and ends with CBAM, then global pooling and a linear head. Every slot has a width
    decision (over ``widths``) and a kernel decision (over ``kernel_sizes``); slots after the first
    ``min_blocks[s]`` of a stage also have a keep/skip decision (FBNet's skip operation). The architecture
    parameters are one logit vector per decision, initialised as ``1e-3 * N(0, 1)`` as in CovidNet3D's
    ``OnehotMutator``. In training mode each forward pass samples every decision with
    :func:`~naslung.networks.gumbel.gumbel_softmax_st` at :attr:`temperature` and runs the sampled sub-network,
    scaled by the straight-through gates so the logits get gradients (GDAS-style: only the sampled kernel and
    skip branch are computed; all widths come from one masked pass). In eval mode, or when :meth:`fix` was
    called, the arg-max (or fixed) choices are used.

    A derived network of depth ``d`` in a stage is the stage's first ``d`` slots (see :meth:`spec_of`).

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        num_classes: K.
        stem: channels of stages 1 and 2.
        widths: candidate block widths, increasing.
        kernel_sizes: candidate kernel sizes of residual blocks (odd).
        max_blocks: slots of stages 3, 4, 5.
        min_blocks: blocks that every derived network has in stages 3, 4, 5 (>= 1).
        attention: CBAM order (``"channel_first"``, ``"spatial_first"``) or ``"none"``.
        act: activation.
        norm: normalisation.

    Shapes:
        input: (B, in_channels, *spatial); output: (B, num_classes) logits.

    Raises:
        ConfigError: for empty or invalid choices.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        stem: Sequence[int] = (4, 4),
        widths: Sequence[int] = (4, 8, 16, 32, 64, 128),
        kernel_sizes: Sequence[int] = (3, 5),
        max_blocks: Sequence[int] = (5, 5, 5),
        min_blocks: Sequence[int] = (1, 1, 1),
        attention: str = "channel_first",
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.max_blocks = tuple(int(b) for b in max_blocks)
        self.min_blocks = tuple(int(b) for b in min_blocks)
        self.stem = (int(stem[0]), int(stem[1]))
        if not self.widths or list(self.widths) != sorted(set(self.widths)) or self.widths[0] < 1:
            raise ConfigError(f"supernet widths {tuple(widths)!r} must be distinct positive integers, increasing.")
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ConfigError(f"supernet kernel sizes {tuple(kernel_sizes)!r} must be odd positive integers.")
        if len(self.max_blocks) != 3 or len(self.min_blocks) != 3:
            raise ConfigError("supernet max_blocks and min_blocks need one entry per stage 3, 4, 5.")
        if any(not 1 <= lo <= hi for lo, hi in zip(self.min_blocks, self.max_blocks, strict=True)):
            raise ConfigError(
                f"supernet needs 1 <= min_blocks <= max_blocks per stage, got {self.min_blocks}, {self.max_blocks}."
            )
        self.spatial_dims = spatial_dims
        self.temperature = 1.0
        self._fixed: dict[str, int] | None = None
        width = max(self.widths)

        def cbam(channels: int) -> OrderedDict[str, nn.Module]:
            if attention in (None, "none"):
                return OrderedDict()
            return OrderedDict(cbam=CBAMBlock(spatial_dims, channels, order=attention, act=act))

        self.stage1 = Convolution(
            spatial_dims, in_channels, self.stem[0], kernel_size=3, act=act, norm=norm, bias=False
        )
        conv2 = Convolution(spatial_dims, self.stem[0], self.stem[1], kernel_size=3, act=act, norm=norm, bias=False)
        self.stage2 = nn.Sequential(OrderedDict(conv2=conv2, **cbam(self.stem[1])))
        self.slots = nn.ModuleList()
        self.stage_attention = nn.ModuleList()
        self.decisions: list[Decision] = []
        logits: list[nn.Parameter] = []
        channels = self.stem[1]
        for stage, count in zip((3, 4, 5), self.max_blocks, strict=True):
            blocks = nn.ModuleList()
            for slot in range(count):
                blocks.append(
                    SuperResidualBlock(
                        spatial_dims, channels, self.widths, self.kernel_sizes, 2 if slot == 0 else 1, act, norm
                    )
                )
                channels = width
                prefix = f"stage{stage}.block{slot + 1}"
                kinds = [("width", self.widths), ("kernel", self.kernel_sizes)]
                if slot >= self.min_blocks[stage - 3]:
                    kinds.append(("keep", (False, True)))
                for kind, options in kinds:
                    self.decisions.append(Decision(f"{prefix}.{kind}", stage, slot, kind, tuple(options)))
                    logits.append(nn.Parameter(1e-3 * torch.randn(len(options))))
            self.slots.append(blocks)
            self.stage_attention.append(nn.Sequential(cbam(width)))
        self.arch_logits = nn.ParameterList(logits)
        self._index = {d.name: i for i, d in enumerate(self.decisions)}
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.head = nn.Linear(width, num_classes)
        init_resnet_weights_(self, spatial_dims)

    # -------------------------------------------------------------------------------------------- parameters
    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits (one vector per :attr:`decisions` entry)."""
        return list(self.arch_logits)

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (convolutions, norms, CBAM, head)."""
        arch = {id(p) for p in self.arch_logits}
        return [p for p in self.parameters() if id(p) not in arch]

    def probabilities(self) -> dict[str, list[float]]:
        """``{decision name: softmax of its logits}`` (plain floats, for the journal)."""
        return {d.name: torch.softmax(self.arch_logits[i].detach(), -1).tolist() for i, d in enumerate(self.decisions)}

    # ----------------------------------------------------------------------------------------------- choices
    def fix(self, choices: Mapping[str, int] | None) -> None:
        """Use fixed option indices (``{decision name: index}``, missing ones arg-max) instead of sampling;
        ``None`` returns to sampling in training mode."""
        if choices is not None:
            unknown = sorted(set(choices) - set(self._index))
            if unknown:
                raise ConfigError(f"unknown supernet decisions {unknown}; known: {sorted(self._index)[:6]} ...")
        self._fixed = None if choices is None else {k: int(v) for k, v in choices.items()}

    def argmax_choices(self) -> dict[str, int]:
        """The most probable option of every decision."""
        return {d.name: int(self.arch_logits[i].argmax()) for i, d in enumerate(self.decisions)}

    def _gate(self, name: str) -> torch.Tensor:
        logits = self.arch_logits[self._index[name]]
        if self.training and self._fixed is None:
            return gumbel_softmax_st(logits, self.temperature)
        index = self._fixed.get(name, int(logits.argmax())) if self._fixed is not None else int(logits.argmax())
        gate = torch.zeros_like(logits)
        gate[index] = 1.0
        return gate

    def spec_of(self, choices: Mapping[str, int]) -> ArchSpec:
        """The :class:`ArchSpec` of a choice of options (skipped slots dropped; kernels recorded per block)."""
        stages: list[list[int]] = []
        kernels: list[list[int]] = []
        for stage, count in zip((3, 4, 5), self.max_blocks, strict=True):
            widths, sizes = [], []
            for slot in range(count):
                prefix = f"stage{stage}.block{slot + 1}"
                if f"{prefix}.keep" in self._index and choices.get(f"{prefix}.keep", KEEP) == SKIP:
                    continue
                widths.append(self.widths[choices[f"{prefix}.width"]])
                sizes.append(self.kernel_sizes[choices[f"{prefix}.kernel"]])
            stages.append(widths)
            kernels.append(sizes)
        return ArchSpec(*self.stem, *stages, kernels=tuple(tuple(k) for k in kernels))  # type: ignore[arg-type]

    # ----------------------------------------------------------------------------------------------- forward
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, max(widths)) pooled features of the sampled (training) or arg-max/fixed (eval) sub-network."""
        x = self.stage2(self.stage1(x))
        in_width = self.stem[1]
        for stage, blocks, attention in zip((3, 4, 5), self.slots, self.stage_attention, strict=True):
            for slot, block in enumerate(blocks):
                prefix = f"stage{stage}.block{slot + 1}"
                keep = self._gate(f"{prefix}.keep") if f"{prefix}.keep" in self._index else None
                if keep is not None and int(keep.argmax()) == SKIP:
                    x = x * keep[SKIP]
                    continue
                width_gate = self._gate(f"{prefix}.width")
                x = block(x, in_width, width_gate, self._gate(f"{prefix}.kernel"))
                if keep is not None:
                    x = x * keep[KEEP]
                in_width = self.widths[int(width_gate.argmax())]
            x = attention(x)
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_classes) logits of ``x`` (B, in_channels, *spatial)."""
        return self.head(self.features(x))

    # ------------------------------------------------------------------------------------------------ latency
    def expected_latency(self, table: Mapping[str, float]) -> torch.Tensor:
        """Expected latency in ms of the residual blocks under the current architecture probabilities.

        ``sum over slots of P(keep) * sum_{i,o,k} q_in(i) p_width(o) p_kernel(k) L(i, o, k)`` with ``L`` from
        :func:`measure_latency_table` and ``q_in`` the distribution of the slot's input width, propagated through
        skips (``q_out = P(keep) p_width + P(skip) q_in``). Differentiable in the architecture logits (softmax
        probabilities, not samples, for a low-variance penalty).

        Args:
            table: ``{op key: ms}`` as returned by :func:`measure_latency_table` for this supernet.

        Raises:
            ConfigError: when the table lacks an operation of this supernet.
        """
        device = self.arch_logits[0].device
        q_in = torch.ones(1, device=device)
        in_options: tuple[int, ...] = (self.stem[1],)
        total = torch.zeros((), device=device)
        for stage, count in zip((3, 4, 5), self.max_blocks, strict=True):
            for slot in range(count):
                prefix = f"stage{stage}.block{slot + 1}"
                p_width = torch.softmax(self.arch_logits[self._index[f"{prefix}.width"]], -1)
                p_kernel = torch.softmax(self.arch_logits[self._index[f"{prefix}.kernel"]], -1)
                costs = torch.tensor(
                    [
                        [[table_entry(table, stage, slot, i, o, k) for k in self.kernel_sizes] for o in self.widths]
                        for i in in_options
                    ],
                    device=device,
                )
                cost = torch.einsum("i,o,k,iok->", q_in, p_width, p_kernel, costs)
                if f"{prefix}.keep" in self._index:
                    p_keep = torch.softmax(self.arch_logits[self._index[f"{prefix}.keep"]], -1)[KEEP]
                    total = total + p_keep * cost
                    q_in = p_keep * p_width + (1 - p_keep) * q_in
                else:
                    total = total + cost
                    q_in = p_width
                in_options = self.widths
        return total

    def latency_ops(self, input_size: int) -> list[tuple[str, int, int, int, int, int]]:
        """Every distinct operation of the latency table: ``(key, in_channels, out_channels, kernel, stride,
        input spatial size)`` for an input cube of edge ``input_size`` (stages 3, 4, 5 see size/1, /2, /4)."""
        ops: dict[str, tuple[str, int, int, int, int, int]] = {}
        in_options: tuple[int, ...] = (self.stem[1],)
        size = input_size
        for stage, count in zip((3, 4, 5), self.max_blocks, strict=True):
            for slot in range(count):
                stride = 2 if slot == 0 else 1
                for i, o, k in itertools.product(in_options, self.widths, self.kernel_sizes):
                    key = op_key(stage, slot, i, o, k)
                    ops.setdefault(key, (key, i, o, k, stride, size))
                if slot == 0:
                    size = -(-size // 2)
                in_options = self.widths
        return list(ops.values())


def op_key(stage: int, slot: int, in_channels: int, out_channels: int, kernel: int) -> str:
    """Key of one operation in the latency table: the first block of a stage (stride 2) differs from the rest."""
    return f"stage{stage}.{'first' if slot == 0 else 'other'}.{in_channels}-{out_channels}.k{kernel}"


def table_entry(table: Mapping[str, float], stage: int, slot: int, in_ch: int, out_ch: int, kernel: int) -> float:
    """Latency (ms) of one operation, or a :class:`ConfigError` naming the missing key."""
    key = op_key(stage, slot, in_ch, out_ch, kernel)
    if key not in table:
        raise ConfigError(f"latency table has no entry {key!r}; delete the table file to measure it again.")
    return float(table[key])


def measure_latency_table(
    supernet: CBAMSupernet3D,
    input_size: int = 32,
    device: str | torch.device = "cpu",
    warmup: int = 2,
    repeats: int = 5,
    num_threads: int | None = 1,
    known: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Per-operation latency table of a supernet (FBNet's lookup table), in ms per nodule at batch 1.

    Each operation is a standalone :class:`ResidualBlock` with the given input/output channels, kernel and stride,
    timed by :func:`naslung.networks.profile.measure_latency_ms` on a random (1, in_channels, s, s, s) input of
    its stage's spatial size ``s``, with CPU threads fixed to ``num_threads``.

    Args:
        supernet: the supernet whose operations to time.
        input_size: edge of the nodule cube (32).
        device: where to time.
        warmup: untimed runs per operation.
        repeats: timed runs per operation (median).
        num_threads: CPU threads while timing.
        known: entries measured before (kept as they are).

    Returns:
        ``{op key: ms}`` (see :func:`op_key`).
    """
    table = {str(k): float(v) for k, v in (known or {}).items()}
    generator = torch.Generator().manual_seed(0)
    with fixed_threads(num_threads):
        for key, in_ch, out_ch, kernel, stride, size in supernet.latency_ops(input_size):
            if key in table:
                continue
            block = ResidualBlock(supernet.spatial_dims, in_ch, out_ch, stride=stride, kernel_size=kernel)
            block = block.to(device).eval()
            example = torch.rand((1, in_ch) + (size,) * supernet.spatial_dims, generator=generator).to(device)
            table[key] = measure_latency_ms(block, example, warmup=warmup, repeats=repeats)
            logger.debug("latency %s: %.4f ms", key, table[key])
    return table
