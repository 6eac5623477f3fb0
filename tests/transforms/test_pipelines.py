"""train_transforms / eval_transforms: shapes, label type, determinism, crops of the padded cube, flips."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.utils import set_determinism

from naslung.transforms import eval_transforms, train_transforms


@pytest.fixture
def cube_files(tmp_path):
    rng = np.random.default_rng(3)
    cubes = [rng.random((32, 32, 32), dtype=np.float32) for _ in range(4)]
    paths = []
    for i, cube in enumerate(cubes):
        paths.append(str(tmp_path / f"cube{i}.npy"))
        np.save(paths[-1], cube)
    return paths, cubes


# [transform kwargs, input shape, expected output shape]
TEST_CASES_SHAPES = [
    [train_transforms, {}, (32, 32, 32), (1, 32, 32, 32)],
    [train_transforms, {"cube_size": 24, "padded_size": 28}, (24, 24, 24), (1, 24, 24, 24)],
    [train_transforms, {"cube_size": 16, "padded_size": 20}, (32, 32, 32), (1, 16, 16, 16)],
    [eval_transforms, {}, (32, 32, 32), (1, 32, 32, 32)],
    [eval_transforms, {}, (36, 36, 36), (1, 32, 32, 32)],
    [eval_transforms, {"cube_size": 20}, (16, 24, 20), (1, 20, 20, 20)],
]


@pytest.mark.parametrize("factory, kwargs, input_shape, expected_shape", TEST_CASES_SHAPES)
def test_shapes_and_types(factory, kwargs, input_shape, expected_shape):
    transform = factory(load=False, **kwargs)
    out = transform({"image": np.random.default_rng(0).random(input_shape, dtype=np.float32), "label": 1})
    assert tuple(out["image"].shape) == expected_shape
    assert out["image"].dtype == torch.float32
    assert out["label"].dtype == torch.long and int(out["label"]) == 1


def test_loads_npy_cubes(cube_files):
    paths, cubes = cube_files
    out = eval_transforms()({"image": paths[0], "label": 0})
    np.testing.assert_array_equal(out["image"][0].numpy(), cubes[0])
    out = train_transforms()({"image": paths[1], "label": 1})
    assert tuple(out["image"].shape) == (1, 32, 32, 32)


def test_eval_centre_crops_larger_cubes():
    big = np.random.default_rng(1).random((36, 36, 36), dtype=np.float32)
    out = eval_transforms(load=False, label_key=None)({"image": big})
    np.testing.assert_array_equal(out["image"][0].numpy(), big[2:34, 2:34, 2:34])


def _matching_crops(output: np.ndarray, padded: np.ndarray, size: int) -> list[tuple]:
    """All (offset, flipped axes) for which output == flip(padded[offset : offset + size])."""
    found = []
    margin = padded.shape[0] - size
    for offset in itertools.product(range(margin + 1), repeat=3):
        crop = padded[tuple(slice(o, o + size) for o in offset)]
        for flips in itertools.product((False, True), repeat=3):
            axes = tuple(a for a, f in enumerate(flips) if f)
            if np.array_equal(output, np.flip(crop, axes) if axes else crop):
                found.append((offset, axes))
    return found


def test_augmented_cube_is_a_flipped_crop_of_the_padded_cube():
    cube = np.random.default_rng(4).random((16, 16, 16), dtype=np.float32) + 1.0
    padded = np.pad(cube, 2, constant_values=0.0)
    transform = train_transforms(load=False, label_key=None, cube_size=16, padded_size=20)
    transform.set_random_state(seed=7)
    seen_offsets, seen_flips = set(), set()
    for _ in range(12):
        out = transform({"image": cube})["image"][0].numpy()
        matches = _matching_crops(out, padded, 16)
        assert len(matches) == 1
        seen_offsets.add(matches[0][0])
        seen_flips.add(matches[0][1])
    assert len(seen_offsets) > 1 and len(seen_flips) > 1  # really random


@pytest.mark.parametrize("flip_prob, expected", [(0.0, lambda c: c), (1.0, lambda c: c[::-1, ::-1, ::-1])])
def test_flips(flip_prob, expected):
    cube = np.random.default_rng(5).random((8, 8, 8), dtype=np.float32)
    transform = train_transforms(load=False, label_key=None, cube_size=8, padded_size=8, flip_prob=flip_prob)
    np.testing.assert_array_equal(transform({"image": cube})["image"][0].numpy(), expected(cube))


def _cube_orientations(cube: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """The 48 orientations of a cube (axis permutations times axis flips), each with its determinant (+1: rotation)."""
    out = []
    for perm in itertools.permutations(range(3)):
        parity = np.linalg.det(np.eye(3)[list(perm)])
        for flips in itertools.product((False, True), repeat=3):
            axes = tuple(a for a, f in enumerate(flips) if f)
            turned = np.transpose(cube, perm)
            out.append((np.flip(turned, axes) if axes else turned, int(round(parity)) * (-1) ** len(axes)))
    return out


@pytest.mark.parametrize("rotate90_prob, min_distinct", [(0.0, 1), (0.5, 10)])
def test_rotations_are_exact_orientations_of_the_cube(rotate90_prob, min_distinct):
    cube = np.random.default_rng(8).random((8, 8, 8), dtype=np.float32)
    orientations = _cube_orientations(cube)
    transform = train_transforms(
        load=False, label_key=None, cube_size=8, padded_size=8, flip_prob=0.0, rotate90_prob=rotate90_prob
    )
    transform.set_random_state(seed=11)
    seen = set()
    for _ in range(60):
        out = transform({"image": cube})["image"][0].numpy()
        index = [i for i, (o, _) in enumerate(orientations) if np.array_equal(out, o)]
        assert len(index) == 1  # no interpolation: exactly one orientation of the input
        assert orientations[index[0]][1] == 1  # quarter turns only (no flips asked for): a proper rotation
        seen.add(index[0])
    assert len(seen) >= min_distinct


def test_determinism_with_set_random_state_and_set_determinism():
    cube = np.random.default_rng(6).random((32, 32, 32), dtype=np.float32)

    def run(seed: int | None = None, determinism: int | None = None) -> list[torch.Tensor]:
        if determinism is not None:
            set_determinism(seed=determinism)  # before building: Compose seeds itself from MONAI's global seed
        transform = train_transforms(load=False, label_key=None)
        if seed is not None:
            transform.set_random_state(seed=seed)
        return [transform({"image": cube})["image"] for _ in range(4)]

    def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))

    assert same(run(seed=11), run(seed=11))
    assert not same(run(seed=11), run(seed=12))
    try:
        assert same(run(determinism=3), run(determinism=3))
        assert not same(run(determinism=3), run(determinism=4))
    finally:
        set_determinism(seed=None)


def test_allow_missing_keys():
    cube = np.zeros((32, 32, 32), dtype=np.float32)
    transform = train_transforms(keys=("image", "mask"), load=False, allow_missing_keys=True)
    out = transform({"image": cube, "label": 0})
    assert "mask" not in out and tuple(out["image"].shape) == (1, 32, 32, 32)
    with pytest.raises(RuntimeError):  # MONAI wraps the KeyError of a missing key
        train_transforms(keys=("image", "mask"), load=False)({"image": cube, "label": 0})


def test_dataloader_batches(cube_files):
    paths, _ = cube_files
    data = [{"image": p, "label": i % 2} for i, p in enumerate(paths)]
    loader = DataLoader(Dataset(data, train_transforms()), batch_size=2, num_workers=0)
    batch = next(iter(loader))
    assert tuple(batch["image"].shape) == (2, 1, 32, 32, 32)
    assert batch["label"].dtype == torch.long and batch["label"].tolist() == [0, 1]


@pytest.mark.parametrize("factory", [train_transforms, eval_transforms])
def test_untracked_chain_matches_the_tracked_one(factory):
    """The default (untracked) chain gives the tracked chain's values as plain tensors; tracking is restored."""
    from monai.data import MetaTensor
    from monai.data.meta_obj import get_track_meta

    cube = np.random.default_rng(8).random((32, 32, 32), dtype=np.float32)
    fast, tracked = factory(load=False), factory(load=False, track_meta=True)
    fast.set_random_state(seed=5)
    tracked.set_random_state(seed=5)
    for _ in range(3):
        a, b = fast({"image": cube, "label": 1}), tracked({"image": cube, "label": 1})
        assert type(a["image"]) is torch.Tensor and isinstance(b["image"], MetaTensor)
        torch.testing.assert_close(a["image"], b["image"].as_tensor(), rtol=0, atol=0)
        assert get_track_meta()


def test_tracking_is_restored_after_errors_and_in_caching_threads(cube_files):
    from monai.data import CacheDataset
    from monai.data.meta_obj import get_track_meta

    paths, _ = cube_files
    with pytest.raises(RuntimeError):
        train_transforms()({"image": "missing.npy", "label": 0})
    assert get_track_meta()
    data = [{"image": p, "label": 0} for p in paths * 4]
    dataset = CacheDataset(data, train_transforms(), num_workers=4, progress=False)
    assert get_track_meta() and type(dataset[0]["image"]) is torch.Tensor
