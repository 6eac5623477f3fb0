"""The DNAS strategy: derived specs lie in the search space, a 2-epoch search on cubes yields a spec trained through
the normal training path and POP's selected.json, a killed search resumes after its last finished epoch."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from cube_data import make_cubes

from naslung.networks import CBAMResNet3D
from naslung.pipeline.cli import main
from naslung.pipeline.errors import ConfigError, SearchError
from naslung.pipeline.search import SearchSpace
from naslung.pipeline.search.dnas import derive_specs, supernet_for_space
from naslung.pipeline.search.journal import read_selected_specs
from naslung.pipeline.search.runner import load_search_config, run_search_step

#: 19-candidate space, one-epoch candidates, a tiny supernet with the latency term, everything in this process.
TINY = {
    "strategy": "dnas",
    "space": {"channels": [4, 8], "min_blocks": 3, "max_blocks": 4},
    "test_folds": [1],
    "epochs_per_candidate": 1,
    "latency_warmup": 1,
    "latency_repeats": 2,
    "select_top_n": 1,
    "train": {"val_fraction": 0.3, "batch_size": 8},
    "dnas": {
        "epochs": 1,
        "warmup_epochs": 0,
        "anneal_epochs": 2,
        "batch_size": 4,
        "candidates": 1,
        "latency_weight": 0.1,
        "latency_warmup": 0,
        "latency_repeats": 1,
    },
}


def _with(epochs: int) -> dict:
    return {**TINY, "dnas": {**TINY["dnas"], "epochs": epochs}}


@pytest.mark.parametrize(
    "space",
    [
        {"channels": [4, 8, 16], "min_blocks": 3, "max_blocks": 6},
        {"channels": [4, 8, 16], "min_blocks": 3, "max_blocks": 5, "monotone": "stage"},
        {"channels": [4, 8], "min_blocks": 4, "max_blocks": 7, "depth_rule": "none"},
    ],
)
def test_derived_specs_lie_in_the_space(space):
    space = SearchSpace(**space)
    torch.manual_seed(0)
    net = supernet_for_space(space, kernel_sizes=(3, 5))
    for trial in range(4):
        with torch.no_grad():
            for p in net.arch_parameters():
                p.copy_(3 * torch.randn(p.numel()))
        derived = derive_specs(net, space, top_n=3)
        assert len(derived) == 3 and [s for _, s in derived] == sorted((s for _, s in derived), reverse=True)
        for spec, _ in derived:
            assert spec.with_default_kernels() in space, f"{spec} (trial {trial})"
            assert {k for stage in spec.kernel_sizes for k in stage} <= {3, 5}


def test_derivation_follows_certain_choices_and_repairs_broken_ones():
    space = SearchSpace(channels=[4, 8, 16], min_blocks=3, max_blocks=6)
    net = supernet_for_space(space)
    wanted = {"stage3.block1": 4, "stage3.block2": 8, "stage4.block1": 8, "stage5.block1": 16}
    with torch.no_grad():
        for d, p in zip(net.decisions, net.arch_parameters(), strict=True):
            slot = d.name.rsplit(".", 1)[0]
            if d.kind == "width":
                p.copy_(torch.tensor([20.0 if w == wanted.get(slot, 4) else 0.0 for w in d.options]))
            elif d.kind == "kernel":
                p.copy_(torch.tensor([0.0, 20.0]) if slot == "stage4.block1" else torch.tensor([20.0, 0.0]))
            else:
                p.copy_(torch.tensor([0.0, 20.0]) if slot in wanted else torch.tensor([20.0, 0.0]))
    assert str(derive_specs(net, space)[0][0]) == "[4,4,[4,8],[[8,5]],[16]]"
    with torch.no_grad():  # now ask for a narrower block after a wider one: not allowed (monotone widths)
        net.arch_logits[[d.name for d in net.decisions].index("stage5.block1.width")].copy_(torch.tensor([20.0, 0, 0]))
    spec = derive_specs(net, space)[0][0]
    assert spec.with_default_kernels() in space and str(spec) != "[4,4,[4,8],[[8,5]],[4]]"


@pytest.fixture(scope="module")
def cube_dir(tmp_path_factory):
    return make_cubes(tmp_path_factory.mktemp("dnas_cubes"), n=16, folds=4)


@pytest.fixture(scope="module")
def resumed(cube_dir, tmp_path_factory):
    """One epoch, then the same search asked for two: the second call runs only epoch 2; a third does nothing."""
    out = tmp_path_factory.mktemp("dnas_out")
    first = run_search_step(out, _with(1), data_dir=cube_dir)
    journal_1 = (out / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    second = run_search_step(out, _with(2), data_dir=cube_dir)
    third = run_search_step(out, _with(2), data_dir=cube_dir)
    return out, first, journal_1, second, third


def test_two_epoch_search_produces_a_trainable_selected_spec(resumed):
    out, _, _, summary, _ = resumed
    records = [json.loads(line) for line in (out / "journal.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0]["temperature"] == pytest.approx(5.0) and records[1]["temperature"] == pytest.approx(
        5.0**0.5 * 0.5**0.5
    )
    for record in records:
        assert set(record["probabilities"]) >= {"stage3.block1.width", "stage3.block1.kernel"}
        assert record["expected_latency_ms"] > 0 and 0 <= record["f1"] <= 1
    space = SearchSpace(**TINY["space"])
    specs = json.loads((out / "selected.json").read_text(encoding="utf-8"))["specs"]
    assert specs == summary["selected"] and len(specs) == 1
    assert CBAMResNet3D(arch=specs[0]).arch.with_default_kernels() in space
    lines = (out / "candidates.jsonl").read_text(encoding="utf-8").splitlines()
    (candidate,) = [r for r in map(json.loads, lines) if r["spec"] == specs[0]]  # run 1 may have derived another
    assert candidate["latency_ms"] > 0 and candidate["epochs_run"] == 1
    assert (out / "alphas.png").stat().st_size > 0 and (out / "pareto.csv").is_file()
    assert summary["strategy"] == "dnas" and summary["trained"] == 1


def test_resume_runs_only_the_missing_epochs(resumed):
    out, first, journal_1, second, third = resumed
    assert first["resumed_epochs"] == 0 and second["resumed_epochs"] == 1
    assert (out / "journal.jsonl").read_text(encoding="utf-8").splitlines()[0] == journal_1[0]
    assert second["evaluated"] + second["resumed"] == 1
    assert third.get("skipped") and third["selected"] == second["selected"]


def test_selected_json_is_read_like_pops(resumed, tmp_path):
    out = resumed[0]
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "selected.json").write_text((out / "selected.json").read_text())
    assert read_selected_specs(tmp_path) == resumed[3]["selected"]


def test_other_settings_are_refused(resumed, cube_dir):
    out = resumed[0]
    changed = {**TINY, "dnas": {**TINY["dnas"], "epochs": 3, "arch_lr": 0.01}}
    with pytest.raises(SearchError, match="dnas"):
        run_search_step(out, changed, data_dir=cube_dir)
    with pytest.raises(SearchError, match="DNAS search"):
        run_search_step(out, {**TINY, "strategy": "pop", "executor": "sequential"}, data_dir=cube_dir)


def test_cli_strategy_flag(resumed, cube_dir, tmp_path, capsys):
    out = resumed[0]
    config = tmp_path / "search.json"
    config.write_text(json.dumps({**_with(2), "strategy": "pop"}))
    assert main(["--quiet", "search", "--strategy", "dnas", "--config", str(config), "--out", str(out),
                 "--data", str(cube_dir)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "up to date" in printed and "DNAS: 2 supernet epochs" in printed and "alphas.png" in printed


@pytest.mark.parametrize(
    "overrides, message",
    [[{"strategy": "random"}, "strategy"], [{"dnas#bogus": 1}, "dnas option"]],
)
def test_bad_strategy_config(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_search_config(None, overrides)


def test_checkpoint_loads_weights_only(resumed):
    """supernet.pt holds plain tensors and numbers: the engine's epoch, both optimisers, the supernet, the records."""
    out, *_ = resumed
    state = torch.load(out / "supernet.pt", weights_only=True)
    assert set(state) == {"supernet", "weight_opt", "arch_opt", "records", "trainer"}
    assert state["trainer"]["iteration"] == 2 * state["trainer"]["epoch_length"]  # two finished epochs
    assert [r["epoch"] for r in state["records"]["records"]] == [1, 2]


