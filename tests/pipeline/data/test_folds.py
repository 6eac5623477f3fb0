"""Fold assignment: by patient, stratified by label, deterministic; LUNA16 subset tables."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from naslung.pipeline.data.folds import PAPER_FOLDS, assign_folds, read_luna16_subsets
from naslung.pipeline.errors import ConfigError, DataError


def _rows(n_patients=300, seed=1, malignant_rate=0.45):
    """Cohort-like rows: 1-6 nodules per patient (most have one), a patient-level malignancy tendency."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        n = int(rng.choice([1, 1, 1, 2, 2, 3, 4, 6]))
        bias = rng.random() < malignant_rate
        for k in range(n):
            label = int(rng.random() < (0.8 if bias else 0.2))
            rows.append(
                {"patient_id": f"P{p:04d}", "series_uid": f"1.2.{p}", "nodule_id": f"P{p}_n{k}", "label": label}
            )
    return rows


def _patients_in_one_fold(rows):
    folds = defaultdict(set)
    for row in rows:
        folds[row["patient_id"]].add(row["fold"])
    return all(len(f) == 1 for f in folds.values())


def test_patients_are_never_split_and_folds_are_balanced():
    rows = _rows()
    out = assign_folds(rows, n_folds=10, seed=0)
    assert [r["nodule_id"] for r in out] == [r["nodule_id"] for r in rows]
    assert "fold" not in rows[0]  # the input is not modified
    assert _patients_in_one_fold(out)
    assert {r["fold"] for r in out} == set(range(10))
    for label in (0, 1):
        per_fold = Counter(r["fold"] for r in out if r["label"] == label)
        total = sum(per_fold.values())
        assert max(abs(n - total / 10) for n in per_fold.values()) <= 3, per_fold
    sizes = Counter(r["fold"] for r in out)
    assert max(sizes.values()) - min(sizes.values()) <= 4, sizes


def test_deterministic_from_the_seed():
    rows = _rows()
    first = [r["fold"] for r in assign_folds(rows, seed=3)]
    assert first == [r["fold"] for r in assign_folds(rows, seed=3)]
    assert first == [r["fold"] for r in assign_folds(list(reversed(rows)), seed=3)][::-1]  # row order is irrelevant
    assert first != [r["fold"] for r in assign_folds(rows, seed=4)]


@settings(max_examples=25, deadline=None)
@given(
    labels=st.lists(st.lists(st.integers(0, 1), min_size=1, max_size=5), min_size=1, max_size=60),
    n_folds=st.integers(2, 10),
    seed=st.integers(0, 2**16),
)
def test_any_cohort_keeps_patients_whole(labels, n_folds, seed):
    rows = [{"patient_id": f"P{p}", "series_uid": f"S{p}", "label": v} for p, ls in enumerate(labels) for v in ls]
    out = assign_folds(rows, n_folds=n_folds, seed=seed)
    assert _patients_in_one_fold(out)
    assert all(0 <= r["fold"] < n_folds for r in out)
    n_patients = len(labels)
    if n_patients >= n_folds:  # every fold gets a patient when there are enough
        assert len({r["fold"] for r in out}) == n_folds


def test_the_default_cohort_folds_keep_patients_whole():
    from naslung.pipeline.data.cohort_table import load_default_cohort

    rows = load_default_cohort()
    assert _patients_in_one_fold(rows)
    per_fold = Counter(r["fold"] for r in rows)
    assert sorted(per_fold) == list(range(10)) and max(per_fold.values()) - min(per_fold.values()) <= 5
    assert PAPER_FOLDS == (0, 1, 2, 3, 4)


def test_subsets_set_the_fold_and_drop_unlisted_series():
    rows = _rows(n_patients=5)
    subsets = {f"1.2.{p}": (p * 3) % 10 for p in range(4)}  # patient 4 is not in LUNA16
    out = assign_folds(rows, subsets=subsets)
    assert all(r["fold"] == subsets[r["series_uid"]] for r in out)
    assert {r["patient_id"] for r in out} == {f"P{p:04d}" for p in range(4)}
    with pytest.raises(DataError, match="in no LUNA16 subset"):
        assign_folds(rows, subsets=subsets, on_missing="error")
    with pytest.raises(ConfigError):
        assign_folds(rows, subsets=subsets, on_missing="ignore")


