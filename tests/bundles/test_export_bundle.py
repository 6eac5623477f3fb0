"""Acceptance tests of `naslung export-bundle`: exported bundles run with MONAI alone, agree with naslung's own
predictions, report bad inputs per nodule, fine-tune for an epoch and pass MONAI's bundle checks."""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata, verify_net_in_out
from monai.transforms import LoadImage

from naslung.pipeline.cli import main
from naslung.pipeline.export.checks import check_bundle_layout, hide_naslung_code
from naslung.pipeline.export.smoke import run_bundle_inference
from naslung.pipeline.export.sources import local_schema_path
from naslung.pipeline.export.step import export_bundle
from naslung.pipeline.training.step import load_train_config, predict
from naslung.transforms import ExtractNoduleCube, SimpleITKReader, eval_transforms

TOLERANCE = 1e-4

#: Entries that must fail, each with a word its error message must contain.
BAD_ENTRIES = [
    [{"image": "missing.npy", "nodule_id": "missing"}, "not found"],
    [{"image": "small.npy", "nodule_id": "shape"}, "shape"],
    [{"image": "SCAN", "center_mm": [500.0, 500.0, 500.0], "nodule_id": "outside"}, "outside the scan"],
    [{"image": "mr.mhd", "center_mm": [5.0, 5.0, 5.0], "nodule_id": "not_ct"}, "does not look like a CT"],
    [{"image": "hu_cube.npy", "nodule_id": "hu_cube"}, "outside [0, 1]"],
]


def _project_network(bundle_run, slug: str) -> torch.nn.Module:
    """The network as naslung's training config builds it, with the run's own best weights (not the bundle's)."""
    fold_dir = bundle_run.root / "train" / slug / "fold_1"
    config = load_train_config(json.loads((fold_dir / "config.json").read_text(encoding="utf-8")))
    network = ConfigParser(config).get_parsed_content("network_def")
    network.load_state_dict(torch.load(fold_dir / "checkpoints" / "best_model.pt", weights_only=True))
    return network.eval()


def _project_probabilities(network: torch.nn.Module, cubes: list[np.ndarray]) -> list[float]:
    items = [{"image": cube, "label": 0} for cube in cubes]
    return [row["probability"] for row in predict(network, items, "cpu", transform=eval_transforms(load=False))]


def _scan_cube(path: Path, centre_mm: list[float]) -> np.ndarray:
    """The cube naslung's ExtractNoduleCube cuts from a scan loaded by MONAI's LoadImage, (32, 32, 32) in [0, 1]."""
    scan = LoadImage(reader=SimpleITKReader(), image_only=True)(str(path))
    return ExtractNoduleCube()(scan, centre_mm)[0].numpy()


def _write_datalist(folder: Path, scan_case, cube_path: str) -> Path:
    """Good entries (MetaImage, DICOM and NIfTI scans, .npy and NIfTI cubes) then the bad ones, with their files."""
    import nibabel as nib

    from naslung.pipeline.data.scan_writers import write_mhd

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "small.npy", np.zeros((16, 16, 16), np.float32))
    np.save(folder / "hu_cube.npy", np.full((32, 32, 32), -600.0, np.float32))
    write_mhd(np.full((12, 12, 12), 300, np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), folder / "mr.mhd")
    nib.save(nib.Nifti1Image(np.load(cube_path), np.eye(4)), str(folder / "cube.nii.gz"))
    entries = [
        {"image": str(scan_case.mhd), "center_mm": scan_case.centre_mm, "nodule_id": "mhd"},
        {"image": str(scan_case.dicom), "center_mm": scan_case.centre_mm, "nodule_id": "dicom"},
        {"image": str(scan_case.nifti), "center_mm": scan_case.centre_mm, "nodule_id": "nifti"},
        {"image": cube_path, "nodule_id": "cube"},
        {"image": "cube.nii.gz", "nodule_id": "nifti_cube"},
    ]
    for entry, _ in BAD_ENTRIES:
        entries.append({**entry, "image": str(scan_case.mhd) if entry["image"] == "SCAN" else entry["image"]})
    path = folder / "datalist.json"
    path.write_text(json.dumps(entries))
    return path


def _read_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["nodule_id"]: row for row in csv.DictReader(handle)}


def _check_bad_rows(rows: dict[str, dict[str, str]]) -> None:
    for entry, word in BAD_ENTRIES:
        row = rows[entry["nodule_id"]]
        assert word in row["error"], row
        assert row["probability"] == "" and row["prediction"] == ""