def test_resumed_search_ends_as_an_uninterrupted_one(resumed, cube_dir, tmp_path):
    """One epoch, then two in the same folder (the candidate of epoch 1 trained in between) gives the journal,
    supernet and selection of a two-epoch search run at once (with the same measured latency table)."""
    out, *_, second, _ = resumed
    shutil.copy(out / "latency_table.json", tmp_path / "latency_table.json")  # timings differ between measurements
    whole = run_search_step(tmp_path, _with(2), data_dir=cube_dir)
    assert whole["resumed_epochs"] == 0 and whole["selected"] == second["selected"]

    def journal(folder):
        lines = (folder / "journal.jsonl").read_text(encoding="utf-8").splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]

    assert journal(out) == journal(tmp_path)
    resumed_state = torch.load(out / "supernet.pt", weights_only=True)["supernet"]
    whole_state = torch.load(tmp_path / "supernet.pt", weights_only=True)["supernet"]
    assert all(torch.equal(resumed_state[k], whole_state[k]) for k in whole_state)


def test_checkpoint_of_the_hand_written_loop_is_refused(resumed, cube_dir, tmp_path):
    """A supernet.pt without the engine's state (the format before the Ignite engine) is not silently restarted."""
    tmp_path = tmp_path / "search"
    shutil.copytree(resumed[0], tmp_path)
    state = torch.load(tmp_path / "supernet.pt", weights_only=True)
    legacy = {"epoch": 1, "supernet": state["supernet"], "weight_opt": state["weight_opt"],
              "arch_opt": state["arch_opt"], "records": state["records"]["records"]}  # fmt: skip
    torch.save(legacy, tmp_path / "supernet.pt")
    (tmp_path / "done.json").unlink()
    with pytest.raises(SearchError, match="supernet.pt.*new --out folder"):
        run_search_step(tmp_path, _with(3), data_dir=cube_dir)
