"""profile(): parameters, MACs per nodule (checked by hand on small layers) and latency at two batch sizes."""

from __future__ import annotations

import time

import pytest
import torch

from naslung.networks import CBAMResNet3D, CostProfile, count_macs, count_parameters, fixed_threads, profile
from naslung.networks.profile import measure_latency_ms
from naslung.pipeline.errors import ConfigError

MAC_CASES = [  # module, one-nodule input shape, MACs by hand
    [torch.nn.Conv3d(1, 4, 3, padding=1), (1, 8, 8, 8), 4 * 27 * 8**3],
    [torch.nn.Conv3d(4, 8, 3, stride=2, padding=1, bias=False), (4, 8, 8, 8), 8 * 4 * 27 * 4**3],
    [torch.nn.Conv2d(2, 6, 1), (2, 5, 5), 6 * 2 * 25],
    [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)), (1, 4, 4), 16 * 3],
]


@pytest.mark.parametrize("module, shape, expected", MAC_CASES)
def test_mac_count_by_hand(module, shape, expected):
    assert count_macs(module, shape) == expected


def test_profile_of_a_candidate():
    net = CBAMResNet3D(arch="[4,4,[4],[4],[8]]").train()
    threads_before = torch.get_num_threads()
    cost = profile(net, (1, 16, 16, 16), "cpu", large_batch=4, warmup=1, repeats=3, num_threads=1)
    assert isinstance(cost, CostProfile)
    assert cost.parameters == count_parameters(net)
    # conv1 alone is 4 * 27 * 16^3 MACs; everything else adds to it
    assert cost.macs_per_nodule > 4 * 27 * 16**3
    assert cost.latency_ms_per_nodule > 0 and cost.large_batch_latency_ms_per_nodule > 0
    assert cost.large_batch == 4 and cost.num_threads == 1 and cost.device == "cpu"
    assert net.training and torch.get_num_threads() == threads_before
    assert set(cost.to_dict()) >= {"parameters", "macs_per_nodule", "latency_ms_per_nodule"}


def test_macs_do_not_depend_on_mode_or_head():
    linear = CBAMResNet3D(arch="[4,4,[4],[4],[8]]")
    angular = CBAMResNet3D(arch="[4,4,[4],[4],[8]]", head="angular")
    assert count_macs(linear, (1, 16, 16, 16)) == count_macs(angular.train(), (1, 16, 16, 16))


def test_bad_arguments():
    net = torch.nn.Conv3d(1, 1, 1)
    with pytest.raises(ConfigError, match="one nodule"):
        profile(net, (32,))
    with pytest.raises(ConfigError):
        profile(net, (1, 4, 4, 4), large_batch=0)
    with pytest.raises(ConfigError), fixed_threads(0):
        pass


class _Stalls:
    """A callable whose calls take ``pattern`` seconds in turn (a slow call every so often, as while another
    process holds the second core)."""

    def __init__(self, pattern):
        self.pattern, self.calls = list(pattern), 0

    def __call__(self, _x):
        seconds = self.pattern[self.calls % len(self.pattern)]
        self.calls += 1
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass


def test_least_time_ignores_the_stalls_the_median_reports():
    example = torch.zeros(1)
    pattern = [0.002, 0.012, 0.012]  # two of three calls stalled
    median = measure_latency_ms(_Stalls(pattern), example, warmup=0, repeats=6)
    least = measure_latency_ms(_Stalls(pattern), example, warmup=0, repeats=6, statistic="min")
    assert median >= 11.0 and 1.9 <= least < 5.0
    with pytest.raises(ConfigError, match="statistic"):
        measure_latency_ms(_Stalls([0.0]), example, repeats=1, statistic="mean")
    cost = profile(torch.nn.Conv3d(1, 1, 1), (1, 4, 4, 4), large_batch=2, warmup=0, repeats=3, statistic="min")
    assert 0 < cost.latency_ms_per_nodule < 1000
