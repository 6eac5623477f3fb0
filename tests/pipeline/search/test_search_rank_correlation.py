"""Spearman's rank correlation between the search-time and the retrained validation scores of a run's networks."""

from __future__ import annotations

import json

import pytest
from scipy.stats import spearmanr

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.errors import DataError
from naslung.pipeline.search.rank_correlation import (
    RANK_CORRELATION_FILE,
    retrained_validation_score,
    search_vs_retrained,
    spearman,
    write_rank_correlation,
)
from naslung.pipeline.training.step import spec_slug

SPEARMAN_CASES = [
    [[1, 2, 3, 4], [10, 20, 30, 40], 1.0],
    [[1, 2, 3, 4], [4, 3, 2, 1], -1.0],
    [[0.1, 0.5, 0.3], [0.2, 0.9, 0.4], 1.0],
    [[1, 2, 2, 3], [1, 3, 2, 4], spearmanr([1, 2, 2, 3], [1, 3, 2, 4]).statistic],  # ties: mean ranks, as scipy
    [[1, 5, 2, 8, 3], [2, 1, 4, 3, 5], spearmanr([1, 5, 2, 8, 3], [2, 1, 4, 3, 5]).statistic],
    [[1, 1, 1], [1, 2, 3], None],  # one side all tied: undefined
    [[1], [2], None],
]


@pytest.mark.parametrize("x, y, expected", SPEARMAN_CASES)
def test_spearman(x, y, expected):
    result = spearman(x, y)
    assert result == expected if expected is None else result == pytest.approx(expected)


def test_spearman_needs_equal_lengths():
    with pytest.raises(DataError):
        spearman([1, 2], [1, 2, 3])


SPECS = ["[4,4,[4],[4],[4]]", "[4,4,[4],[8],[8]]", "[4,4,[8],[8],[8]]", "[4,4,[4,4],[8],[8]]"]


def _history(*aucs):
    return [{"epoch": i + 1, "val_auc": a, "val_f1": 0.5} for i, a in enumerate(aucs)]


def make_run(root, search_scores, retrained_histories, folds=(0, 1)):
    """A run folder: ``selected.json`` with the search-time AUCs, ``train/<slug>/fold_<k>/metrics.json``."""
    specs = SPECS[: len(search_scores)]
    write_json(
        root / "search" / "selected.json",
        {
            "specs": specs,
            "score_key": "auc",
            "candidates": [{"spec": s, "auc": a, "f1": 0.0} for s, a in zip(specs, search_scores, strict=True)],
        },
    )
    for spec, histories in zip(specs, retrained_histories, strict=True):
        if histories is None:
            continue  # not retrained
        network = root / "train" / spec_slug(spec)
        write_json(network / "cv_metrics.json", {"folds": list(folds)})
        for fold, history in zip(folds, histories, strict=True):
            # the checkpoint (picked by another metric) scores 0.5; the fold's score is its best validation epoch
            write_json(network / f"fold_{fold}" / "metrics.json", {"val": {"auc": 0.5}, "history": history})
    return root


def test_rank_correlation_of_a_constructed_run(tmp_path):
    # retrained means: 0.75, 0.65, 0.9, 0.7 (best epoch per fold, then the mean over folds 0-1)
    retrained = [
        [_history(0.6, 0.8), _history(0.7)],
        [_history(0.6), _history(0.7, 0.5)],
        [_history(0.9), _history(0.85, 0.9)],
        [_history(0.7), _history(0.7)],
    ]
    search = [0.6, 0.55, 0.8, 0.7]
    run = make_run(tmp_path, search, retrained)
    result = write_rank_correlation(run)
    assert result == json.loads((run / RANK_CORRELATION_FILE).read_text(encoding="utf-8"))
    assert result["metric"] == "auc" and result["n"] == 4 and result["reason"] is None
    means = [n["retrained_score"] for n in result["networks"]]
    assert means == pytest.approx([0.75, 0.65, 0.9, 0.7])
    assert result["rho"] == pytest.approx(spearmanr(search, means).statistic) == pytest.approx(0.8)
    assert result["networks"][0]["retrained_folds"] == {"0": 0.8, "1": 0.7}


@pytest.mark.parametrize(
    "search, retrained, reason",
    [
        [[0.6, 0.7], [[_history(0.6)], [_history(0.8)]], "at least 3"],  # two networks
        [[0.6, 0.7, 0.8], [[_history(0.6)], [_history(0.8)], None], "at least 3"],  # one never retrained
        [[0.6, 0.6, 0.6], [[_history(0.6)], [_history(0.8)], [_history(0.7)]], "tie"],  # one-class search scores
    ],
)
def test_undefined_correlation_is_null_with_a_reason(tmp_path, search, retrained, reason):
    result = search_vs_retrained(make_run(tmp_path, search, retrained, folds=(0,)))
    assert result["rho"] is None and reason in result["reason"]


def test_without_history_a_fold_scores_its_checkpoint(tmp_path):
    write_json(tmp_path / "fold_3" / "metrics.json", {"val": {"auc": 0.62}})
    assert retrained_validation_score(tmp_path, "auc") == (0.62, {3: 0.62})


def test_without_a_selection_the_error_names_the_file(tmp_path):
    with pytest.raises(DataError, match="selected.json"):
        search_vs_retrained(tmp_path)