def test_classifier_bundle_files_and_metadata(exported, bundle_run):
    bundle = Path(exported["classifier"])
    assert check_bundle_layout(bundle) == []
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["schema"].endswith("meta_schema_20240725.json")
    assert metadata["version"] in metadata["changelog"]
    assert "SYNTHETIC" in metadata["data_source"]
    assert "Trained on synthetic data" in (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    cv = json.loads((bundle_run.root / "train" / bundle_run.slugs[0] / "cv_metrics.json").read_text(encoding="utf-8"))
    assert metadata["eval_metrics"]["accuracy_mean"] == pytest.approx(cv["summary"]["accuracy_mean"])
    image = metadata["network_data_format"]["inputs"]["image"]
    assert (image["num_channels"], image["spatial_shape"], image["value_range"]) == (1, [32, 32, 32], [0, 1])
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "benign", "1": "malignant"}
    assert metadata["network_architecture"]["spec"] == "[4,4,[4],[4],[4]]"
    assert metadata["latency_ms_per_nodule"]["value"] > 0
    # plain state_dict of the run's best weights, and a TorchScript twin that needs no bundle code
    weights = torch.load(bundle / "models" / "model.pt", weights_only=True)
    network = _project_network(bundle_run, bundle_run.slugs[0])
    for key, value in network.state_dict().items():
        assert torch.equal(weights[key], value), key
    scripted = torch.jit.load(str(bundle / "models" / "model.ts"))
    cube = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scripted(cube), network(cube), atol=1e-5)
    # the configs hold no trace of naslung: everything comes from the bundle's scripts/ package
    for name in ("inference.json", "evaluate.json", "train.json"):
        assert "naslung." not in (bundle / "configs" / name).read_text(encoding="utf-8").replace(
            "naslung_bundle", ""
        ), name
    assert not list(bundle.rglob("*.pyc"))


def test_ensemble_bundle_layout(exported, bundle_run):
    bundle = Path(exported["ensemble"])
    assert check_bundle_layout(bundle) == []
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert [a["slug"] for a in metadata["network_architecture"]] == bundle_run.slugs
    assert metadata["eval_metrics"]["f1_mean"] == pytest.approx(0.7)
    combined = torch.load(bundle / "models" / "model.pt", weights_only=True)
    for index, slug in enumerate(bundle_run.slugs):
        member = torch.load(bundle / "models" / f"member_{index}.pt", weights_only=True)
        assert member.keys() == _project_network(bundle_run, slug).state_dict().keys()
        for key, value in member.items():
            assert torch.equal(combined[f"members.{index}.{key}"], value)
        assert (bundle / "models" / f"member_{index}.ts").is_file()
    scripted = torch.jit.load(str(bundle / "models" / "model.ts"))
    cube = torch.rand(1, 1, 32, 32, 32)
    probabilities = scripted.member_probabilities(cube)
    assert probabilities.shape == (1, 2)
    assert torch.allclose(scripted(cube)[:, 1], probabilities.mean(dim=1), atol=1e-6)


def test_classifier_inference_matches_naslung(exported, bundle_run, scan_case, tmp_path):
    """`python -m monai.bundle run` on scans and cubes, from a clean folder, against naslung's predict()."""
    bundle = Path(exported["classifier"]).resolve()
    cube_path = bundle_run.datalist[1]["image"]
    datalist = _write_datalist(tmp_path / "inputs", scan_case, cube_path)
    output_dir = tmp_path / "out"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs/inference.json")]
    command += ["--bundle_root", str(bundle), "--datalist", str(datalist), "--output_dir", str(output_dir)]
    workdir = tmp_path / "clean_cwd"
    workdir.mkdir()
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _read_rows(output_dir / "predictions.csv")
    network = _project_network(bundle_run, bundle_run.slugs[0])
    scan_cube = _scan_cube(scan_case.mhd, scan_case.centre_mm)
    expected_scan, expected_cube = _project_probabilities(network, [scan_cube, np.load(cube_path)])
    assert scan_cube.max() > 0.6  # the nodule is in the cube
    assert abs(expected_scan - expected_cube) > 10 * TOLERANCE  # the comparison can tell inputs apart
    expected_rows = {"mhd": expected_scan, "dicom": expected_scan, "nifti": expected_scan, "cube": expected_cube}
    expected_rows["nifti_cube"] = expected_cube
    for name, expected in expected_rows.items():
        assert rows[name]["error"] == ""
        assert abs(float(rows[name]["probability"]) - expected) < TOLERANCE, name
        assert int(rows[name]["prediction"]) == int(expected > 0.5)
    _check_bad_rows(rows)
    assert list(rows) == [*expected_rows, *(entry["nodule_id"] for entry, _ in BAD_ENTRIES)]


