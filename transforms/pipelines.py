"""Training and evaluation transform chains for stored 32³ nodule cubes, built from MONAI's own transforms."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from monai.data import NumpyReader
from monai.data.meta_obj import get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    RandFlipd,
    RandRotate90d,
    RandSpatialCropd,
    ResizeWithPadOrCropd,
    SpatialPadd,
)

__all__ = ["CUBE_SIZE", "PADDED_SIZE", "UntrackedCompose", "train_transforms", "eval_transforms"]

#: Edge of the network input cube in voxels (1 mm each); paper Sec. 4.1.3.
CUBE_SIZE = 32
#: The training cube is padded to this edge and randomly cropped back to :data:`CUBE_SIZE` (random translation of up
#: to ±2 voxels); paper Sec. 4.1.3.
PADDED_SIZE = 36


_untracked_lock = threading.Lock()
_untracked_depth = 0
_tracking_before = True


@contextmanager
def _meta_tracking_off() -> Iterator[None]:
    """Switch MONAI's (process-wide) MetaTensor tracking off inside the block; nested and threaded calls are safe."""
    global _untracked_depth, _tracking_before
    with _untracked_lock:
        if _untracked_depth == 0:
            _tracking_before = get_track_meta()
            set_track_meta(False)
        _untracked_depth += 1
    try:
        yield
    finally:
        with _untracked_lock:
            _untracked_depth -= 1
            if _untracked_depth == 0:
                set_track_meta(_tracking_before)


class UntrackedCompose(Compose):
    """MONAI ``Compose`` that runs its transforms on plain tensors, with MetaTensor tracking switched off.

    MONAI's spatial transforms wrap their output in a ``MetaTensor`` and record each operation whenever tracking is
    on (the default), which costs ~0.2-0.3 ms per transform on a 36³ cube, about 5 times the work itself: the
    random crop and three flips of :func:`train_transforms` took 1 ms per cube tracked and 0.2 ms untracked. The
    cubes carry no metadata anyone reads after loading, so the chains here run untracked by default. Tracking is
    process-wide in MONAI; it is off only while a call runs (``CacheDataset``'s caching threads included) and
    restored afterwards. Same arguments and results (as plain tensors) as ``Compose``.
    """

    def __call__(self, input_: Any, start: int = 0, end: int | None = None, threading: bool = False, lazy=None):
        with _meta_tracking_off():
            return super().__call__(input_, start=start, end=end, threading=threading, lazy=lazy)


def _loading(keys: Sequence[str], load: bool, allow_missing_keys: bool) -> list:
    steps: list = []
    if load:
        # Cubes on disk: .npy float32 (32, 32, 32) in [0, 1], index order (x, y, z).
        reader = NumpyReader()
        steps.append(
            LoadImaged(keys, reader=reader, image_only=True, dtype=np.float32, allow_missing_keys=allow_missing_keys)
        )
    steps.append(EnsureChannelFirstd(keys, channel_dim="no_channel", allow_missing_keys=allow_missing_keys))
    return steps


def _typing(keys: Sequence[str], label_key: str | None, track_meta: bool) -> list:
    steps: list = [EnsureTyped(keys, dtype=torch.float32, track_meta=track_meta, allow_missing_keys=True)]
    if label_key is not None:
        steps.append(EnsureTyped(label_key, dtype=torch.long, track_meta=False, allow_missing_keys=True))
    return steps


