"""The cohort rules: validation, overrides, the malignancy label."""

from __future__ import annotations

import pytest

from naslung.pipeline.data.cohort_rules import CohortRules, malignancy_label
from naslung.pipeline.errors import ConfigError


def test_bad_rules():
    with pytest.raises(ConfigError, match="unknown cohort rule"):
        CohortRules().replace(min_reader=4)
    with pytest.raises(ConfigError, match="min_readers"):
        CohortRules(min_readers=0)
    with pytest.raises(ConfigError, match="max_slice_thickness_mm"):
        CohortRules(max_slice_thickness_mm=-1)
    assert CohortRules().replace(min_readers=4) == CohortRules(min_readers=4)


#: (readers' malignancy ratings, threshold, label): above the threshold malignant, below benign, equal dropped.
LABEL_CASES = [
    [[4, 4, 3], 3.0, 1],
    [[2, 3, 3], 3.0, 0],
    [[2, 4, 3], 3.0, None],
    [[5, 1, 3, 3], 3.0, None],
    [[4, 4, 4], 4.0, None],
    [[4, 4, 5], 4.0, 1],
]


@pytest.mark.parametrize("ratings, threshold, label", LABEL_CASES)
def test_malignancy_label(ratings, threshold, label):
    assert malignancy_label(ratings, threshold) == label