def test_kept_folds_do_not_move_and_new_patients_fill_in():
    rows = _rows()
    before = {r["patient_id"]: r["fold"] for r in assign_folds(rows, seed=0)}
    # a rebuilt cohort: one patient gone, one patient's nodules relabelled, two new patients
    changed = [
        dict(r, label=1 - r["label"]) if r["patient_id"] == "P0003" else r for r in rows if r["patient_id"] != "P0001"
    ]
    changed += [
        {"patient_id": f"NEW{n}", "series_uid": f"9.{n}", "nodule_id": f"NEW{n}_n1", "label": n % 2} for n in range(2)
    ]
    fresh = assign_folds(changed, seed=0)
    assert sum(before[r["patient_id"]] != r["fold"] for r in fresh if r["patient_id"] in before) > 0  # reshuffled
    kept = assign_folds(changed, seed=0, keep=before)
    assert all(r["fold"] == before[r["patient_id"]] for r in kept if r["patient_id"] in before)
    assert _patients_in_one_fold(kept) and {r["fold"] for r in kept if r["patient_id"].startswith("NEW")} <= set(
        range(10)
    )
    with pytest.raises(ConfigError, match="P0002"):
        assign_folds(changed, n_folds=5, keep={"P0002": 7})


def test_bad_arguments():
    with pytest.raises(ConfigError):
        assign_folds(_rows(5), n_folds=1)
    with pytest.raises(DataError, match="label"):
        assign_folds([{"patient_id": "P", "label": 2}])
    with pytest.raises(DataError, match="patient_id"):
        assign_folds([{"label": 1}])


LUNA16_TABLES = [
    ["seriesuid,subset\n1.2.3,subset0\n1.2.4,subset9\n", {"1.2.3": 0, "1.2.4": 9}],
    ["series_uid,fold\n1.2.3,4\n1.2.4, 7\n1.2.3,4\n", {"1.2.3": 4, "1.2.4": 7}],
]


@pytest.mark.parametrize("text, expected", LUNA16_TABLES)
def test_read_luna16_subsets(tmp_path, text, expected):
    path = tmp_path / "subsets.csv"
    path.write_text(text)
    assert read_luna16_subsets(path) == expected


def test_read_luna16_subset_folders(tmp_path):
    for subset, uid in ((0, "1.2.3"), (7, "1.2.9")):
        folder = tmp_path / f"subset{subset}"
        folder.mkdir()
        (folder / f"{uid}.mhd").write_text("ObjectType = Image\n")
        (folder / f"{uid}.raw").write_bytes(b"")
    (tmp_path / "seg-lungs-LUNA16").mkdir()
    assert read_luna16_subsets(tmp_path) == {"1.2.3": 0, "1.2.9": 7}
    with pytest.raises(DataError, match="not a LUNA16 folder"):
        read_luna16_subsets(tmp_path / "seg-lungs-LUNA16")


BAD_TABLES = [
    ["uid,subset\n1.2.3,0\n", "needs a 'seriesuid'"],
    ["seriesuid,subset\n1.2.3,subset12\n", "line 2: subset 12 is outside"],
    ["seriesuid,subset\n1.2.3,train\n", "line 2: 'train' is not a subset"],
    ["seriesuid,subset\n,3\n", "line 2: empty series UID"],
    ["seriesuid,subset\n1.2.3,1\n1.2.3,2\n", "line 3: series 1.2.3 is listed in subsets 1 and 2"],
    ["seriesuid,subset\n", "lists no series"],
]


@pytest.mark.parametrize("text, message", BAD_TABLES)
def test_bad_luna16_tables_name_the_file_and_problem(tmp_path, text, message):
    path = tmp_path / "subsets.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_luna16_subsets(path)
    assert str(path) in str(info.value)


def test_missing_luna16_table(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_luna16_subsets(tmp_path / "nope.csv")
