"""Fixed radiomic descriptors of a nodule cube, for ``recipe.py --descriptors 1`` (an experiment, not the pipeline).

The hand-made cube features of ``benchmarks/signal_probe.py`` (a logistic regression on them scores 0.920 AUC over
the 10 folds against the networks' ~0.89) are numpy/scipy code: connected components, medians, marching cubes. This
module computes torch analogues that need no labels and no search, from the cube alone, so that a network's head can
read them beside its pooled features: the question is whether a fixed, low-variance summary of the cube lifts what
the networks learn from ~800 training nodules.
"""

from __future__ import annotations

import torch

__all__ = ["CubeDescriptors", "centre_distance"]

HU_LOW, HU_HIGH = -1200.0, 600.0  # the cubes' window: unit 0 -> -1200 HU, 1 -> 600 HU
THRESHOLDS_HU = (-650.0, -300.0, 250.0)  # above lung (blob), solid tissue, calcium
BALL_RADII_MM = (3.0, 6.0, 10.0)


def centre_distance(size: int = 32) -> torch.Tensor:
    """(size, size, size) distance of each voxel from the cube's centre, (size - 1) / 2 on each axis, in mm."""
    axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2.0
    return (axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2).sqrt()


class CubeDescriptors(torch.nn.Module):
    """Rotation- and flip-invariant summaries of a centred cube around its centre, in 1 mm shells.

    Per shell k = floor(distance from the centre in mm), k = 0..shells-1 (the last shell holds everything further
    out): the mean and standard deviation of the unit intensity and the mean gradient magnitude (unit/mm, central
    differences); per ball radius and HU threshold: the share of the ball's voxels above the threshold.

    Args:
        size: edge of the cube in voxels (1 mm).
        shells: number of shells.

    Shapes: input (B, 1, size, size, size) in [0, 1]; output (B, 3 * shells + 9), float32.
    """

    def __init__(self, size: int = 32, shells: int = 16) -> None:
        super().__init__()
        r = centre_distance(size).flatten()
        shell = torch.nn.functional.one_hot(r.floor().clamp(max=shells - 1).long(), shells).float()
        self.register_buffer("shell_mean", shell / shell.sum(0, keepdim=True))  # (size^3, shells)
        balls = torch.stack([(r < radius).float() for radius in BALL_RADII_MM], 1)
        self.register_buffer("ball_mean", balls / balls.sum(0, keepdim=True))  # (size^3, 3)
        units = [(hu - HU_LOW) / (HU_HIGH - HU_LOW) for hu in THRESHOLDS_HU]
        self.register_buffer("thresholds", torch.tensor(units))
        self.n_features = 3 * shells + len(BALL_RADII_MM) * len(THRESHOLDS_HU)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x[:, 0].float().contiguous()  # (B, D, H, W)
        b = u.shape[0]
        flat = u.reshape(b, -1)
        mean = flat @ self.shell_mean
        std = ((flat * flat) @ self.shell_mean - mean * mean).clamp_min(0.0).sqrt()
        padded = torch.nn.functional.pad(u[:, None], (1, 1, 1, 1, 1, 1), mode="replicate")[:, 0]
        gz = (padded[:, 2:, 1:-1, 1:-1] - padded[:, :-2, 1:-1, 1:-1]) / 2.0
        gy = (padded[:, 1:-1, 2:, 1:-1] - padded[:, 1:-1, :-2, 1:-1]) / 2.0
        gx = (padded[:, 1:-1, 1:-1, 2:] - padded[:, 1:-1, 1:-1, :-2]) / 2.0
        grad = (gz * gz + gy * gy + gx * gx).sqrt().reshape(b, -1) @ self.shell_mean
        above = (flat[:, :, None] > self.thresholds).float()  # (B, size^3, 3)
        fractions = torch.einsum("bnt,nk->bkt", above, self.ball_mean).flatten(1)
        return torch.cat([mean, std, grad, fractions], 1)