def train_transforms(
    keys: Sequence[str] = ("image",),
    label_key: str | None = "label",
    cube_size: int = CUBE_SIZE,
    padded_size: int = PADDED_SIZE,
    flip_prob: float = 0.5,
    rotate90_prob: float = 0.0,
    pad_value: float = 0.0,
    load: bool = True,
    track_meta: bool = False,
    allow_missing_keys: bool = False,
) -> Compose:
    """Augmenting chain for training: load, pad, random crop, random flips on each axis, random 90° rotations.

    Re-implements the NAS-Lung training augmentation (paper Sec. 4.1.3): the 32³ cube is padded to 36³, randomly
    cropped back to 32³ and flipped horizontally, vertically and along z (each axis independently here). Beyond the
    paper, ``rotate90_prob > 0`` adds random quarter turns in each of the three axis planes (MONAI's
    ``RandRotate90d``, k in {1, 2, 3}). On isotropic 1 mm cubes both are exact (no interpolation), and flips with
    quarter turns reach all 48 orientations of the cube; a nodule's malignancy does not depend on its orientation.

    Args:
        keys: keys of the cubes; each is a path to a .npy (X, Y, Z) float32 cube in [0, 1] when ``load`` is True,
            else an array of that shape.
        label_key: key of the class label (0 benign, 1 malignant) made an int64 tensor; ``None`` for no label.
        cube_size: output cube edge in voxels (paper: 32).
        padded_size: edge the cube is padded to before the random crop (paper: 36).
        flip_prob: probability of flipping each spatial axis.
        rotate90_prob: probability of a quarter turn (1-3 times 90°) in each axis plane; 0 (default) is the paper's
            augmentation.
        pad_value: value for padding, in the cube's units (0 = -1200 HU, the bottom of the HU window).
        load: read the cubes from .npy paths with ``NumpyReader``.
        track_meta: keep MetaTensors; ``False`` (default) runs the chain untracked (:class:`UntrackedCompose`) and
            yields plain tensors, for speed (a training step of Model-1 waits on data ~2% of its time instead of
            ~5.5%, ``benchmarks/train_step.py``) and cheap collation.
        allow_missing_keys: do not raise when a key is absent.

    Returns:
        ``Compose`` mapping ``{"image": path, "label": int}`` to ``{"image": (1, S, S, S) float32, "label": int64}``.
        Seed it with ``set_determinism(seed)`` or ``Compose.set_random_state(seed)``.
    """
    steps = _loading(keys, load, allow_missing_keys)
    steps += [
        SpatialPadd(keys, spatial_size=(padded_size,) * 3, value=pad_value, allow_missing_keys=allow_missing_keys),
        RandSpatialCropd(keys, roi_size=(cube_size,) * 3, random_size=False, allow_missing_keys=allow_missing_keys),
    ]
    steps += [
        RandFlipd(keys, prob=flip_prob, spatial_axis=axis, allow_missing_keys=allow_missing_keys) for axis in range(3)
    ]
    if rotate90_prob > 0:
        steps += [
            RandRotate90d(keys, prob=rotate90_prob, max_k=3, spatial_axes=plane, allow_missing_keys=allow_missing_keys)
            for plane in ((0, 1), (0, 2), (1, 2))
        ]
    steps += _typing(keys, label_key, track_meta)
    return Compose(steps) if track_meta else UntrackedCompose(steps)


def eval_transforms(
    keys: Sequence[str] = ("image",),
    label_key: str | None = "label",
    cube_size: int = CUBE_SIZE,
    pad_value: float = 0.0,
    load: bool = True,
    track_meta: bool = False,
    allow_missing_keys: bool = False,
) -> Compose:
    """Deterministic chain for validation/testing: load and take the centred ``cube_size``³ cube.

    Args:
        keys: keys of the cubes (.npy paths when ``load``, else (X, Y, Z) arrays).
        label_key: key of the class label made an int64 tensor; ``None`` for no label.
        cube_size: output cube edge in voxels (paper: 32); larger inputs are centre-cropped, smaller ones padded.
        pad_value: padding value in the cube's units.
        load: read the cubes from .npy paths with ``NumpyReader``.
        track_meta: keep MetaTensors; ``False`` (default) runs the chain untracked, see :func:`train_transforms`.
        allow_missing_keys: do not raise when a key is absent.

    Returns:
        ``Compose`` mapping ``{"image": path, "label": int}`` to ``{"image": (1, S, S, S) float32, "label": int64}``.
    """
    steps = _loading(keys, load, allow_missing_keys)
    steps.append(
        ResizeWithPadOrCropd(
            keys, spatial_size=(cube_size,) * 3, value=pad_value, allow_missing_keys=allow_missing_keys
        )
    )
    steps += _typing(keys, label_key, track_meta)
    return Compose(steps) if track_meta else UntrackedCompose(steps)
