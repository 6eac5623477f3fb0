"""The model-zoo rules checker, the import rewriting of copied code, and how bundle members are chosen."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from naslung.pipeline.errors import ConfigError
from naslung.pipeline.export.checks import MAX_FILE_BYTES, check_bundle_layout
from naslung.pipeline.export.run_content import default_members, resolve_member
from naslung.pipeline.export.scripts import rewrite_naslung_imports


def _remove(path: Path) -> None:
    path.unlink()


def _edit_json(relative: str, change):
    def apply(root: Path) -> None:
        path = root / relative
        content = json.loads(path.read_text(encoding="utf-8"))
        change(content)
        path.write_text(json.dumps(content))

    return apply


def _big_file(root: Path) -> None:
    with open(root / "models" / "extra.bin", "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)


#: (how to break the exported classifier bundle, a phrase the checker must report)
RULE_CASES = [
    [lambda root: _remove(root / "LICENSE"), "missing LICENSE"],
    [lambda root: _remove(root / "docs" / "README.md"), "missing docs/README.md"],
    [lambda root: _remove(root / "configs" / "inference.json"), "missing configs/inference.json"],
    [_edit_json("configs/metadata.json", lambda m: m.update(version="9.9.9")), "not in its changelog"],
    [_edit_json("configs/metadata.json", lambda m: m.pop("copyright")), "lacks 'copyright'"],
    [_edit_json("configs/inference.json", lambda c: c.pop("output_dir")), "lacks 'output_dir'"],
    [_edit_json("configs/inference.json", lambda c: c.update(output_dir="/home/me/out")), "absolute or personal path"],
    [_edit_json("configs/train.json", lambda c: c.pop("dataset_dir")), "lacks 'dataset_dir'"],
    [_edit_json("configs/train.json", lambda c: c.pop("val_interval")), "@val_interval"],
    [lambda root: torch.save({"model": {"w": torch.zeros(1)}}, root / "models" / "model.pt"), "plain state_dict"],
    [lambda root: (root / "scripts" / "x.pyc").write_bytes(b"\0"), "compiled Python"],
    [_big_file, "exceeds 25 MB"],
]


@pytest.mark.parametrize("breakage, phrase", RULE_CASES)
def test_rules_checker_reports_each_breach(exported, tmp_path, breakage, phrase):
    bundle = tmp_path / "bundle"
    shutil.copytree(Path(exported["classifier"]), bundle)
    assert check_bundle_layout(bundle) == []
    breakage(bundle)
    problems = check_bundle_layout(bundle)
    assert any(phrase in problem for problem in problems), problems


def test_large_file_listed_with_url_is_allowed(exported, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(Path(exported["classifier"]), bundle)
    _big_file(bundle)
    (bundle / "large_files.json").write_text(
        json.dumps({"large_files": [{"path": "models/extra.bin", "url": "https://example.org/extra.bin"}]})
    )
    assert check_bundle_layout(bundle) == []


REWRITE_CASES = [
    [
        "naslung.networks.blocks.cbam",
        False,
        "from naslung.pipeline.errors import ConfigError\n",
        "from ...pipeline.errors import ConfigError\n",
    ],
    [
        "naslung.transforms",
        True,
        "from naslung.transforms.nodule_cube import (\n    HU_WINDOW,\n)\n",
        "from ..transforms.nodule_cube import (\n    HU_WINDOW,\n)\n",
    ],
    [
        "naslung.bundles.runtime.ensemble",
        False,
        "def f():\n    from naslung.networks import ArchSpec\n    from .other import x\n",
        "def f():\n    from ..networks import ArchSpec\n    from .other import x\n",
    ],
    [
        "naslung.pipeline.metrics",
        False,
        "import numpy as np\nfrom monai import x\n",
        "import numpy as np\nfrom monai import x\n",
    ],
]


@pytest.mark.parametrize("module, is_package, source, expected", REWRITE_CASES)
def test_rewrite_naslung_imports(module, is_package, source, expected):
    assert rewrite_naslung_imports(source, module, is_package) == expected


def test_plain_import_of_naslung_is_refused():
    with pytest.raises(ConfigError, match="import naslung"):
        rewrite_naslung_imports("import naslung.networks\n", "naslung.pipeline.x")


def test_member_choice(bundle_run, tmp_path):
    with pytest.raises(ConfigError, match="--member"):
        default_members(bundle_run.root, ensemble=False)  # two trained networks, no search selection
    assert default_members(bundle_run.root, ensemble=True) == bundle_run.slugs  # from RUN/ensemble/metrics.json
    member = resolve_member(bundle_run.root, "[4,4,[4],[4],[4]]")  # a spec maps to its slug
    assert member.slug == bundle_run.slugs[0] and member.fold_dir.name == "fold_1"
    with pytest.raises(ConfigError, match="fold 3"):
        resolve_member(bundle_run.root, bundle_run.slugs[0], fold=3)
    with pytest.raises(ConfigError, match="no trained network"):
        resolve_member(bundle_run.root, "8-8_8_8_8")
    lone = tmp_path / "run"
    shutil.copytree(bundle_run.root / "train" / bundle_run.slugs[0], lone / "train" / bundle_run.slugs[0])
    assert default_members(lone, ensemble=False) == [bundle_run.slugs[0]]
    with pytest.raises(ConfigError, match="at least two"):
        default_members(lone, ensemble=True)