def test_ensemble_inference_without_naslung(exported, bundle_run, scan_case, tmp_path):
    """The ensemble bundle in a process where `import naslung` fails: votes and mean probability as naslung's."""
    hidden = subprocess.run(
        [sys.executable, "-c", hide_naslung_code() + "import naslung.networks"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert hidden.returncode != 0 and "ModuleNotFoundError" in hidden.stderr
    cube_path = bundle_run.datalist[2]["image"]
    datalist = _write_datalist(tmp_path / "inputs", scan_case, cube_path)
    csv_path = run_bundle_inference(exported["ensemble"], datalist, tmp_path / "out", hide_naslung=True)
    rows = _read_rows(csv_path)
    scan_cube = _scan_cube(scan_case.dicom, scan_case.centre_mm)
    cubes = [scan_cube, np.load(cube_path)]
    members = np.array([_project_probabilities(_project_network(bundle_run, s), cubes) for s in bundle_run.slugs])
    for name, column in (("dicom", 0), ("mhd", 0), ("cube", 1)):
        row = rows[name]
        votes = int((members[:, column] > 0.5).sum())
        assert row["error"] == ""
        assert abs(float(row["probability"]) - members[:, column].mean()) < TOLERANCE, name
        assert np.allclose(json.loads(row["member_probabilities"]), members[:, column], atol=TOLERANCE)
        assert (int(row["votes"]), int(row["n_members"])) == (votes, 2)
        assert float(row["vote_fraction"]) == pytest.approx(votes / 2)
        assert int(row["prediction"]) == int(votes > 1)
    _check_bad_rows(rows)


def test_bundle_workflows_and_one_training_epoch(exported, bundle_run, tmp_path, bundle_imports):
    """train.json and inference.json (+ evaluate.json) satisfy MONAI's properties; train.json runs an epoch."""
    from monai.bundle import run

    bundle = Path(exported["classifier"])
    configs = bundle / "configs"
    for files, workflow_type in (
        ([configs / "train.json"], "train"),
        ([configs / "inference.json"], "infer"),
        ([configs / "inference.json", configs / "evaluate.json"], "infer"),
    ):
        workflow = ConfigWorkflow(
            config_file=[str(f) for f in files],
            meta_file=str(configs / "metadata.json"),
            workflow_type=workflow_type,
            logging_file=False,
            bundle_root=str(bundle),
        )
        workflow.initialize()
        assert workflow.check_properties() == [], files
    keys = ("image", "label", "patient_id")
    entries = [{key: item[key] for key in keys} for item in bundle_run.datalist[:8]]
    (tmp_path / "train.json").write_text(json.dumps(entries))
    output_dir = tmp_path / "train_out"
    run(
        config_file=str(configs / "train.json"),
        bundle_root=str(bundle),
        datalist=str(tmp_path / "train.json"),
        output_dir=str(output_dir),
        max_epochs=1,
        logging_file=False,
    )
    best = torch.load(output_dir / "checkpoints" / "best_model.pt", weights_only=True)
    assert best.keys() == torch.load(bundle / "models" / "model.pt", weights_only=True).keys()
    assert (output_dir / "checkpoints" / "last.pt").is_file()


def test_verify_metadata_and_net_in_out(exported, tmp_path, bundle_imports):
    schema = str(local_schema_path())
    for bundle in map(Path, exported.values()):
        meta = str(bundle / "configs" / "metadata.json")
        verify_metadata(meta_file=meta, filepath=schema)
        verify_net_in_out(
            net_id="network_def",
            meta_file=meta,
            config_file=str(bundle / "configs" / "inference.json"),
            bundle_root=str(bundle),
            device="cpu",
        )
        for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
            del sys.modules[name]
    broken = copy.deepcopy(json.loads(Path(meta).read_text(encoding="utf-8")))
    del broken["network_data_format"]["inputs"]["image"]["dtype"]
    (tmp_path / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="dtype"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=schema)


def test_export_again_is_skipped_and_cli(exported, bundle_run, capsys):
    again = export_bundle(bundle_run.root, exported["ensemble"].path, ensemble=True)
    assert again.skipped and again.eval_metrics == exported["ensemble"].eval_metrics
    code = main(
        ["-q", "export-bundle", "--run", str(bundle_run.root), "--out", str(exported["classifier"].path)]
        + ["--member", bundle_run.slugs[0]]
    )
    assert code == 0
    assert "up to date" in capsys.readouterr().out
