"""The narrow channels-last CPU kernels give PyTorch's numbers: batch norm, layout changes, CBAM and a training step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from naslung.networks import build_loss, build_network
from naslung.networks.blocks import CBAMBlock
from naslung.networks.blocks.narrow_channels import (
    ChannelsLastBatchNorm3d,
    ChannelsLastCBAMBlock,
    channels_last_batch_norm,
    is_narrow_channels_last,
    narrow_channel_kernels,
    to_channels_first,
    to_channels_last,
    use_narrow_channel_kernels,
)

CL = torch.channels_last_3d

# [channels, spatial size, batch, momentum]; momentum None is the cumulative average; 3 channels fall back
BN_CASES = [[4, 32, 2, 0.1], [2, 32, 1, 0.1], [4, 32, 2, None], [3, 32, 2, 0.1], [4, 16, 8, 0.3]]


def _pair(channels: int, momentum: float | None) -> tuple[nn.BatchNorm3d, nn.BatchNorm3d]:
    torch.manual_seed(0)
    reference = nn.BatchNorm3d(channels, momentum=momentum)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.normal_()
    fast = use_narrow_channel_kernels(copy.deepcopy(reference))
    assert type(fast) is ChannelsLastBatchNorm3d
    return reference, fast


def _run(module: nn.Module, x0: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    x = x0.clone().requires_grad_()
    y = torch.relu(module(x))  # an in-place-free ReLU after it, as in the networks' units
    y.backward(grad)
    return [y.detach(), x.grad, module.weight.grad, module.bias.grad, module.running_mean, module.running_var]


@pytest.mark.parametrize("channels, size, batch, momentum", BN_CASES)
def test_batch_norm_matches_pytorch(channels: int, size: int, batch: int, momentum: float | None) -> None:
    reference, fast = _pair(channels, momentum)
    generator = torch.Generator().manual_seed(1)
    x0 = (3 * torch.randn(batch, channels, size, size, size, generator=generator) + 2).to(memory_format=CL)
    assert is_narrow_channels_last(x0)
    grad = torch.randn(x0.shape, generator=generator).to(memory_format=CL)
    for _ in range(2):  # the second step checks the running statistics' update from non-initial values
        expected, got = _run(reference, x0, grad), _run(fast, x0, grad)
        reference.zero_grad()
        fast.zero_grad()
    names = ["output", "input grad", "weight grad", "bias grad", "running mean", "running var"]
    for name, want, have in zip(names, expected, got, strict=True):
        scale = float(want.abs().max()) + 1.0
        assert float((want - have).abs().max()) / scale < 2e-5, name
    assert got[0].is_contiguous(memory_format=CL) and got[1].is_contiguous(memory_format=CL)
    assert int(fast.num_batches_tracked) == int(reference.num_batches_tracked) == 2


@pytest.mark.parametrize(
    "shape, layout, training",
    [[(2, 4, 32, 32, 32), torch.contiguous_format, True], [(2, 8, 32, 32, 32), CL, True], [(2, 4, 8, 8, 8), CL, True],
     [(2, 4, 32, 32, 32), CL, False]],
)  # fmt: skip
def test_batch_norm_falls_back_exactly(shape: tuple[int, ...], layout: torch.memory_format, training: bool) -> None:
    """Outside narrow channels-last training maps the subclass is ``nn.BatchNorm3d`` itself: bit-identical."""
    reference, fast = _pair(shape[1], 0.1)
    reference.train(training)
    fast.train(training)
    x = torch.randn(shape).to(memory_format=layout)
    assert torch.equal(reference(x), fast(x))
    assert torch.equal(reference.running_var, fast.running_var)


def test_swap_keeps_parameters_and_state_dict() -> None:
    network = build_network("[4,4,[4,4],[4,8],[8,8]]", head="angular")
    parameters = list(network.parameters())
    keys = list(network.state_dict())
    use_narrow_channel_kernels(network)
    assert all(a is b for a, b in zip(parameters, network.parameters(), strict=True))
    assert list(network.state_dict()) == keys
    assert sum(isinstance(m, ChannelsLastCBAMBlock) for m in network.modules()) == 4  # stages 2-5
    assert any(isinstance(m, ChannelsLastBatchNorm3d) for m in network.modules())
    assert not any(type(m) in (nn.BatchNorm3d, CBAMBlock) for m in network.modules())
    fresh = build_network("[4,4,[4,4],[4,8],[8,8]]", head="angular")
    fresh.load_state_dict(network.state_dict())  # a checkpoint loads into a network built without the kernels


def test_functional_rejects_other_layouts() -> None:
    x = torch.randn(2, 4, 32, 32, 32)
    with pytest.raises(ValueError, match="channels-last"):
        channels_last_batch_norm(x, torch.ones(4), torch.zeros(4))


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_layout_changes_are_exact_with_exact_gradients(channels: int) -> None:
    x = torch.randn(2, channels, 6, 5, 4, dtype=torch.float64).to(memory_format=CL).requires_grad_()
    first = to_channels_first(x)
    assert first.is_contiguous() and torch.equal(first, x)
    back = to_channels_last(first)
    assert back.is_contiguous(memory_format=CL) and not back.is_contiguous() and torch.equal(back, x)
    assert torch.autograd.gradcheck(to_channels_first, (x,))
    assert torch.autograd.gradcheck(to_channels_last, (x.detach().contiguous().requires_grad_(),))


def test_cbam_narrow_path_matches_plain_path() -> None:
    torch.manual_seed(0)
    block = use_narrow_channel_kernels(CBAMBlock(3, 4))
    assert type(block) is ChannelsLastCBAMBlock
    for parameter in block.parameters():
        nn.init.normal_(parameter, std=0.3)
    x0 = torch.randn(2, 4, 32, 32, 32)
    grad = torch.randn(x0.shape)
    outputs = []
    for layout in (torch.contiguous_format, CL):
        x = x0.clone(memory_format=layout).requires_grad_()
        y = block(x)
        y.backward(grad.to(memory_format=layout))
        outputs.append((y, x.grad, block.spatial_map, [p.grad.clone() for p in block.parameters()]))
        block.zero_grad()
    (y0, g0, m0, p0), (y1, g1, m1, p1) = outputs
    assert y1.is_contiguous(memory_format=CL) and g1.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(g1, g0)
    torch.testing.assert_close(m1, m0)
    for a, b in zip(p0, p1, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    scripted = torch.jit.script(block)  # the fast path stays out of TorchScript
    torch.testing.assert_close(scripted(x0), y0.detach())


def test_model1_training_step_matches_pytorch() -> None:
    """One A-Softmax Adam step of Model-1, channels-last, with and without the kernels: same loss and weights."""
    torch.manual_seed(0)
    reference = build_network("[4,4,[4,4],[4,8],[8,8]]", head="angular").to(memory_format=CL)
    fast = use_narrow_channel_kernels(copy.deepcopy(reference))
    x = torch.randn(4, 1, 32, 32, 32)
    y = torch.tensor([0, 1, 1, 0])
    losses = []
    for network in (reference, fast):
        loss_function = build_loss("asoftmax")
        optimizer = torch.optim.Adam(network.parameters(), 1e-3)
        loss = loss_function(network(x), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, a), b in zip(reference.state_dict().items(), fast.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_kernels_switch_off_within_the_context() -> None:
    x = torch.randn(2, 4, 32, 32, 32).to(memory_format=CL)
    assert is_narrow_channels_last(x)
    with narrow_channel_kernels(False):
        assert not is_narrow_channels_last(x)
    assert is_narrow_channels_last(x)
