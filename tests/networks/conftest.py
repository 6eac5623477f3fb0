"""Fixtures of the networks tests: trained-looking batch-norm statistics and a fixed seed."""

from __future__ import annotations

import pytest
import torch


def _randomise_norms(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every batch norm non-trivial running statistics and affine weights, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return model


@pytest.fixture
def randomise_norms():
    """The function ``randomise_norms(model, seed=0) -> model``."""
    return _randomise_norms


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
