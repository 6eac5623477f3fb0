"""The app's working copies of naslung bundles: copied once from the exported bundle, fine-tuned in place.

A working copy lives in ``WORK_DIR/models/<name>``; ``.source.json`` records the exported bundle and a digest of its
configs and weights, so a re-exported bundle replaces a stale copy (and its fine-tuned weights) at the next start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "SOURCE_RECORD",
    "bundle_digest",
    "working_copy",
    "is_ensemble",
    "bundle_parser",
    "use_bundle_scripts",
    "bundle_nodule_input",
    "install_weights",
]

logger = logging.getLogger(__name__)

#: File in a working copy naming the exported bundle it was copied from.
SOURCE_RECORD = ".source.json"


def bundle_digest(bundle: str | os.PathLike) -> str:
    """SHA-256 over a bundle's ``configs/`` and ``models/`` files (names and bytes)."""
    root = Path(bundle)
    digest = hashlib.sha256()
    for path in sorted(p for folder in ("configs", "models") for p in (root / folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def working_copy(source: str | os.PathLike, work_dir: str | os.PathLike, name: str) -> Path:
    """The working copy of ``source`` in ``work_dir/models/<name>``, (re)made when missing or stale.

    Raises:
        ValueError: ``source`` is not a bundle (no ``configs/inference.json`` and ``configs/metadata.json``).
    """
    bundle = Path(source).resolve()
    for required in ("configs/inference.json", "configs/metadata.json"):
        if not (bundle / required).is_file():
            raise ValueError(f"{bundle} is not a naslung bundle: {required} is missing (run `naslung export-bundle`)")
    target = Path(work_dir).resolve() / "models" / name
    record = {"source": str(bundle), "digest": bundle_digest(bundle)}
    record_path = target / SOURCE_RECORD
    if record_path.is_file():
        try:
            if json.loads(record_path.read_text(encoding="utf-8")) == record:
                return target
        except json.JSONDecodeError:
            pass
        logger.warning("%s changed since it was copied: replacing the working copy %s", bundle, target)
    staging = target.parent / f".{name}.copying"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "eval", "train_output"))
    (staging / SOURCE_RECORD).write_text(json.dumps(record), encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    logger.info("working copy of %s: %s", bundle, target)
    return target


def is_ensemble(bundle: str | os.PathLike) -> bool:
    """Whether the bundle is a naslung majority-vote ensemble (its inference config lists ``member_defs``)."""
    config = json.loads((Path(bundle) / "configs" / "inference.json").read_text(encoding="utf-8"))
    return "member_defs" in config


def bundle_parser(bundle: str | os.PathLike, config: str = "inference.json") -> Any:
    """A ``monai.bundle.ConfigParser`` of one of the bundle's configs with ``bundle_root`` set to the bundle."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(bundle) / "configs" / config))
    parser.config.update({"bundle_root": str(Path(bundle).resolve())})  # type: ignore[union-attr]
    return parser


def use_bundle_scripts(bundle: str | os.PathLike) -> None:
    """Make ``import scripts`` load this bundle's ``scripts`` package (every bundle names its code ``scripts``)."""
    path = str(Path(bundle).resolve())
    while path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[name]


def bundle_nodule_input(bundle: str | os.PathLike) -> Any:
    """The bundle's own cube transform (``NoduleInputd``, the first of its inference preprocessing)."""
    use_bundle_scripts(bundle)
    preprocessing = bundle_parser(bundle).get_parsed_content("preprocessing", instantiate=True)
    return preprocessing.transforms[0]


def install_weights(bundle: str | os.PathLike, member_states: Sequence[dict[str, torch.Tensor]]) -> list[str]:
    """Write fine-tuned weights into a working copy and export its TorchScript models again.

    Writes ``models/model.pt`` (a classifier's state_dict, or an ensemble's members under ``members.<i>.``) and, for
    an ensemble, ``models/member_<i>.pt``; then MONAI's ``ckpt_export`` rewrites the matching ``.ts`` files so
    they never disagree with the ``.pt`` files.

    Returns:
        the files written, relative to the bundle.

    Raises:
        ValueError: the number of states does not match the bundle.
    """
    from monai.bundle import ckpt_export

    root = Path(bundle).resolve()
    ensemble = is_ensemble(root)
    if not ensemble and len(member_states) != 1:
        raise ValueError(f"a classifier bundle takes one state_dict, got {len(member_states)}")
    jobs: list[tuple[str, str, str]] = []
    files: dict[str, dict[str, torch.Tensor]] = {}
    if ensemble:
        combined: dict[str, torch.Tensor] = {}
        for index, state in enumerate(member_states):
            files[f"models/member_{index}.pt"] = state
            combined.update({f"members.{index}.{key}": value for key, value in state.items()})
            jobs.append((f"member_defs#{index}", f"models/member_{index}.pt", f"models/member_{index}.ts"))
        files["models/model.pt"] = combined
    else:
        files["models/model.pt"] = dict(member_states[0])
    jobs.append(("network_def", "models/model.pt", "models/model.ts"))
    for relative, state in files.items():
        partial = root / f"{relative}.partial"
        torch.save(state, partial)
        os.replace(partial, root / relative)
    use_bundle_scripts(root)
    for net_id, weights, script in jobs:
        ckpt_export(
            net_id=net_id,
            filepath=str(root / script),
            ckpt_file=str(root / weights),
            meta_file=str(root / "configs" / "metadata.json"),
            config_file=str(root / "configs" / "inference.json"),
            bundle_root=str(root),
        )
    return sorted({*files, *(script for _, _, script in jobs)})
