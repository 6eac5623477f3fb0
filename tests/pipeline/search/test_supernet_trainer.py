"""The DNAS supernet trainer (an Ignite engine): a run killed in the middle of an epoch resumes after its last
finished epoch and ends with the records and weights of an uninterrupted run; the progress bar counts the epochs
left; batch pairs stop at the shorter loader. (A finished search asked for more epochs goes on: test_dnas.py.)"""

from __future__ import annotations

import pytest
import torch
from cube_data import make_cubes
from ignite.engine import Events

from naslung.networks.gumbel import TemperatureSchedule
from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.search import SearchSpace
from naslung.pipeline.search.dnas import _loader, derive_specs, supernet_for_space
from naslung.pipeline.search.supernet_trainer import (
    BilevelUpdate,
    PairedLoader,
    SupernetEpochRecorder,
    create_supernet_trainer,
)

SPACE = SearchSpace(channels=[4, 8], min_blocks=3, max_blocks=4)
SEED = 7


class Killed(RuntimeError):
    """Raised by the test's handler to stop a run as a kill would: no handler of the engine runs after it."""


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    datalist = read_manifest(make_cubes(tmp_path_factory.mktemp("trainer_cubes"), n=8, folds=2) / "manifest.csv")
    return datalist[:4], datalist[4:]  # weight and architecture splits: 2 batches of 2 each


def _trainer(items, out, epochs, progress=None):
    """A fresh process's worth of objects: supernet, optimisers, loaders, recorder and the engine."""
    torch.manual_seed(SEED)
    supernet = supernet_for_space(SPACE, kernel_sizes=(3, 5))
    weight_opt = torch.optim.Adam(supernet.weight_parameters(), lr=1e-3)
    arch_opt = torch.optim.Adam(supernet.arch_parameters(), lr=3e-3, betas=(0.5, 0.999))
    data = PairedLoader(_loader(items[0], 2, SEED), _loader(items[1], 2, SEED + 1))
    device = torch.device("cpu")
    update = BilevelUpdate(supernet, weight_opt, arch_opt, device, warmup_epochs=1, grad_clip=5.0)
    recorder = SupernetEpochRecorder(
        supernet, lambda net: derive_specs(net, SPACE, 1)[0], items[1], out / "journal.jsonl", device, 2,
        warmup_epochs=1,
    )  # fmt: skip
    schedule = TemperatureSchedule(5.0, 0.5, 2)
    kwargs = {} if progress is None else {"progress": progress}
    engine = create_supernet_trainer(update, recorder, data, schedule, SEED, out / "supernet.pt", epochs, **kwargs)
    return engine, data, supernet, recorder


def _without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_killed_run_resumes_to_the_uninterrupted_result(items, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    engine, data, supernet, recorder = _trainer(items, whole, 2)
    engine.run(data, max_epochs=2)
    expected_records, expected_state = recorder.records, supernet.state_dict()
    assert [r["arch_updates"] for r in expected_records] == [False, True]  # one warm-up epoch
    assert [r["arch_loss"] is None for r in expected_records] == [True, False]

    engine, data, _, _ = _trainer(items, killed, 2)

    @engine.on(Events.ITERATION_COMPLETED)
    def kill(engine):
        if engine.state.epoch == 2:  # after the first of the two batch pairs of epoch 2
            raise Killed("killed in epoch 2")

    with pytest.raises(Killed):
        engine.run(data, max_epochs=2)
    trainer_state = torch.load(killed / "supernet.pt", weights_only=True)["trainer"]
    assert trainer_state["iteration"] == trainer_state["epoch_length"] == 2  # epoch 1 of 2 batch pairs

    drawn: list[tuple[list[int], int | None, str]] = []

    def progress(iterable, total=None, desc=""):
        seen: list[int] = []
        drawn.append((seen, total, desc))
        for item in iterable:
            seen.append(item)
            yield item

    engine, data, supernet, recorder = _trainer(items, killed, 2, progress)
    engine.run(data, max_epochs=2)
    assert recorder.resumed_epochs == 1 and engine.state.epoch == 2
    assert drawn == [([1], 1, "DNAS epochs")]  # the epochs left, 0-based
    assert _without_seconds(recorder.records) == _without_seconds(expected_records)
    state = supernet.state_dict()
    assert all(torch.equal(state[k], expected_state[k]) for k in expected_state)
    journal = (killed / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(journal) == 2


def test_pairs_stop_at_the_shorter_loader(items):
    data = PairedLoader(_loader(items[0], 2, SEED), _loader(items[1][:2], 2, SEED + 1))
    assert len(data) == 1
    pairs = list(data)
    assert len(pairs) == 1 and pairs[0][0]["image"].shape == (2, 1, 32, 32, 32)
    assert len(list(data)) == 1  # re-iterable


def test_latency_term_needs_a_table():
    supernet = supernet_for_space(SPACE)
    optimiser = torch.optim.Adam(supernet.parameters())
    with pytest.raises(ValueError, match="latency_table"):
        BilevelUpdate(supernet, optimiser, optimiser, torch.device("cpu"), 0, 5.0, latency_weight=0.1)
