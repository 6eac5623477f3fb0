"""CPU kernels for narrow channels-last feature maps (NAS-Lung's 4-channel 32³ stages): batch normalisation over a
tiled view whose innermost axis is wide enough to vectorise, and exact layout changes done as batched matrix
products. PyTorch's own CPU kernels vectorise channels-last maps across channels, so with 4 channels most of each
vector stays empty."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from naslung.networks.blocks.cbam import CBAMBlock

__all__ = [
    "TILE_WIDTH",
    "ChannelsLastBatchNorm3d",
    "ChannelsLastCBAMBlock",
    "channels_last_batch_norm",
    "is_narrow_channels_last",
    "narrow_channel_kernels",
    "to_channels_first",
    "to_channels_last",
    "use_narrow_channel_kernels",
]

TILE_WIDTH = 64
"""Innermost width (elements) of the tiled view: ``TILE_WIDTH // C`` consecutive voxels of a channels-last map side by
side. 64 float32 are four AVX-512 vectors; channel counts that do not divide it use the plain kernel."""


NARROW_CHANNELS = 4
"""Widest channel count the kernels here take over from PyTorch's: measured per (16, C, 32³) map, the tiled batch
norm is 2.4x (C=4) to 6x (C=2) faster, and even at C=8 (1.0x); the layout change pays off up to C=4."""

MIN_VOXELS = 32768
"""Fewest voxels (B·D·H·W) for which the kernels here are used: below it (e.g. (16, 4, 8³)) PyTorch's are faster."""


_enabled = [True]


@contextmanager
def narrow_channel_kernels(enabled: bool) -> Iterator[None]:
    """Within the block, use this module's kernels (``True``, the default outside it) or PyTorch's everywhere
    (``False``: :func:`is_narrow_channels_last` is false), e.g. to time or debug one against the other."""
    previous = _enabled[0]
    _enabled[0] = bool(enabled)
    try:
        yield
    finally:
        _enabled[0] = previous


