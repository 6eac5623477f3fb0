"""retain_freed_memory: after it, a freed 16 MiB tensor's pages are reused instead of faulted in again."""

from __future__ import annotations

import resource
import sys

import pytest
import torch

from naslung.pipeline.cpu_allocator import retain_freed_memory


def _faults_of_one_step() -> int:
    """Page faults of a step-like pattern: two 16 MiB maps and a small tensor alive together, written, freed."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    maps = [torch.ones(4 * 1024 * 1024), torch.ones(1000), torch.ones(4 * 1024 * 1024)]
    del maps
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_pages_are_reused() -> None:
    assert retain_freed_memory()
    faults = min([_faults_of_one_step() for _ in range(16)][-6:])  # the heap settles within the first ~8 steps
    assert faults < 2048, f"{faults} page faults for two reused 16 MiB blocks (at least 4096 with glibc's defaults)"
