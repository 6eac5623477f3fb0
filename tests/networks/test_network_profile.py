"""profile(): parameters, MACs per nodule (checked by hand on small layers) and latency at two batch sizes."""

from __future__ import annotations

import pytest
import torch

from naslung.networks import CBAMResNet3D, CostProfile, count_macs, count_parameters, fixed_threads, profile
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
