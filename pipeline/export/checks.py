"""Checks of an exported bundle: MONAI's ckpt_export and verification in a process without naslung, and the bundle
specification's and model zoo's layout rules."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.export.configs import iter_components
from naslung.pipeline.export.models import load_state_dict_file

__all__ = ["MAX_FILE_BYTES", "hide_naslung_code", "bundle_process_env", "export_and_verify", "check_bundle_layout"]

logger = logging.getLogger(__name__)


#: Model-zoo's limit on one file in a bundle; larger files must be listed in ``large_files.yml`` with a URL.
MAX_FILE_BYTES = 25 * 1024 * 1024


_LARGE_FILE_CONFIGS = ("large_files.yml", "large_files.yaml", "large_files.json")


_ABSOLUTE_PATH = re.compile(r"^(/|[A-Za-z]:[\\/]|~)|(/home/|/root/|/Users/|/tmp/|\\Users\\)")


def hide_naslung_code() -> str:
    """Python source that, run first in a process, makes ``import naslung`` fail there (and drops the cwd from
    ``sys.path``); the export and :func:`run_bundle_inference` use it to prove a bundle needs no naslung."""
    return (
        "import importlib.abc, sys\n"
        "class _NoNaslung(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'naslung' or name.startswith('naslung.'):\n"
        "            raise ModuleNotFoundError(f'{name} is hidden: a bundle must not need naslung')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NoNaslung())\n"
        "sys.path[:] = [p for p in sys.path if p not in ('', '.')]\n"
    )


def bundle_process_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a bundle's own Python process: this one's, with ``extra`` on top and no bytecode written.

    ``PYTHONPATH`` stays: where MONAI, PyTorch or Ignite come from it (a cluster's module system, a ``--target``
    install), the bundle needs it too, and :func:`hide_naslung_code` keeps naslung out whatever the path holds.
    """
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(extra or {})}


_EXPORT_SCRIPT = """
import json, sys
from monai.bundle import ckpt_export, verify_metadata, verify_net_in_out
root, schema, jobs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
meta, config = f"{root}/configs/metadata.json", f"{root}/configs/inference.json"
for job in jobs:
    ckpt_export(net_id=job["net_id"], filepath=f"{root}/{job['ts']}", ckpt_file=f"{root}/{job['pt']}",
                meta_file=meta, config_file=config, bundle_root=root)
verify_metadata(meta_file=meta, filepath=schema)
verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, bundle_root=root, device="cpu")
"""


