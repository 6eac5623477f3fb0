"""``naslung import-reference``: the authors' weights become a run folder whose network gives the authors' logits."""

from __future__ import annotations

import json

import pytest
import torch
from authors_convres import AuthorsConvRes, authors_random_state_dict, stage_config

from naslung.networks import ReferenceConvRes3D
from naslung.pipeline.cli import build_parser, main
from naslung.pipeline.errors import DataError
from naslung.pipeline.run.members import load_trained_network
from naslung.pipeline.training.reference_import import import_reference, load_authors_weights

MODEL_1 = [4, 4, [4, 4], [4, 8], [8, 8]]
SPECS = [MODEL_1, [4, 4, [8], [8, 16], [16]]]


def _spec_text(spec: list) -> str:
    return json.dumps(spec, separators=(",", ":"))


def _authors(spec: list, seed: int = 0) -> tuple[AuthorsConvRes, dict[str, torch.Tensor]]:
    weights = authors_random_state_dict(stage_config(spec), seed=seed)
    network = AuthorsConvRes(stage_config(spec))
    network.load_state_dict(weights)
    return network.eval(), weights


@pytest.mark.parametrize("spec", SPECS)
def test_cli_converts_a_state_dict_into_a_run_fold(tmp_path, spec, capsys):
    authors, weights = _authors(spec)
    source = tmp_path / "authors_weights.pt"
    torch.save(weights, source)
    fold_dir = tmp_path / "run" / "train" / "model-reference" / "all"

    code = main(["import-reference", "--weights", str(source), "--arch", _spec_text(spec), "--out", str(fold_dir)])

    assert code == 0
    assert "naslung export-bundle --run" in capsys.readouterr().out
    state = torch.load(fold_dir / "checkpoints" / "best_model.pt", weights_only=True)  # a plain state_dict
    assert all(isinstance(value, torch.Tensor) for value in state.values()) and "head.weight" in state
    config = json.loads((fold_dir / "config.json").read_text())
    assert config["network_def"]["layout"] == "reference" and config["arch"] == _spec_text(spec)
    record = json.loads((fold_dir / "reference_import.json").read_text())
    assert record["source_format"] == "state_dict" and len(record["source_sha256"]) == 64

    network = load_trained_network(fold_dir)  # how the analyses and the ensemble rebuild a trained fold
    assert isinstance(network, ReferenceConvRes3D)
    x = torch.rand((2, 1, 32, 32, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, _ = authors(x)
        torch.testing.assert_close(network(x), expected, atol=1e-5, rtol=0)
    assert [p.name for p in (fold_dir / "checkpoints").iterdir()] == ["best_model.pt"]  # no temporary file left


def test_pickled_checkpoint_needs_the_explicit_flag(tmp_path, capsys):
    authors, _ = _authors(MODEL_1, seed=4)
    checkpoint = tmp_path / "ckpt.t7"
    torch.save({"net": authors, "acc": 0.9, "epoch": 12}, checkpoint)  # the authors' main.py saves this shape
    args = ["import-reference", "--weights", str(checkpoint), "--arch", _spec_text(MODEL_1)]

    assert main([*args, "--out", str(tmp_path / "refused")]) == 1
    assert "--allow-pickle" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()

    assert main([*args, "--out", str(tmp_path / "accepted"), "--allow-pickle"]) == 0
    network = load_trained_network(tmp_path / "accepted")
    x = torch.rand((1, 1, 32, 32, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(network(x), authors(x)[0], atol=1e-5, rtol=0)
    assert json.loads((tmp_path / "accepted" / "reference_import.json").read_text())["source_format"] == (
        "pickled checkpoint"
    )


def test_help_says_that_unpickling_runs_code():
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    help_text = subparsers.choices["import-reference"].format_help()
    assert "--allow-pickle" in help_text and "RUNS CODE" in " ".join(help_text.split())


@pytest.mark.parametrize(
    "change, key",
    [
        [lambda w: w.update({"layers.2.my_conv1.0.bias": torch.zeros(3)}), "layers.2.my_conv1.0.bias"],
        [lambda w: w.pop("fc.weight"), "fc.weight"],
        [lambda w: w.update({"first_cbam.extra.weight": torch.zeros(1)}), "first_cbam.extra.weight"],
    ],
)
def test_bad_keys_are_named_and_nothing_is_written(tmp_path, capsys, change, key):
    _, weights = _authors(MODEL_1)
    change(weights)
    source = tmp_path / "weights.pt"
    torch.save(weights, source)
    out = tmp_path / "fold"
    code = main(["import-reference", "--weights", str(source), "--arch", _spec_text(MODEL_1), "--out", str(out)])
    assert code == 1
    error = capsys.readouterr().err
    assert key in error and str(source) in error
    assert not (out / "checkpoints" / "best_model.pt").exists()


def test_reimport_replaces_the_weights(tmp_path):
    source = tmp_path / "weights.pt"
    for seed in (0, 1):
        _, weights = _authors(MODEL_1, seed=seed)
        torch.save(weights, source)
        import_reference(source, _spec_text(MODEL_1), tmp_path / "fold")
        state = torch.load(tmp_path / "fold" / "checkpoints" / "best_model.pt", weights_only=True)
        torch.testing.assert_close(state["stage1.conv.weight"], weights["conv1.0.weight"])


def test_unreadable_or_foreign_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_authors_weights(tmp_path / "missing.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(DataError, match="not the authors' weights"):
        load_authors_weights(tmp_path / "list.pt")


@pytest.mark.slow
def test_imported_fold_ships_as_a_bundle_with_the_authors_logits(tmp_path):
    from monai.bundle import ConfigParser

    from naslung.pipeline.export.step import export_bundle

    authors, weights = _authors(MODEL_1, seed=6)
    torch.save(weights, tmp_path / "weights.pt")
    run_dir = tmp_path / "run"
    import_reference(tmp_path / "weights.pt", _spec_text(MODEL_1), run_dir / "train" / "model1-reference" / "all")
    bundle = export_bundle(run_dir, tmp_path / "bundle", members=["model1-reference"])

    config = json.loads((bundle.path / "configs" / "inference.json").read_text())
    assert config["network_def"]["_target_"] == "scripts.naslung_bundle.networks.reference_convres.ReferenceConvRes3D"
    shipped = {p.name for p in (bundle.path / "scripts" / "naslung_bundle" / "networks").rglob("*.py")}
    assert {"reference_convres.py", "reference_cbam.py", "cbam_resnet.py"} <= shipped
    assert not shipped & {"factory.py", "mc3.py"}
    parser = ConfigParser(config)
    parser["bundle_root"] = str(bundle.path)
    network = parser.get_parsed_content("network_def")  # the bundle's own copy of the code (scripts/)
    network.load_state_dict(torch.load(bundle.path / "models" / "model.pt", weights_only=True))
    scripted = torch.jit.load(str(bundle.path / "models" / "model.ts"))
    x = torch.rand((2, 1, 32, 32, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, _ = authors(x)
        torch.testing.assert_close(network.eval()(x), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(scripted(x), expected, atol=1e-5, rtol=0)
