"""``naslung run`` keeps known third-party noise off the console and in ``RUN/logs/run.log`` (issue 14, item 8)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

#: MONAI's warning, emitted each time a LoadImage transform is built without nvImageCodec.
NOISE = "NvImgCodecPydicomReader"


def test_run_prints_no_known_noise_and_logs_it(exported, bundle_run, tmp_path):
    """The smoke step predicts the run's cubes through MONAI's LoadImage, which warns; the console stays clean."""
    run_dir = tmp_path / "run"
    shutil.copytree(bundle_run.root, run_dir, ignore=shutil.ignore_patterns(".export_done"))
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # as a user's shell: warnings on, nothing pre-filtered
    result = subprocess.run(
        [sys.executable, "-m", "naslung.pipeline", "run", "--out", str(run_dir), "--steps", "smoke"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    assert "[smoke] inference bundles" in console  # one line per step
    assert NOISE not in console
    assert "nvImageCodec is not available" not in console
    log = (run_dir / "logs" / "run.log").read_text(encoding="utf-8")
    assert NOISE in log  # the full log keeps what the console drops
