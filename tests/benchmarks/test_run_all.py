"""``benchmarks/run_all.py``: it lists every benchmark of the folder and keeps each one's headline lines."""

from __future__ import annotations

import pytest


def test_every_benchmark_is_listed(benchmarks_dir, load_benchmark):
    scripts = {path.stem for path in benchmarks_dir.glob("*.py")} - {"run_all", "__init__"}
    assert set(load_benchmark("run_all").BENCHMARKS) == scripts


# benchmark, its stdout (lines as the benchmark prints them), the lines run_all must keep
HEADLINE_CASES = [
    [
        "bundle_lines",
        "inference: lines 2698, docstring 751, comment 21, blank 330, code 1596\n"
        "fine_tuning: lines 1742, docstring 481, comment 11, blank 246, code 1004\n"
        "all: lines 4440, docstring 1232, comment 32, blank 576, code 2600\n",
        [
            "inference: lines 2698, docstring 751, comment 21, blank 330, code 1596",
            "fine_tuning: lines 1742, docstring 481, comment 11, blank 246, code 1004",
            "all: lines 4440, docstring 1232, comment 32, blank 576, code 2600",
        ],
    ],
    [
        "step_breakdown",
        "whole step                   210.0 ms/step  100.0% of the whole step\n"
        "without stage 2's CBAM       150.0 ms/step   71.4% of the whole step\n"
        "wrote benchmarks/results/step_breakdown.json\n",
        [
            "whole step                   210.0 ms/step  100.0% of the whole step",
            "without stage 2's CBAM       150.0 ms/step   71.4% of the whole step",
        ],
    ],
    [
        "search_determinism",
        "run          wall s  timed reused pruned  selected\n"
        "table          12.0      6      0      0  4-4_4_4_8\n"
        "same seed + shared latency table: identical journal and selection: True\n"
        "without the table: same trained specs True, same selection False, latency moved up to 29.0%\n"
        "4-4_4_4_8                           0.800         0.912     3\n"
        "distinct scores: old 2, new 6 -> benchmarks/results/search_determinism.json\n",
        [
            "same seed + shared latency table: identical journal and selection: True",
            "without the table: same trained specs True, same selection False, latency moved up to 29.0%",
            "distinct scores: old 2, new 6 -> benchmarks/results/search_determinism.json",
        ],
    ],
    [
        "signal_probe",
        "prepared /tmp/x in 300 s\n"
        "\n== render_v2: 1013 nodules, 400 malignant, 10 folds ==\n"
        "model                                    accuracy   AUC (fold mean)  AUC pooled\n"
        "cube_features_lr                  80.1% ± 3.0     0.880 ± 0.030       0.878\n"
        "diameter_rule                     83.0% ± 2.9     0.904 ± 0.020       0.900\n"
        "ratings_ceiling_lr                89.7% ± 2.0     0.957 ± 0.010       0.955\n"
        "\nrating (reader mean)    rho cube  rho size  beyond  rho diam  rendered\n"
        "subtlety                   0.500     0.400   0.100     0.300  yes\n",
        [
            "== render_v2: 1013 nodules, 400 malignant, 10 folds ==",
            "model                                    accuracy   AUC (fold mean)  AUC pooled",
            "cube_features_lr                  80.1% ± 3.0     0.880 ± 0.030       0.878",
            "diameter_rule                     83.0% ± 2.9     0.904 ± 0.020       0.900",
            "ratings_ceiling_lr                89.7% ± 2.0     0.957 ± 0.010       0.955",
        ],
    ],
    [
        "anchors",
        "cohort: 1013 nodules (400 malignant), 10 folds\n"
        "anchor: diameter rule                                 83.0 ± 2.9   0.904 ± 0.020\n"
        "written to benchmarks/results/anchors.json in 1.0 s\n",
        ["anchor: diameter rule                                 83.0 ± 2.9   0.904 ± 0.020"],
    ],
]


@pytest.mark.parametrize("name, stdout, expected", HEADLINE_CASES)
def test_headline_lines_keep_each_benchmarks_result(name, stdout, expected, load_benchmark):
    assert load_benchmark("run_all").headline_lines(name, stdout) == expected
