"""The environment of a bundle's own process (naslung.pipeline.export.checks.bundle_process_env)."""

from __future__ import annotations

import subprocess
import sys

from naslung.pipeline.export.checks import bundle_process_env, hide_naslung_code


def test_pythonpath_dependencies_reach_the_bundle_but_naslung_does_not(tmp_path, monkeypatch):
    """A dependency that comes from PYTHONPATH (a --target install, as on the lent GPU machine where MONAI's
    ckpt_export failed with "No module named 'monai'") is importable in the bundle's process; naslung is still
    hidden there, even when the same path holds a copy of it."""
    site = tmp_path / "site"
    (site / "naslung").mkdir(parents=True)
    (site / "naslung" / "__init__.py").write_text("")
    (site / "bundle_dependency.py").write_text("VALUE = 41 + 1\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    env = bundle_process_env({"EXTRA_SETTING": "1"})
    assert env["PYTHONPATH"] == str(site) and env["EXTRA_SETTING"] == "1" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    code = "import os, bundle_dependency; print(bundle_dependency.VALUE, os.environ['EXTRA_SETTING'])\nimport naslung"
    result = subprocess.run(
        [sys.executable, "-c", hide_naslung_code() + code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.stdout.split() == ["42", "1"]
    assert result.returncode != 0 and "naslung is hidden" in result.stderr
