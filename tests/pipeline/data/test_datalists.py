"""Manifest reading and the per-fold train/val/test split."""

from __future__ import annotations

import numpy as np
import pytest

from naslung.pipeline.atomic_io import write_csv
from naslung.pipeline.data.datalists import class_balanced_weights, read_manifest, split_for_fold
from naslung.pipeline.errors import DataError


def _datalist(n_patients=40, n_folds=4):
    rng = np.random.default_rng(1)
    items = []
    for p in range(n_patients):
        for n in range(int(rng.integers(1, 4))):
            items.append(
                {"patient_id": f"P{p}", "nodule_id": f"P{p}_{n}", "label": int(p % 3 == 0), "fold": p % n_folds}
            )
    return items


@pytest.mark.parametrize("test_fold", [0, 3, None])
def test_split_is_disjoint_by_patient_and_excludes_test_fold(test_fold):
    data = _datalist()
    split = split_for_fold(data, test_fold, val_fraction=0.2, seed=3)
    patients = [{d["patient_id"] for d in part} for part in (split.train, split.val, split.test)]
    assert not patients[0] & patients[1] and not patients[0] & patients[2] and not patients[1] & patients[2]
    assert len(split.train) + len(split.val) + len(split.test) == len(data)
    assert all(d["fold"] == test_fold for d in split.test)
    assert all(d["fold"] != test_fold for d in split.train + split.val)
    assert {d["label"] for d in split.val} == {0, 1}  # stratified: both classes present


def test_split_is_deterministic_and_seed_dependent():
    data = _datalist()
    ids = lambda s: [d["nodule_id"] for d in s.val]  # noqa: E731
    assert ids(split_for_fold(data, 1, seed=7)) == ids(split_for_fold(data, 1, seed=7))
    assert ids(split_for_fold(data, 1, seed=7)) != ids(split_for_fold(data, 1, seed=8))


def test_split_rejects_empty_fold():
    with pytest.raises(DataError, match="fold 9 holds no nodules"):
        split_for_fold(_datalist(), 9)


def test_read_manifest(tmp_path):
    (tmp_path / "cubes").mkdir()
    np.save(tmp_path / "cubes" / "a.npy", np.zeros((32, 32, 32), np.float32))
    fields = ["nodule_id", "patient_id", "series_uid", "image", "label", "fold"]
    write_csv(
        tmp_path / "manifest.csv",
        [dict(nodule_id="a", patient_id="P", series_uid="s", image="cubes/a.npy", label=1, fold=2)],
        fields,
    )
    (item,) = read_manifest(tmp_path / "manifest.csv")
    assert item["label"] == 1 and item["fold"] == 2 and item["image"] == str((tmp_path / "cubes" / "a.npy").resolve())


@pytest.mark.parametrize(
    "row, message",
    [
        (dict(image="cubes/missing.npy", label=1, fold=0), "does not exist"),
        (dict(image="cubes/a.npy", label=3, fold=0), "label must be 0"),
        (dict(image="cubes/a.npy", label="x", fold=0), "must be integers"),
    ],
)
def test_read_manifest_bad_rows(tmp_path, row, message):
    (tmp_path / "cubes").mkdir()
    np.save(tmp_path / "cubes" / "a.npy", np.zeros((2, 2, 2), np.float32))
    fields = ["nodule_id", "patient_id", "series_uid", "image", "label", "fold"]
    write_csv(tmp_path / "manifest.csv", [dict(nodule_id="a", patient_id="P", series_uid="s", **row)], fields)
    with pytest.raises(DataError, match=message):
        read_manifest(tmp_path / "manifest.csv")


def test_read_manifest_missing_column(tmp_path):
    (tmp_path / "manifest.csv").write_text("nodule_id,image\n")
    with pytest.raises(DataError, match="manifest.csv: missing column"):
        read_manifest(tmp_path / "manifest.csv")


@pytest.mark.parametrize("labels", [[0, 0, 0, 1], [1, 0, 1, 1, 1, 0], [0, 1]])
def test_class_balanced_weights_give_each_class_half_the_draws(labels):
    weights = class_balanced_weights([{"label": y} for y in labels])
    assert sum(weights) == pytest.approx(1.0)
    assert sum(w for w, y in zip(weights, labels, strict=True) if y == 1) == pytest.approx(0.5)


def test_class_balanced_weights_need_labels():
    with pytest.raises(DataError, match="'label'"):
        class_balanced_weights([{"image": "a.npy"}])
