"""``benchmarks/experiments/seed_ensembles.py``: every k-subset of networks fused by mean probability and by mean
log-odds, with the majority vote's accuracy beside them."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def seed_ensembles(load_benchmark):
    return load_benchmark("experiments/seed_ensembles")


def test_mean_log_odds_can_rank_where_the_mean_probability_does_not(seed_ensembles):
    """One member sure of the malignant nodule, the other mildly wrong: the mean probability ranks the benign nodule
    higher (0.70 against 0.65), the mean log-odds the malignant one (6.5 against 0.9)."""
    labels = np.array([1, 0])
    sure, unsure = np.array([1 - 1e-6, 0.8]), np.array([0.3, 0.6])
    pair = seed_ensembles._subset_means([sure, unsure], labels, 2, rule_auc=0.5)
    assert pair["auc"] == 0.0 and pair["logit_auc"] == 1.0
    assert pair["subsets"] == 1 and pair["share_above_diameter_rule"] == 0.0
    assert pair["vote_accuracy"] == 0.0  # malignant nodule: a 1-1 tie, so benign; benign nodule: 2 malignant votes
    single = seed_ensembles._subset_means([sure, unsure], labels, 1, rule_auc=0.5)
    assert single["auc"] == single["logit_auc"] == 0.5  # one member: the same ranking either way
    assert (single["auc_min"], single["auc_max"], single["subsets"]) == (0.0, 1.0, 2)