def is_narrow_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a CPU float32 (B, C, D, H, W) map, channels-last with 2 <= C <= :data:`NARROW_CHANNELS` and at
    least :data:`MIN_VOXELS` voxels: the maps this module's kernels are faster on (never inside
    ``narrow_channel_kernels(False)``)."""
    return (
        _enabled[0]
        and x.dim() == 5
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and 2 <= x.shape[1] <= NARROW_CHANNELS
        and x.numel() // x.shape[1] >= MIN_VOXELS
        and x.is_contiguous(memory_format=torch.channels_last_3d)
        and not x.is_contiguous()
    )


class _ToChannelsFirst(torch.autograd.Function):
    """Channels-last (B, C, D, H, W) to a contiguous copy, as ``I_C · Xᵀ`` per sample (exact: every product is by 1
    or 0); the gradient goes back the other way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _channels_first(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _channels_last(grad.contiguous())


class _ToChannelsLast(torch.autograd.Function):
    """Contiguous (B, C, D, H, W) to a channels-last copy, as ``Xᵀ · I_C`` per sample; the gradient the other way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _channels_last(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _channels_first(grad.contiguous(memory_format=torch.channels_last_3d))


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    batch, channels = x.shape[:2]
    rows = x.permute(0, 2, 3, 4, 1).reshape(batch, -1, channels)  # (B, N, C), a view of channels-last memory
    eye = torch.eye(channels, dtype=x.dtype, device=x.device)
    return torch.matmul(eye, rows.transpose(1, 2)).view(x.shape)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    batch, channels = x.shape[:2]
    eye = torch.eye(channels, dtype=x.dtype, device=x.device)
    rows = torch.matmul(x.reshape(batch, channels, -1).transpose(1, 2), eye)  # (B, N, C)
    return rows.view(batch, *x.shape[2:], channels).permute(0, 4, 1, 2, 3)


def to_channels_first(x: torch.Tensor) -> torch.Tensor:
    """The contiguous (channels-first) copy of a channels-last map ``x`` (B, C, D, H, W); differentiable, values
    exactly equal. About twice as fast as ``x.contiguous()`` for 2-8 channels (a batched GEMM against I_C)."""
    return _ToChannelsFirst.apply(x)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """The channels-last copy of a contiguous map ``x`` (B, C, D, H, W); differentiable, values exactly equal."""
    return _ToChannelsLast.apply(x)


def _tiles(x: torch.Tensor) -> int:
    """How many voxels a row of the tiled view of ``x`` (B, C, D, H, W) holds, or 0 when the view does not apply."""
    channels = x.shape[1]
    if channels >= TILE_WIDTH or TILE_WIDTH % channels:
        return 0
    repeat = TILE_WIDTH // channels
    return repeat if (x.numel() // channels) % repeat == 0 else 0


def _tiled(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` (B, C, D, H, W), channels-last contiguous, as a (B·D·H·W·C / width, width) view (no copy)."""
    return x.permute(0, 2, 3, 4, 1).reshape(-1, width)


class _ChannelsLastBatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm on the tiled view: per-channel sums are column sums folded ``repeat`` times, and
    every per-voxel step is one broadcast over a ``TILE_WIDTH``-wide row. The backward uses the standard identity
    ``dx = w·σ⁻¹·(dy - mean(dy) - x̂·mean(dy·x̂))`` written as ``dy·k1 + x·k2 + k3`` with per-channel constants."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, repeat: int, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        channels = x.shape[1]
        width = channels * repeat
        count = x.numel() // channels
        flat = _tiled(x, width)
        mean = flat.sum(0).view(repeat, channels).sum(0).div_(count)
        y = torch.empty_like(x, memory_format=torch.channels_last_3d)  # not a view, so in-place ReLU may follow
        centred = torch.sub(flat, mean.repeat(repeat), out=_tiled(y, width))
        var = (centred * centred).sum(0).view(repeat, channels).sum(0).div_(count)
        invstd = torch.rsqrt(var + eps)
        centred.mul_((weight * invstd).repeat(repeat)).add_(bias.repeat(repeat))
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.mark_non_differentiable(mean, var)
        ctx.repeat = repeat
        return y, mean, var

    @staticmethod
    def backward(  # type: ignore[override]
        ctx, grad_y: torch.Tensor, _grad_mean: torch.Tensor, _grad_var: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        repeat = ctx.repeat
        channels = x.shape[1]
        width = channels * repeat
        count = x.numel() // channels
        grad_y = grad_y.contiguous(memory_format=torch.channels_last_3d)
        flat_x, flat_dy = _tiled(x, width), _tiled(grad_y, width)
        sum_dy = flat_dy.sum(0).view(repeat, channels).sum(0)
        sum_dy_x = (flat_dy * flat_x).sum(0).view(repeat, channels).sum(0)
        sum_dy_xhat = (sum_dy_x - mean * sum_dy) * invstd
        k1 = weight * invstd
        k2 = -k1 * invstd * sum_dy_xhat / count
        k3 = -k1 * sum_dy / count - mean * k2
        grad_x = torch.empty_like(x, memory_format=torch.channels_last_3d)
        torch.addcmul(k3.repeat(repeat), flat_x, k2.repeat(repeat), out=_tiled(grad_x, width))
        _tiled(grad_x, width).addcmul_(flat_dy, k1.repeat(repeat))
        return grad_x, sum_dy_xhat, sum_dy, None, None


def channels_last_batch_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-normalise ``x`` (B, C, D, H, W), channels-last contiguous, with its own statistics (training mode).

    Args:
        x: the feature map; C must divide :data:`TILE_WIDTH` and B·D·H·W must be a multiple of ``TILE_WIDTH // C``.
        weight: γ, (C,). bias: β, (C,). eps: added to the variance.

    Returns:
        ``(y, mean, var)``: the normalised map (B, C, D, H, W), channels-last; the batch mean and biased variance, (C,)
        each, detached from the graph's gradient (for the running statistics).

    Raises:
        ValueError: when the tiled view does not apply to ``x``'s shape or layout.
    """
    repeat = _tiles(x) if x.dim() == 5 else 0
    if not repeat or not x.is_contiguous(memory_format=torch.channels_last_3d):
        raise ValueError(
            f"channels_last_batch_norm: needs a channels-last (B, C, D, H, W) tensor with C dividing {TILE_WIDTH}, "
            f"got shape {tuple(x.shape)}, strides {x.stride()}."
        )
    return _ChannelsLastBatchNormFunction.apply(x, weight, bias, repeat, eps)


class ChannelsLastBatchNorm3d(nn.BatchNorm3d):
    """``nn.BatchNorm3d`` whose training step runs :func:`channels_last_batch_norm` on narrow channels-last CPU maps.

    PyTorch's CPU kernel vectorises channels-last batch norm across channels, so with NAS-Lung's 4-32 channels it
    leaves most of each vector empty: at (16, 4, 32³) one norm's forward and backward take ~5x the tiled view's
    time (``benchmarks/train_step.py``). Outputs, gradients, running statistics and the ``state_dict`` are those of
    ``nn.BatchNorm3d`` up to float32 rounding (``tests/networks/test_narrow_channels.py``). Everything
    else (evaluation, contiguous input, wide or odd channel counts, CUDA, other dtypes, no affine parameters or no
    running statistics) is ``nn.BatchNorm3d.forward``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (B, C, D, H, W); same shape and layout out."""
        if not (
            self.training and self.affine and self.track_running_stats and is_narrow_channels_last(x) and _tiles(x)
        ):
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        y, mean, var = channels_last_batch_norm(x, self.weight, self.bias, self.eps)
        count = x.numel() // x.shape[1]
        with torch.no_grad():
            self.running_mean.lerp_(mean, momentum)
            self.running_var.lerp_(var * (count / max(count - 1, 1)), momentum)
        return y


class ChannelsLastCBAMBlock(CBAMBlock):
    """:class:`~naslung.networks.blocks.CBAMBlock` that refines a narrow channels-last CPU map channels-first.

    Channels-last with 4 channels, every pooling and broadcast of CBAM runs along a 4-wide innermost axis; channels
    first, along contiguous voxels. Between two exact layout changes (:func:`to_channels_first`,
    :func:`to_channels_last`) stage 2's (16, 4, 32³) block runs forward and backward about 1.3x faster here; same
    values, and the output keeps the input's memory format. Other maps, and TorchScript copies, take
    ``CBAMBlock.forward``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Refine ``x`` (B, C, *spatial); same shape and memory format out."""
        if torch.jit.is_scripting():
            return self._refine(x)
        return self._forward_eager(x)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` outside TorchScript: channels-first for a narrow channels-last map."""
        if is_narrow_channels_last(x):
            return to_channels_last(self._refine(to_channels_first(x)))
        return self._refine(x)


def use_narrow_channel_kernels(network: nn.Module) -> nn.Module:
    """Give ``network``'s batch norms and CBAM blocks this module's kernels, in place; return it.

    Every ``nn.BatchNorm3d`` becomes a :class:`ChannelsLastBatchNorm3d` and every
    :class:`~naslung.networks.blocks.CBAMBlock` a :class:`ChannelsLastCBAMBlock`: only the class changes.
    Parameters and buffers stay the same objects, so optimisers, checkpoints and ``state_dict`` keys are unaffected,
    and a checkpoint loads into a network built without the kernels (as bundles build theirs). Use it on a network
    that trains channels-last on CPU (the training config's ``channels_last``); elsewhere both subclasses behave as
    their parents.
    """
    for module in network.modules():
        if type(module) is nn.BatchNorm3d:
            module.__class__ = ChannelsLastBatchNorm3d
        elif type(module) is CBAMBlock:
            module.__class__ = ChannelsLastCBAMBlock
    return network