def export_and_verify(bundle: Path, jobs: list[dict[str, str]], schema: Path) -> None:
    """Run MONAI's ckpt_export for each model, verify_metadata and verify_net_in_out in a naslung-free subprocess."""
    env = bundle_process_env()
    command = [sys.executable, "-c", hide_naslung_code() + _EXPORT_SCRIPT]
    command += [str(bundle.resolve()), str(schema.resolve())]
    with tempfile.TemporaryDirectory(prefix="naslung-bundle-") as workdir:
        result = subprocess.run(
            [*command, json.dumps(jobs)], cwd=workdir, env=env, capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise ConfigError(f"MONAI's ckpt_export/verification of the bundle {bundle} failed:\n{tail}")
    logger.info("TorchScript exported and bundle verified: %s", [job["ts"] for job in jobs])


def _config_strings(value: Any, where: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _config_strings(item, f"{where}#{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _config_strings(item, f"{where}#{index}")
    elif isinstance(value, str):
        yield where, value


def _config_file(folder: Path, stem: str) -> Path | None:
    for suffix in (".json", ".yaml", ".yml"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def check_bundle_layout(bundle_dir: str | os.PathLike) -> list[str]:
    """Check a bundle against MONAI's bundle specification and the MONAI model-zoo's rules.

    The rules (model-zoo ``ci/verify_bundle.py`` and ``CONTRIBUTING.md``): ``configs/metadata.json`` and
    ``LICENSE`` exist; ``models/model.pt``, an inference config and ``docs/README.md`` are present; the metadata
    holds the mandatory keys, a ``schema`` URL, and its ``version`` appears in ``changelog``; the inference config
    defines ``bundle_root``, ``device``, ``network_def``, ``inferer`` and ``output_dir``; a training config defines
    ``bundle_root``, ``device``, ``dataset_dir``, ``output_dir`` and the ``train``/``validate`` components, and
    uses ``@val_interval`` in its ``ValidationHandler``; config strings hold no absolute or personal paths; no
    file exceeds 25 MB unless ``large_files.yml`` lists it with a URL; ``models/model.pt`` is a plain
    ``state_dict``; no compiled Python files are shipped. naslung's own rule: ``configs/inference_onnx.json`` and
    the ``models/model.onnx`` it runs come together.

    Args:
        bundle_dir: the bundle's root folder.

    Returns:
        the problems found, empty when the bundle passes.
    """
    root = Path(bundle_dir)
    problems: list[str] = []
    for name in ("configs/metadata.json", "LICENSE", "models/model.pt", "docs/README.md"):
        if not (root / name).is_file():
            problems.append(f"missing {name}")
    inference = _config_file(root / "configs", "inference")
    if inference is None:
        problems.append("missing configs/inference.json (or .yaml)")
    onnx_config = (root / "configs" / "inference_onnx.json").is_file()
    onnx_model = (root / "models" / "model.onnx").is_file()
    if onnx_config != onnx_model:
        have, lack = ("configs/inference_onnx.json", "models/model.onnx")[:: 1 if onnx_config else -1]
        problems.append(f"{have} without {lack}; export the bundle again")
    metadata: dict[str, Any] = {}
    if (root / "configs/metadata.json").is_file():
        try:
            metadata = json.loads((root / "configs/metadata.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            problems.append(f"configs/metadata.json is not valid JSON ({err})")
    if metadata:
        mandatory = (
            *("version", "changelog", "schema", "monai_version", "pytorch_version", "numpy_version"),
            *("optional_packages_version", "task", "description", "authors", "copyright", "network_data_format"),
        )
        problems += [f"metadata lacks {key!r}" for key in mandatory if key not in metadata]
        if "version" in metadata and metadata["version"] not in metadata.get("changelog", {}):
            problems.append(f"metadata version {metadata['version']!r} is not in its changelog")
        for side in ("inputs", "outputs"):
            if not metadata.get("network_data_format", {}).get(side):
                problems.append(f"metadata network_data_format has no {side}")
    configs: dict[str, Any] = {}
    for path in sorted((root / "configs").glob("*")):
        if path.suffix.lower() in (".json", ".yaml", ".yml"):
            try:
                configs[path.name] = ConfigParser.load_config_file(path)
            except Exception as err:  # noqa: BLE001 - JSON and YAML errors differ
                problems.append(f"configs/{path.name} cannot be read ({err})")
    if inference is not None and inference.name in configs:
        keys = configs[inference.name]
        problems += [
            f"{inference.name} lacks {key!r}"
            for key in ("bundle_root", "device", "network_def", "inferer", "output_dir")
            if key not in keys
        ]
    train = _config_file(root / "configs", "train")
    if train is not None and train.name in configs:
        problems += _train_config_problems(train.name, configs[train.name])
    for name, config in configs.items():
        for where, text in _config_strings(config):
            if _ABSOLUTE_PATH.search(text):
                problems.append(f"{name}: {where} holds an absolute or personal path {text!r}; use @bundle_root")
    listed = _large_files(root)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if path.suffix == ".pyc" or "__pycache__" in path.parts:
            problems.append(f"compiled Python file shipped: {relative}")
        if path.stat().st_size > MAX_FILE_BYTES and relative not in listed:
            problems.append(f"{relative} exceeds 25 MB and is not listed with a URL in large_files.yml")
    if (root / "models/model.pt").is_file():
        try:
            load_state_dict_file(root / "models/model.pt")
        except DataError as err:
            problems.append(str(err))
    return problems


def _train_config_problems(name: str, config: dict[str, Any]) -> list[str]:
    required = ("bundle_root", "device", "dataset_dir", "output_dir")
    problems = [f"{name} lacks {key!r}" for key in required if key not in config]
    sections = {
        "train": ("trainer", "dataset", "handlers"),
        "validate": ("evaluator", "dataset", "handlers"),
    }
    for section, keys in sections.items():
        part = config.get(section)
        if part is None:
            continue
        problems += [f"{name} lacks {section}#{key}" for key in keys if key not in part]
        if isinstance(part.get("dataset"), dict) and "data" not in part["dataset"]:
            problems.append(f"{name} lacks {section}#dataset#data")
    trainer = config.get("train", {}).get("trainer", {})
    if isinstance(trainer, dict) and "max_epochs" not in trainer:
        problems.append(f"{name} lacks train#trainer#max_epochs")
    for component in iter_components(config):
        if component.get("_target_") == "ValidationHandler":
            if "val_interval" not in config or component.get("interval") != "@val_interval":
                problems.append(f"{name}: ValidationHandler must use interval '@val_interval' with a val_interval key")
    return problems


def _large_files(root: Path) -> set[str]:
    listed: set[str] = set()
    for name in _LARGE_FILE_CONFIGS:
        if (root / name).is_file():
            content = ConfigParser.load_config_file(root / name) or {}
            listed.update(str(item.get("path")) for item in content.get("large_files", []) if item.get("url"))
    return listed
