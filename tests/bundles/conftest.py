"""Fixtures for the bundle tests: a tiny run directory (two networks trained one epoch), its exported bundles and
a small generated CT scan with a bright nodule, written as MetaImage and as a DICOM series."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from naslung.pipeline.atomic_io import write_csv, write_json
from naslung.pipeline.data.datalists import read_manifest
from naslung.pipeline.data.scan_writers import write_dicom_series, write_mhd
from naslung.pipeline.training.step import spec_slug, train_folds

#: Two tiny candidate specs (a few thousand parameters each) trained for one epoch.
SPECS = ("[4,4,[4],[4],[4]]", "[4,4,[4],[4],[8]]")
#: Factor on each spec's last residual-block normalisation: after one epoch the outputs hardly depend on the input
#: (spread ~1e-5), so a 1e-4 comparison could not tell one cube from another; scaled, they spread ~1e-3 to 1e-2
#: without saturating.
OUTPUT_SPREAD_FACTORS = {SPECS[0]: 100.0, SPECS[1]: 100.0}
TRAIN_SETTINGS = {"batch_size": 8, "val_fraction": 0.3, "seed": 3, "max_epochs": 1}


@dataclass
class BundleRun:
    """The run directory, its cube datalist and the folders of the trained networks."""

    root: Path
    datalist: list[dict]
    slugs: list[str]


@dataclass
class ScanCase:
    """A generated CT scan (HU, x/y/z order), its files and the world LPS centre (mm) of its bright nodule."""

    hu: np.ndarray
    mhd: Path
    dicom: Path
    nifti: Path
    centre_mm: list[float]


def _write_cubes(data_dir: Path, n_cubes: int = 24) -> None:
    """24 cubes in 4 folds: malignant ones hold a large bright sphere, benign ones a small one (as `prepare` writes)."""
    rng = np.random.default_rng(0)
    radius = np.sqrt(((np.mgrid[:32, :32, :32] - 15.5) ** 2).sum(0))
    (data_dir / "cubes").mkdir(parents=True)
    rows = []
    for n in range(n_cubes):
        label = n % 2
        cube = np.clip(rng.normal(0.2, 0.05, (32, 32, 32)), 0.0, 1.0).astype(np.float32)
        cube[radius < (8 if label else 4)] = 0.7
        np.save(data_dir / "cubes" / f"n{n}.npy", cube)
        rows.append(
            {
                "nodule_id": f"n{n}",
                "patient_id": f"p{n // 2}",
                "series_uid": "s",
                "image": f"cubes/n{n}.npy",
                "label": label,
                "fold": n // 6 + 1,
                "source": "embedded",
            }
        )
    write_csv(data_dir / "manifest.csv", rows, list(rows[0]))


def _spread_outputs(weights_path: Path, factor: float) -> None:
    """Scale stage 5's last normalisation layers (homogeneous through ReLU) so the network's outputs vary."""
    state = torch.load(weights_path, weights_only=True)
    for key in state:
        if key.startswith("stage5.block1.") and (".conv2.adn.N." in key or ".shortcut.adn.N." in key):
            if key.endswith(("weight", "bias")):
                state[key] = state[key] * factor
    torch.save(state, weights_path)


@pytest.fixture(scope="session")
def bundle_run(tmp_path_factory) -> BundleRun:
    """A run directory: RUN/data (embedded-style manifest), RUN/train/<slug> for two specs (fold 1), RUN/ensemble."""
    root = tmp_path_factory.mktemp("run")
    _write_cubes(root / "data")
    datalist = read_manifest(root / "data" / "manifest.csv")
    slugs = []
    for spec in SPECS:
        slug = spec_slug(spec)
        train_folds(datalist, [1], root / "train" / slug, overrides={"arch": spec, **TRAIN_SETTINGS})
        _spread_outputs(root / "train" / slug / "fold_1" / "checkpoints" / "best_model.pt", OUTPUT_SPREAD_FACTORS[spec])
        slugs.append(slug)
    summary = {"accuracy_mean": 0.75, "accuracy_std": 0.05, "f1_mean": 0.7, "f1_std": 0.1, "auc_mean": 0.8}
    write_json(
        root / "ensemble" / "metrics.json",
        {"members": [{"slug": s} for s in slugs], "folds": [1], "summary": summary, "n_members": len(slugs)},
    )
    return BundleRun(root, datalist, slugs)


@pytest.fixture(scope="session")
def exported(bundle_run):
    """The classifier (first spec) and ensemble (both specs) bundles exported from the run."""
    from naslung.pipeline.export.step import export_bundle

    out = bundle_run.root / "bundles"
    return {
        "classifier": export_bundle(bundle_run.root, out / "naslung_classifier", members=[bundle_run.slugs[0]]),
        "ensemble": export_bundle(bundle_run.root, out / "naslung_ensemble", ensemble=True),
    }


@pytest.fixture(scope="session")
def scan_case(tmp_path_factory) -> ScanCase:
    """A 48x48x40 CT (0.8 x 0.8 x 1.25 mm) of lung-like -900 HU with a 40 HU nodule: .mhd, DICOM series, NIfTI."""
    import SimpleITK as sitk

    root = tmp_path_factory.mktemp("scans")
    spacing, origin = (0.8, 0.8, 1.25), (-30.0, 10.0, -100.0)
    grid = np.mgrid[:48, :48, :40].astype(float)
    peak = (20.0, 26.0, 18.0)
    distance_mm = np.sqrt(sum(((grid[a] - peak[a]) * spacing[a]) ** 2 for a in range(3)))
    hu = np.full((48, 48, 40), -900, dtype=np.int16)
    hu[distance_mm < 5.0] = 40
    hu[:, :, :2] = -1000
    write_mhd(hu, spacing, origin, root / "scan.mhd")
    write_dicom_series(hu, spacing, origin, root / "dicom", patient_id="P1", series_uid="1.2.826.0.1.3680043.2.1125.7")
    sitk.WriteImage(sitk.ReadImage(str(root / "scan.mhd")), str(root / "scan.nii.gz"))
    centre = [origin[a] + peak[a] * spacing[a] for a in range(3)]
    return ScanCase(hu, root / "scan.mhd", root / "dicom", root / "scan.nii.gz", centre)


@pytest.fixture
def bundle_imports():
    """Let a test import a bundle's ``scripts`` package in-process, then forget it (bundles share the name)."""

    def purge() -> None:
        for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
            del sys.modules[name]

    saved_path = list(sys.path)
    purge()
    yield
    purge()
    sys.path[:] = saved_path
