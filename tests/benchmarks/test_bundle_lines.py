"""``benchmarks/bundle_lines.py``: a bundle's ``scripts/`` lines split into docstring, comment, blank and code."""

from __future__ import annotations

import pytest


@pytest.fixture
def bundle_lines(load_benchmark):
    return load_benchmark("bundle_lines")


SOURCE = '''"""Module docstring,
two lines."""

# a comment
X = 1  # code with a comment

#: attribute doc
Y = 2
"""Attribute docstring."""


def f():
    """One line."""

    return X
'''


def test_line_kinds_split_every_line_once(bundle_lines):
    counts = bundle_lines.line_kinds(SOURCE)
    assert counts == {"lines": 15, "docstring": 4, "comment": 2, "blank": 5, "code": 4}


def test_measure_splits_the_declared_modules_into_inference_and_fine_tuning(bundle_lines):
    result = bundle_lines.measure(["naslung"])
    parts = {entry["part"] for entry in result["modules"].values()}
    assert parts == {"inference", "fine_tuning"}
    totals = result["totals"]
    for key in bundle_lines.KINDS:
        assert totals["all"][key] == totals["inference"][key] + totals["fine_tuning"][key]
    assert result["modules"]["naslung.networks.spec"]["part"] == "inference"
    assert result["modules"]["naslung.networks.losses"]["part"] == "fine_tuning"
