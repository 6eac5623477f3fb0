"""Network variants that ``recipe.py`` tries: each wraps a built :class:`~naslung.networks.CBAMResNet3D` and changes
what its classification head reads (or what its stem sees), leaving the network's own stages as they are.

Each class takes the network (``inner``) and keeps it as a submodule; a new head, where there is one, is a
:func:`~naslung.networks.heads.classification_head` of the network's own kind (A-Softmax or linear) for 2 classes.
Inputs are (B, C, 32, 32, 32) cubes of 1 mm voxels; outputs are those of the head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from descriptors import CubeDescriptors, centre_distance  # this folder's script, on sys.path

from naslung.networks.heads import classification_head

__all__ = ["centre_distance", "WithShells", "WithDescriptors", "WithMaxPool", "WithRadius"]


class WithShells(torch.nn.Module):
    """The network with stage 2's mean over ``k`` shells around the centre (2 voxels thick, the last one everything
    beyond; a learned radial profile) beside its pooled stage-5 features, into a wider head."""

    def __init__(self, inner: torch.nn.Module, k: int) -> None:
        super().__init__()
        self.inner = inner
        shell = (centre_distance() / 2).floor().clamp(max=k - 1).long().flatten()
        masks = F.one_hot(shell, k).float()
        self.register_buffer("masks", masks / masks.sum(0, keepdim=True))  # (32^3, k), columns sum to 1
        self.head = classification_head(inner.head_type, inner.feature_channels + inner.arch.stage2 * k, 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.inner
        s2 = n.stage2(n.stage1(x))
        g = torch.flatten(n.pool(n.stage5(n.stage4(n.stage3(s2)))), 1)
        prof = torch.einsum("bcn,nk->bck", s2.float().reshape(s2.shape[0], s2.shape[1], -1), self.masks)
        return self.head(torch.cat([g, prof.flatten(1)], 1))


class WithDescriptors(torch.nn.Module):
    """The network with the cube's fixed descriptors (:class:`descriptors.CubeDescriptors`, batch-normalised) beside
    its pooled stage-5 features."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.describe = CubeDescriptors()
        self.norm = torch.nn.BatchNorm1d(self.describe.n_features)
        width = inner.feature_channels + self.describe.n_features
        self.head = classification_head(inner.head_type, width, 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.inner.features(x), self.norm(self.describe(x))], 1))


class WithMaxPool(torch.nn.Module):
    """The network with stage 5's global maximum beside its global average, into a head twice as wide."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.head = classification_head(inner.head_type, 2 * inner.feature_channels, 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.inner
        s5 = n.stage5(n.stage4(n.stage3(n.stage2(n.stage1(x)))))
        return self.head(torch.cat([s5.mean((2, 3, 4)), s5.amax((2, 3, 4))], 1))


class WithRadius(torch.nn.Module):
    """The network with the centre-distance map (in half-widths) concatenated to its input, after augmentation; the
    network must be built with one more input channel."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.head = inner, inner.head
        self.register_buffer("radius", (centre_distance() / 16.0)[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xr = torch.cat([x, self.radius.expand(x.shape[0], 1, 32, 32, 32)], 1)
        return self.inner(xr.contiguous(memory_format=torch.channels_last_3d))
