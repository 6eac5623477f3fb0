"""naslung's MONAI Label app for real: `monailabel start_server` on 127.0.0.1 with exported bundles, its REST API
for clicked and outlined nodules against the bundles' own predictions, and a one-epoch fine-tuning run.

Opt-in: set NASLUNG_MONAILABEL_VENV to an environment built by `bundles/monailabel/make_env.sh` (monailabel pins
NumPy 1.x and a CUDA torch build, so it never enters naslung's own environment).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from naslung.pipeline.export.smoke import run_bundle_inference
from naslung.pipeline.export.sources import bundle_sources_dir

VENV_VARIABLE = "NASLUNG_MONAILABEL_VENV"
#: File make_env.sh writes last; a venv without it is half-built.
ENV_MARKER = ".naslung-monailabel-env"
TOLERANCE = 1e-4
#: Relative agreement asked of probabilities computed by the app (torch 2.14) and by `monai.bundle run` (torch 2.13).
RELATIVE_TOLERANCE = 1e-3
#: Bounds on the waits (seconds): server start, one request, one training run.
START_TIMEOUT_S, REQUEST_TIMEOUT_S, TRAIN_TIMEOUT_S = 240.0, 120.0, 300.0
#: Voxel index (i, j, k) of the nodule in the `scan_case` fixture's CT.
SCAN_PEAK = (20, 26, 18)

pytestmark = pytest.mark.skipif(
    not os.environ.get(VENV_VARIABLE),
    reason=f"opt-in: set {VENV_VARIABLE} to a venv built by bundles/monailabel/make_env.sh (or NASLUNG_MONAILABEL=1 "
    "in .ci/run)",
)


def _venv() -> Path:
    venv = Path(os.environ[VENV_VARIABLE]).expanduser().resolve()
    if not (venv / ENV_MARKER).is_file() or not (venv / "bin" / "monailabel").is_file():
        pytest.fail(f"{VENV_VARIABLE}={venv} is not a complete environment: run bundles/monailabel/make_env.sh {venv}")
    return venv


def _write_nifti(array_xyz: np.ndarray, spacing_mm, origin_mm, path: Path) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    image.SetSpacing([float(v) for v in spacing_mm])
    image.SetOrigin([float(v) for v in origin_mm])
    sitk.WriteImage(image, str(path))
    return path


def _sphere(shape, centre_voxel, radius_mm: float, spacing_mm) -> np.ndarray:
    grid = np.mgrid[tuple(slice(0, n) for n in shape)].astype(float)
    distance = np.sqrt(sum(((grid[a] - centre_voxel[a]) * spacing_mm[a]) ** 2 for a in range(3)))
    return distance < radius_mm


def _make_studies(root: Path, scan_case) -> tuple[Path, Path]:
    """STUDIES with the fixture's CT (`scan`, unlabelled) and three CTs whose final labels mark a malignant (2) and a
    benign (1) nodule each; plus a label ROI outlining the fixture CT's nodule. Returns (studies, roi)."""
    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    shutil.copyfile(scan_case.nifti, studies / "scan.nii.gz")
    spacing, origin, shape = (0.8, 0.8, 1.25), (-30.0, 10.0, -100.0), (48, 48, 40)
    roi = _sphere(shape, SCAN_PEAK, 5.0, spacing).astype(np.uint8)
    roi_path = _write_nifti(roi, spacing, origin, root / "roi.nii.gz")
    rng = np.random.default_rng(7)
    train_spacing, train_shape = (1.0, 1.0, 1.5), (64, 64, 36)
    for index in range(3):
        hu = rng.normal(-880.0, 20.0, train_shape).astype(np.int16)
        hu[:, :, :2] = -1000
        label = np.zeros(train_shape, np.uint8)
        for value, centre, radius in ((2, (18, 20, 18), 7.0), (1, (44, 42, 18), 3.0)):
            mask = _sphere(train_shape, centre, radius, train_spacing)
            hu[mask] = 30
            label[mask] = value
        _write_nifti(hu, train_spacing, origin, studies / f"train_{index}.nii.gz")
        _write_nifti(label, train_spacing, origin, studies / "labels" / "final" / f"train_{index}.nii.gz")
    return studies, roi_path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Server:
    """A `monailabel start_server` subprocess on 127.0.0.1 and a small JSON client for it."""

    def __init__(self, venv: Path, app: Path, studies: Path, conf: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [str(venv / "bin" / "monailabel"), "start_server", "--app", str(app), "--studies", str(studies)]
        for key, value in conf.items():
            command += ["--conf", key, value]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        env = {**os.environ, "MONAILABEL_PYEXE": str(venv / "bin" / "python"), "PYTHONDONTWRITEBYTECODE": "1"}
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONPATH", None)
        env["MONAI_LABEL_AUTO_UPDATE_SCORING"] = "false"
        self._log_handle = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, stdout=self._log_handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_log(self, text: str, timeout_s: float = 15.0) -> bool:
        """Whether ``text`` shows up in the server log within ``timeout_s`` (errors are logged after the answer)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return True
            time.sleep(0.5)
        return False

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Any:
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as response:
                return json.loads(response.read().decode())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path}: HTTP {err.code} {err.read()[:2000]!r}\n{self.tail()}") from err

    def wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.base + "/info/", timeout=5) as response:
                    return json.loads(response.read().decode())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1.0)
        raise AssertionError(f"the server did not answer /info/ within {START_TIMEOUT_S:.0f} s:\n{self.tail()}")

    def infer(self, model: str, image: str, params: dict[str, Any], label: Path | None = None) -> dict[str, Any]:
        """POST /infer/<model>?image=<id>&output=json as multipart form data (params, optional label file)."""
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{json.dumps(params)}\r\n'.encode()
        ]
        if label is not None:
            header = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="label"; filename="{label.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            )
            parts.append(header.encode() + label.read_bytes() + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        query = urllib.parse.urlencode({"image": image, "output": "json"})
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return self.request("POST", f"/infer/{model}?{query}", body, headers)

    def train(self, model: str, params: dict[str, Any]) -> dict[str, Any]:
        """POST /train/<model>, then poll GET /train/ until the task leaves RUNNING (bounded)."""
        self.request("POST", f"/train/{model}", json.dumps(params).encode(), {"Content-Type": "application/json"})
        deadline = time.monotonic() + TRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            task = self.request("GET", "/train/")
            if task.get("status") not in ("SUBMITTED", "RUNNING"):
                return task
            time.sleep(2.0)
        raise AssertionError(f"training did not finish within {TRAIN_TIMEOUT_S:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self._log_handle.close()


def _bundle_prediction(bundle: Path, image: Path, centre_mm: list[float], folder: Path) -> dict[str, str]:
    """The bundle's own prediction (`monai.bundle run` of its inference.json, no naslung) for one centre."""
    folder.mkdir(parents=True)
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps([{"image": str(image), "center_mm": centre_mm, "nodule_id": "n"}]))
    with open(run_bundle_inference(bundle, datalist, folder / "out"), newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["error"] == "", row
    return row


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_nodule(nodule: dict[str, Any], reference: dict[str, str], centre_mm: list[float], voxel) -> None:
    assert nodule["error"] == "", nodule
    assert np.allclose(nodule["center_voxel"], voxel, atol=1e-3), nodule
    assert np.allclose(nodule["center_mm"], centre_mm, atol=1e-3), nodule
    probability = nodule["probability"]
    assert 0.0 <= probability <= 1.0
    assert abs(probability - float(reference["probability"])) < TOLERANCE, (nodule, reference)
    # and relative: the tiny test networks give probabilities far below TOLERANCE, too small to tell cubes apart
    assert probability == pytest.approx(float(reference["probability"]), rel=RELATIVE_TOLERANCE), (nodule, reference)
    assert nodule["prediction"] == int(reference["prediction"])
    assert nodule["label"] == ("malignant" if nodule["prediction"] == 1 else "benign")
    assert nodule["scores"]["malignant"] == pytest.approx(probability, abs=1e-6)
    assert nodule["scores"]["benign"] == pytest.approx(1.0 - probability, abs=1e-5)


def test_monailabel_server_infers_and_fine_tunes(exported, scan_case, tmp_path):
    venv = _venv()
    app = tmp_path / "app"  # a copy: start_server writes logs/, model/ and bin/ into the app folder
    shutil.copytree(bundle_sources_dir() / "monailabel", app, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    studies, roi = _make_studies(tmp_path, scan_case)
    classifier, ensemble = Path(exported["classifier"]).resolve(), Path(exported["ensemble"]).resolve()
    work_dir = tmp_path / "work"
    conf = {"bundles": f"{classifier},{ensemble}", "work_dir": str(work_dir)}
    centre_mm = [float(v) for v in scan_case.centre_mm]
    expected = {
        "naslung_classifier": _bundle_prediction(classifier, scan_case.nifti, centre_mm, tmp_path / "ref_c"),
        "naslung_ensemble": _bundle_prediction(ensemble, scan_case.nifti, centre_mm, tmp_path / "ref_e"),
    }
    server = _Server(venv, app, studies, conf, tmp_path / "server.log")
    try:
        info = server.wait_ready()
        assert set(info["models"]) == {"naslung_classifier", "naslung_ensemble"}, info["models"]
        assert info["models"]["naslung_classifier"]["type"] == "classification"
        assert info["models"]["naslung_classifier"]["labels"] == {"benign": 0, "malignant": 1}
        assert set(info["trainers"]) == {"naslung_classifier", "naslung_ensemble"}

        # a clicked point (MONAI Label's `foreground` voxel indices), then the same nodule outlined by a label ROI
        for model, reference in expected.items():
            clicked = server.infer(model, "scan", {"foreground": [list(SCAN_PEAK)]})
            (nodule,) = clicked["nodules"]
            _check_nodule(nodule, reference, centre_mm, SCAN_PEAK)
            assert nodule["source"] == "foreground"
            outlined = server.infer(model, "scan", {}, label=roi)
            (roi_nodule,) = outlined["nodules"]
            _check_nodule(roi_nodule, reference, centre_mm, SCAN_PEAK)
            assert roi_nodule["source"] == "label" and roi_nodule["voxels"] > 100
        ensemble_nodule = server.infer("naslung_ensemble", "scan", {"foreground": [list(SCAN_PEAK)]})["nodules"][0]
        reference = expected["naslung_ensemble"]
        assert ensemble_nodule["n_members"] == 2
        assert ensemble_nodule["votes"] == int(reference["votes"])
        assert ensemble_nodule["vote_fraction"] == pytest.approx(float(reference["vote_fraction"]))
        members = json.loads(reference["member_probabilities"])
        assert np.allclose(ensemble_nodule["member_probabilities"], members, rtol=RELATIVE_TOLERANCE, atol=TOLERANCE)

        # several clicks give one answer each; a click outside the image is refused (the reason is logged)
        both = server.infer("naslung_classifier", "scan", {"foreground": [list(SCAN_PEAK), [40, 8, 30]]})
        assert [n["nodule_id"] for n in both["nodules"]] == ["click_0", "click_1"]
        first, second = both["nodules"]
        reference = expected["naslung_classifier"]
        assert first["probability"] == pytest.approx(float(reference["probability"]), rel=RELATIVE_TOLERANCE)
        corner_mm = [-30.0 + 40 * 0.8, 10.0 + 8 * 0.8, -100.0 + 30 * 1.25]  # origin + index * spacing (identity axes)
        assert second["error"] == "" and np.allclose(second["center_mm"], corner_mm, atol=1e-3), second
        with pytest.raises(AssertionError, match="HTTP 500"):  # MONAI Label answers its exceptions without detail
            server.infer("naslung_classifier", "scan", {"foreground": [[100, 5, 5]]})
        assert server.wait_log("foreground point 0 [100.0, 5.0, 5.0] lies outside the image")

        # fine-tune one epoch on the datastore's labelled nodules: the classifier, then each ensemble member
        for model, weights in (
            ("naslung_classifier", ["model.pt"]),
            ("naslung_ensemble", ["member_0.pt", "member_1.pt"]),
        ):
            copy = work_dir / "models" / model
            before = {name: _sha256(copy / "models" / name) for name in [*weights, "model.pt", "model.ts"]}
            task = server.train(model, {"max_epochs": 1, "val_split": 0.2})
            assert task["status"] == "DONE", (task, server.tail())
            assert all(_sha256(copy / "models" / name) != digest for name, digest in before.items()), model
            runs = list((work_dir / "train" / model).iterdir())
            assert len(runs) == 1 and len(list(runs[0].rglob("cubes/*.npy"))) == 6 * len(weights)
            tuned = _bundle_prediction(copy, scan_case.nifti, centre_mm, tmp_path / f"tuned_{model}")
            (nodule,) = server.infer(model, "scan", {"foreground": [list(SCAN_PEAK)]})["nodules"]
            _check_nodule(nodule, tuned, centre_mm, SCAN_PEAK)
    finally:
        server.stop()
