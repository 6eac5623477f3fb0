"""A Ray cluster of two nodes simulated on this machine (Ray's own ``cluster_utils.Cluster``, one CPU each): a tiny
search and a tiny retrain reach it by address, their jobs land on both nodes and every result comes back to the run
folder (issue 15)."""

from __future__ import annotations

import json
import re

import pytest
from cube_data import make_cubes

from naslung.pipeline.run import job as run_job
from naslung.pipeline.run.layout import spec_slug
from naslung.pipeline.search.runner import run_search_step

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")

#: Two one-epoch candidates trained at once (as ``test_search_runner``'s TINY, with a batch of two).
TINY = {
    "space": {"channels": [4, 8], "min_blocks": 3, "max_blocks": 4},
    "max_candidates": 2,
    "batch_size": 2,
    "test_folds": [1],
    "epochs_per_candidate": 1,
    "latency_warmup": 1,
    "latency_repeats": 2,
    "select_top_n": 2,
    "train": {"val_fraction": 0.3, "batch_size": 8},
}
#: Object store of each simulated node in bytes: the jobs ship only small records, specs and datalists.
OBJECT_STORE_BYTES = 80 * 1024 * 1024


@pytest.fixture(scope="module")
def cluster():
    """A head node and a second node, one CPU each, this process connected to the head."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    node_args = {"num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES}
    two_nodes = Cluster(initialize_head=True, connect=True, head_node_args={**node_args, "include_dashboard": False})
    two_nodes.add_node(**node_args)
    two_nodes.wait_for_nodes()
    try:
        yield two_nodes
    finally:
        ray.shutdown()
        two_nodes.shutdown()


def _node_ids():
    return {node["NodeID"] for node in ray.nodes() if node["Alive"]}


def test_search_and_retrain_on_a_two_node_cluster(cluster, tmp_path):
    nodes = _node_ids()
    assert len(nodes) == 2
    executor = {"executor": "ray", "ray_address": cluster.address, "workers": 2, "threads_per_trial": 1}
    run = tmp_path / "run"
    make_cubes(run / "data", n=16, folds=4)

    # the search: a batch of two candidates, one per node (each node has one CPU, each trial takes one)
    result = run_search_step(run / "search", {**TINY, **executor}, data_dir=run / "data")
    journal = (run / "search" / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    assert result["trained"] == len(journal) == 2  # every trial's record came back to the run folder
    placement = result["executor"]["trials_per_node"]
    assert set(placement) == nodes and sum(placement.values()) == 2
    summary = json.loads((run / "search" / "summary.json").read_text(encoding="utf-8"))
    assert summary["executor"]["trials_per_node"] == placement

    # the retrain: the train step's (network, fold) jobs on the same cluster, by address
    parallel = {"executor": "ray", "ray_address": cluster.address, "workers": 2, "threads_per_job": 1}
    train = {"max_epochs": 1, "batch_size": 8, "val_fraction": 0.3, "folds": [1, 2], "parallel": parallel}
    line = run_job._step_train(run_job.RunContext(run_dir=run, settings={"train": train}))
    specs = result["selected"]
    assert f"{len(specs)} networks on folds [1, 2]" in line
    fold_dirs = [run / "train" / spec_slug(spec) / f"fold_{fold}" for spec in specs for fold in (1, 2)]
    ran_on = set()
    for fold_dir in fold_dirs:  # every job's outputs are in the run folder, and its log says where it ran
        assert (fold_dir / "done.json").is_file() and (fold_dir / "test_predictions.csv").is_file()
        ran_on |= set(re.findall(r"Ray node ([0-9a-f]+)", (fold_dir / "job.log").read_text(encoding="utf-8")))
    assert ran_on == nodes
