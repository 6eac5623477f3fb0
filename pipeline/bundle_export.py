"""The ``export-bundle`` step: a trained network, or the ensemble, of a run directory as a self-contained MONAI bundle.

Sources live in the repository's ``bundles/`` folder (config templates, README templates, LICENSE, the metadata
JSON schema and the bundle's runtime code); the step adds the trained weights, fills in the metadata (versions,
architecture, held-out metrics, latency), copies a declared list of naslung modules (the inference runtime, then what
fine-tuning adds) into ``scripts/naslung_bundle/`` with relative imports, exports TorchScript with
``monai.bundle ckpt_export`` in a subprocess that cannot import naslung and ONNX (``models/model.onnx``, run by
``configs/inference_onnx.json`` on ONNX Runtime), and verifies the result (metadata schema, network input/output,
ONNX against PyTorch, model-zoo layout rules).
"""

from __future__ import annotations

import ast
import copy
import csv
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser

from naslung.bundles.runtime.onnx_predictor import OnnxPredictor
from naslung.networks.export import to_onnx
from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.errors import ConfigError, DataError
from naslung.pipeline.metrics import BINARY_METRICS, DEFAULT_THRESHOLD
from naslung.pipeline.progress import Progress, no_progress
from naslung.pipeline.run.layout import CHECKPOINT, CV_METRICS, FOLD_CONFIG, RunLayout, fold_dir_name, spec_slug
from naslung.pipeline.search.journal import read_selected_specs
from naslung.pipeline.steps import fingerprint, is_done, mark_done

__all__ = [
    "SCHEMA_URL",
    "BUNDLE_PACKAGE",
    "INFERENCE_MODULES",
    "FINE_TUNING_MODULES",
    "BUNDLE_MODULES",
    "BUNDLE_PACKAGE_EXPORTS",
    "RUNTIME_MODULES",
    "BUNDLE_REQUIREMENTS",
    "MAX_FILE_BYTES",
    "ONNX_TOLERANCE",
    "BundleMember",
    "ExportedBundle",
    "bundle_sources_dir",
    "local_schema_path",
    "trained_members",
    "resolve_member",
    "default_members",
    "rewrite_naslung_imports",
    "generate_bundle_scripts",
    "check_bundle_layout",
    "export_bundle",
    "hide_naslung_code",
    "run_bundle_inference",
    "smoke_test_bundle",
]

logger = logging.getLogger(__name__)

#: MONAI's published metadata schema named in every exported ``metadata.json`` (checked online by MONAI's tools).
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
#: Package under the bundle's ``scripts/`` folder that holds the copied naslung code.
BUNDLE_PACKAGE = "naslung_bundle"
#: The bundle's inference runtime, copied into ``scripts/naslung_bundle/``: the networks a spec (or MC3-18, or a MONAI
#: baseline) is built from with its head, the cube transform and scan reader, and the bundle runtime
#: (``bundles/runtime/``). None imports ``naslung.pipeline``, the supernet, the search or, at import, Ignite.
INFERENCE_MODULES: tuple[str, ...] = (
    "naslung.networks.errors",
    "naslung.networks.spec",
    "naslung.networks.heads",
    "naslung.networks.initialisation",
    "naslung.networks.blocks.cbam",
    "naslung.networks.blocks.residual",
    "naslung.networks.blocks.reference_cbam",
    "naslung.networks.blocks.reference_residual",
    "naslung.networks.staged_network",
    "naslung.networks.cbam_resnet",
    "naslung.networks.reference_convres",
    "naslung.networks.mc3",
    "naslung.networks.factory",
    "naslung.transforms.nodule_cube",
    "naslung.transforms.readers",
    "naslung.bundles.runtime",
    "naslung.bundles.runtime.atomic_files",
    "naslung.bundles.runtime.decisions",
    "naslung.bundles.runtime.fold_split",
    "naslung.bundles.runtime.nodule_inputs",
    "naslung.bundles.runtime.ensemble",
    "naslung.bundles.runtime.prediction_writer",
    "naslung.bundles.runtime.onnx_predictor",
)
#: What ``train.json`` (fine-tuning a bundle, e.g. in the MONAI Label app) adds: the losses, the training transforms
#: and naslung's training config components (metric handlers, learning-rate schedule, inferer, handlers), which still
#: live in ``naslung.pipeline``; only ``train.json`` imports them.
FINE_TUNING_MODULES: tuple[str, ...] = (
    "naslung.networks.losses",
    "naslung.transforms.pipelines",
    "naslung.pipeline",
    "naslung.pipeline.errors",
    "naslung.pipeline.atomic_io",
    "naslung.pipeline.progress",
    "naslung.pipeline.config_files",
    "naslung.pipeline.datalists",
    "naslung.pipeline.steps",
    "naslung.pipeline.metrics",
    "naslung.pipeline.handlers",
    "naslung.pipeline.inferers",
    "naslung.pipeline.run",
    "naslung.pipeline.run.config",
    "naslung.pipeline.run.layout",
    "naslung.pipeline.training",
)
#: Every module a bundle's ``scripts/naslung_bundle/`` holds (a fixed list: nothing is added by following imports).
BUNDLE_MODULES: tuple[str, ...] = (*INFERENCE_MODULES, *FINE_TUNING_MODULES)
#: Packages whose ``__init__`` in the bundle is generated, re-exporting only these names (naslung's own ``__init__``
#: imports the whole package: the supernet, ONNX export, profiling): ``{package: {module: names}}``.
BUNDLE_PACKAGE_EXPORTS: dict[str, dict[str, tuple[str, ...]]] = {
    "naslung.networks": {
        "naslung.networks.spec": ("DEFAULT_KERNEL", "ArchSpec"),
        "naslung.networks.cbam_resnet": ("CBAMResNet3D",),
        "naslung.networks.factory": ("BASELINES", "build_network", "registered_name"),
        "naslung.networks.losses": ("build_loss",),
    },
    "naslung.networks.blocks": {
        "naslung.networks.blocks.cbam": ("CBAMBlock",),
        "naslung.networks.blocks.residual": ("ResidualBlock",),
    },
    "naslung.transforms": {
        "naslung.transforms.nodule_cube": ("HU_WINDOW", "ExtractNoduleCube"),
        "naslung.transforms.readers": ("SimpleITKReader",),
        "naslung.transforms.pipelines": ("eval_transforms", "train_transforms"),
    },
}
#: Runtime modules of the bundle (sources in ``bundles/runtime/``) that its configs name.
RUNTIME_MODULES: tuple[str, ...] = (
    "naslung.bundles.runtime.nodule_inputs",
    "naslung.bundles.runtime.prediction_writer",
    "naslung.bundles.runtime.ensemble",
    "naslung.bundles.runtime.onnx_predictor",
)
#: Third-party imports allowed at module level in the copied code -> their distribution names.
BUNDLE_REQUIREMENTS: dict[str, str] = {
    "monai": "monai",
    "torch": "torch",
    "numpy": "numpy",
    "ignite": "pytorch-ignite",
    "scipy": "scipy",
    "SimpleITK": "SimpleITK",
    "nibabel": "nibabel",
}
#: Model-zoo's limit on one file in a bundle; larger files must be listed in ``large_files.yml`` with a URL.
MAX_FILE_BYTES = 25 * 1024 * 1024
#: Largest accepted difference between ``models/model.onnx`` on ONNX Runtime and the PyTorch network at export
#: (logits of a classifier, relative to their size beyond 1; probabilities of an ensemble).
ONNX_TOLERANCE = 1e-4
_LARGE_FILE_CONFIGS = ("large_files.yml", "large_files.yaml", "large_files.json")
_SCRIPTS_TARGET = f"scripts.{BUNDLE_PACKAGE}."
_NASLUNG_REF = re.compile(r"(?<![\w.])naslung\.(?=[A-Za-z_])")
_ABSOLUTE_PATH = re.compile(r"^(/|[A-Za-z]:[\\/]|~)|(/home/|/root/|/Users/|/tmp/|\\Users\\)")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_STATE_DICT_HINT = "a plain state_dict (the `best_model.pt` naslung train writes)"


@dataclass
class ExportedBundle:
    """What :func:`export_bundle` made; usable as a path (``Path(result)``, ``os.fspath(result)``).

    Args:
        path: the bundle folder.
        kind: ``"classifier"`` or ``"ensemble"``.
        members: ``{"slug", "spec", "weights"}`` of each shipped network.
        eval_metrics: the held-out metrics written into the metadata.
        latency_ms_per_nodule: median CPU latency of the network(s), one thread, batch 1.
        skipped: the bundle was already up to date.
    """

    path: Path
    kind: str
    members: list[dict[str, str]]
    eval_metrics: dict[str, Any]
    latency_ms_per_nodule: float
    skipped: bool = False

    def __fspath__(self) -> str:
        return str(self.path)


@dataclass
class BundleMember:
    """One trained network going into a bundle.

    Args:
        slug: folder name under ``RUN/train`` (:func:`naslung.pipeline.training.spec_slug`).
        spec: the architecture spec (paper notation) or network name from the fold's config.
        fold_dir: the fold folder whose weights are shipped (``all`` when trained without a test fold).
        weights: its ``checkpoints/best_model.pt`` (a plain ``state_dict``).
        config: the merged training config used for that fold (``config.json``).
        cv_metrics: ``RUN/train/<slug>/cv_metrics.json`` (held-out test metrics per fold), or None.
    """

    slug: str
    spec: str
    fold_dir: Path
    weights: Path
    config: dict[str, Any]
    cv_metrics: dict[str, Any] | None


# ---------------------------------------------------------------------------------------------------- sources


def bundle_sources_dir() -> Path:
    """The folder of the bundle sources: the installed ``naslung.bundles`` package data, else the repository's.

    Raises:
        ConfigError: when neither holds ``classifier/configs/inference.json``.
    """
    candidates: list[Path] = []
    try:
        from importlib import resources

        candidates.append(Path(str(resources.files("naslung.bundles"))))
    except (ModuleNotFoundError, TypeError):
        pass
    candidates.append(Path(__file__).resolve().parents[1] / "bundles")
    for folder in candidates:
        if (folder / "classifier" / "configs" / "inference.json").is_file():
            return folder
    raise ConfigError(
        f"bundle sources not found (looked in {[str(c) for c in candidates]}); reinstall naslung with its bundles/ "
        "folder (package data naslung.bundles)"
    )


def local_schema_path() -> Path:
    """naslung's JSON schema of ``metadata.json`` (from MONAI's bundle specification), for offline checks."""
    return bundle_sources_dir() / "schema" / "meta_schema.json"


# ------------------------------------------------------------------------------------------------ run content


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON ({err})", path=str(path)) from None


def trained_members(run_dir: str | os.PathLike) -> list[str]:
    """Slugs under ``RUN/train`` with at least one finished fold's weights (``checkpoints/best_model.pt``), sorted."""
    return [slug for slug, network in RunLayout(Path(run_dir)).trained().items() if network.weight_dirs]


def resolve_member(run_dir: str | os.PathLike, slug: str, fold: int | None = None) -> BundleMember:
    """Find the weights and config of a trained network in ``RUN/train/<slug>``.

    Without ``fold`` the network trained on all data (``all/``, :func:`train_fold` with ``test_fold=None``) is
    shipped when present, else the fold with the lowest number; the bundle states which.

    Args:
        run_dir: the run directory.
        slug: folder under ``RUN/train`` (a spec string is turned into its slug).
        fold: ship this held-out fold's model (``fold_<k>``).

    Raises:
        ConfigError: the network or fold was not trained (the message lists what was).
    """
    layout = RunLayout(Path(run_dir))
    if slug.strip().startswith("["):
        slug = spec_slug(slug)
    train_dir = layout.train_dir / slug
    if not train_dir.is_dir():
        raise ConfigError(
            f"no trained network {slug!r} in {layout.train_dir}; trained: {trained_members(layout.root) or 'none'} "
            "(run `naslung train` first)"
        )
    network = layout.trained().get(slug)
    names = [fold_dir_name(fold)] if fold is not None else list(network.weight_dirs if network else ())
    for folder in (train_dir / name for name in names):
        weights = folder / CHECKPOINT
        if weights.is_file() and (folder / FOLD_CONFIG).is_file():
            config = _read_json(folder / FOLD_CONFIG)
            cv_path = train_dir / CV_METRICS
            cv_metrics = _read_json(cv_path) if cv_path.is_file() else None
            return BundleMember(slug, str(config.get("arch", slug)), folder, weights, config, cv_metrics)
    what = f"fold {fold}" if fold is not None else "any fold"
    raise ConfigError(f"{train_dir}: {what} has no checkpoints/best_model.pt and config.json; finish training first")


def default_members(run_dir: str | os.PathLike, ensemble: bool) -> list[str]:
    """The networks a bundle ships when ``--member`` is not given.

    A single-network bundle takes the only trained network, else the first spec of ``RUN/search/selected.json``
    that was trained (the search picks on validation data, never on test folds). An ensemble takes the members
    listed in ``RUN/ensemble/metrics.json`` (key ``members``), else the trained specs of ``selected.json``, else
    every trained network.

    Raises:
        ConfigError: no trained network, an ambiguous choice, or fewer than two ensemble members.
    """
    run = Path(run_dir)
    trained = trained_members(run)
    if not trained:
        raise ConfigError(f"no trained network in {run / 'train'}; run `naslung train` first")
    selected = [s for s in (spec_slug(spec) for spec in read_selected_specs(run)) if s in trained]
    if not ensemble:
        if len(trained) == 1:
            return trained
        if selected:
            return selected[:1]
        raise ConfigError(f"{len(trained)} trained networks ({trained}); choose one with --member SLUG")
    members: list[str] = []
    metrics_path = RunLayout(run).ensemble_metrics
    if metrics_path.is_file():
        listed = _read_json(metrics_path)
        listed = listed.get("members", []) if isinstance(listed, dict) else []
        for entry in listed:
            name = str(entry.get("slug") or entry.get("spec", "")) if isinstance(entry, dict) else str(entry)
            members.append(spec_slug(name) if name.strip().startswith("[") else name)
    members = members or selected or trained
    if len(members) < 2:
        raise ConfigError(f"an ensemble needs at least two trained networks, found {members}; train more specs")
    return members


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def _cv_eval_metrics(cv_metrics: dict[str, Any] | None) -> dict[str, Any]:
    """Mean and std of the held-out test metrics over folds from ``cv_metrics.json`` (NaN left out)."""
    if not cv_metrics:
        return {}
    summary = cv_metrics.get("summary") or {}
    metrics: dict[str, Any] = {}
    for name in BINARY_METRICS:
        for stat in ("mean", "std"):
            value = summary.get(f"{name}_{stat}")
            if _finite_number(value):
                metrics[f"{name}_{stat}"] = float(value)
    if metrics:
        metrics["n_folds"] = int(summary.get("n_folds", len(cv_metrics.get("folds", []))))
        metrics["test_folds"] = [int(f) for f in cv_metrics.get("folds", [])]
    return metrics


def _ensemble_eval_metrics(run: Path) -> dict[str, Any]:
    """Held-out metrics of the ensemble from ``RUN/ensemble/metrics.json`` (top level or under a summary key)."""
    path = run / "ensemble" / "metrics.json"
    if not path.is_file():
        return {}
    content = _read_json(path)
    if not isinstance(content, dict):
        return {}
    for scope in (content, *(content.get(k) for k in ("summary", "ensemble", "test", "metrics"))):
        if not isinstance(scope, dict):
            continue
        found = {
            key: float(scope[key])
            for name in BINARY_METRICS
            for key in (name, f"{name}_mean", f"{name}_std")
            if _finite_number(scope.get(key))
        }
        if found:
            folds = content.get("folds")
            if isinstance(folds, list):
                found.update(n_folds=len(folds), test_folds=[int(f) for f in folds])
            return found
    return {}


@dataclass
class _DataDescription:
    kind: str  # "embedded", "lidc" or "other"
    sources: list[str]
    n_nodules: int
    n_malignant: int
    n_patients: int


def _describe_data(run: Path) -> _DataDescription:
    manifest = run / "data" / "manifest.csv"
    if not manifest.is_file():
        return _DataDescription("other", [], 0, 0, 0)
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    sources = sorted({(row.get("source") or "").strip() or "unknown" for row in rows})
    lowered = [s.lower() for s in sources]
    if lowered and all(s == "embedded" for s in lowered):
        kind = "embedded"
    elif any("lidc" in s or "luna" in s for s in lowered):
        kind = "lidc"
    else:
        kind = "other"
    malignant = sum(1 for row in rows if str(row.get("label", "")).strip() == "1")
    patients = len({row.get("patient_id", "") for row in rows})
    return _DataDescription(kind, sources, len(rows), malignant, patients)


# ------------------------------------------------------------------------------------------------ code copying


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bundle_parts(module: str) -> list[str]:
    """``naslung.networks.spec`` -> ``["networks", "spec"]``; ``naslung.bundles.runtime.x`` -> ``["runtime", "x"]``."""
    parts = module.split(".")
    if parts[0] != "naslung":
        raise ConfigError(f"{module!r} is not a naslung module")
    parts = parts[1:]
    if parts[:1] == ["bundles"]:
        parts = parts[1:]
    return parts


def _module_source(module: str) -> tuple[Path, bool] | None:
    """(source file, is package) of a naslung module, or None when there is no such module."""
    parts = module.split(".")
    if parts[:2] == ["naslung", "bundles"]:
        folder = bundle_sources_dir().joinpath(*parts[2:])
        if len(parts) > 2 and (folder / "__init__.py").is_file():
            return folder / "__init__.py", True
        if len(parts) > 2 and folder.with_suffix(".py").is_file():
            return folder.with_suffix(".py"), False
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ModuleNotFoundError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin), spec.submodule_search_locations is not None


def _imported_naslung_modules(module: str, source: str, is_package: bool) -> set[str]:
    """Every naslung module ``source`` imports (absolute or relative, at any depth), submodules of ``from`` too."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "naslung")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "naslung":
                continue
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if _module_source(f"{base}.{alias.name}"))
    return found


def rewrite_naslung_imports(source: str, module: str, is_package: bool = False) -> str:
    """Make ``from naslung.x import y`` statements relative imports inside the bundle package.

    Args:
        source: the module's source code.
        module: its dotted naslung name (``naslung.networks.spec``, ``naslung.bundles.runtime.ensemble``).
        is_package: whether it is a package's ``__init__``.

    Returns:
        the source with ``from naslung.pipeline.errors import X`` in, e.g., ``naslung.networks.blocks.cbam``
        turned into ``from ...pipeline.errors import X``.

    Raises:
        ConfigError: for ``import naslung...`` statements, which have no relative form.
    """
    parts = _bundle_parts(module)
    package_depth = len(parts) if is_package else len(parts) - 1
    lines = source.splitlines(keepends=True)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "naslung" for a in node.names):
            raise ConfigError(
                f"{module}: line {node.lineno} uses `import naslung...`; write `from naslung.x import y` so the "
                "bundle export can make it relative"
            )
        if not isinstance(node, ast.ImportFrom) or node.level or (node.module or "").split(".")[0] != "naslung":
            continue
        target = ".".join(_bundle_parts(node.module or "naslung"))
        relative = "." * (package_depth + 1) + target
        index = node.lineno - 1
        line = lines[index]
        head, tail = line[: node.col_offset], line[node.col_offset :]
        new_tail, count = re.subn(r"^from\s+naslung(?:\.[\w.]+)?(?=\s+import\b)", f"from {relative}", tail)
        if count != 1:
            raise ConfigError(f"{module}: cannot rewrite the import on line {node.lineno}: {line.strip()!r}")
        lines[index] = head + new_tail
    rewritten = "".join(lines)
    for node in ast.walk(ast.parse(rewritten)):
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "naslung":
            raise ConfigError(f"{module}: an absolute naslung import is left on line {node.lineno}")
    return rewritten


def _module_level_imports(source: str) -> set[str]:
    """Top-level packages imported at module level (not inside functions), absolute imports only."""
    names: set[str] = set()
    tree = ast.parse(source)
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, (ast.If, ast.Try)):
            pending.extend(ast.iter_child_nodes(node))
    return names


def _config_modules(config: Any) -> set[str]:
    """naslung modules named in a config's strings (``_target_`` values, ``$`` expressions, imports)."""
    found: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)
        elif isinstance(value, str):
            if value.startswith("$") and "import" in value:
                try:
                    found.update(_imported_naslung_modules("naslung", value[1:], True))
                except SyntaxError:
                    pass
            for match in re.finditer(r"(?<![\w.])naslung(?:\.\w+)+", value):
                parts = match.group(0).split(".")
                for end in range(len(parts), 1, -1):
                    candidate = ".".join(parts[:end])
                    if _module_source(candidate):
                        found.add(candidate)
                        break

    visit(config)
    return found


def _undeclared_imports(module: str, source: str, is_package: bool) -> list[str]:
    """The naslung imports of ``module`` (at any depth) that the bundle does not hold: modules outside
    :data:`BUNDLE_MODULES`, or names a generated package (:data:`BUNDLE_PACKAGE_EXPORTS`) does not export."""
    package = module if is_package else module.rpartition(".")[0]
    declared = set(BUNDLE_MODULES) | {"naslung", "naslung.bundles"}
    problems: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            problems += [
                f"line {node.lineno}: {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] == "naslung" and alias.name not in declared
            ]
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base_parts = package.split(".")
            base = ".".join(base_parts[: len(base_parts) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if base.split(".")[0] != "naslung":
            continue
        exported = {name for names in BUNDLE_PACKAGE_EXPORTS.get(base, {}).values() for name in names}
        for alias in node.names:
            full = f"{base}.{alias.name}"
            if full in declared or (base in declared and not _module_source(full)):
                continue
            if base in BUNDLE_PACKAGE_EXPORTS and alias.name in exported:
                continue
            problems.append(f"line {node.lineno}: {full}")
    return problems


def _package_init(package: str, exports: dict[str, tuple[str, ...]]) -> str:
    """The generated ``__init__`` of ``package`` in the bundle: relative imports of the declared names only."""
    lines = [
        f'"""Generated by `naslung export-bundle`: the names of {package} that this bundle\'s code and configs use."""',
        "",
    ]
    names: list[str] = []
    for module, module_names in exports.items():
        lines.append(f"from .{module.rpartition('.')[2]} import {', '.join(module_names)}")
        names += module_names
    lines += ["", f"__all__ = {names!r}".replace("'", '"'), ""]
    return "\n".join(lines)


def generate_bundle_scripts(
    scripts_dir: str | os.PathLike, config_modules: Iterable[str] = (), naslung_version: str = ""
) -> list[str]:
    """Copy the declared naslung modules a bundle runs (:data:`BUNDLE_MODULES`) into ``scripts_dir/naslung_bundle``.

    The list is fixed: :data:`INFERENCE_MODULES` (what ``inference.json`` needs) and :data:`FINE_TUNING_MODULES`
    (what ``train.json`` adds). Nothing is added by following imports; instead, a copied module that imports a naslung
    module outside the list, or a config naming one, is an error. ``naslung.a.b`` lands in ``naslung_bundle/a/b.py``
    (``naslung.bundles.runtime.x`` in ``naslung_bundle/runtime/x.py``) with its naslung imports made relative
    (:func:`rewrite_naslung_imports`; the runtime sits one level higher in the bundle than in naslung, so the one
    rewrite cannot be avoided). The ``__init__`` of :data:`BUNDLE_PACKAGE_EXPORTS` packages is generated;
    ``scripts/__init__.py`` makes ``scripts`` the package MONAI bundles import from ``bundle_root``.

    Args:
        scripts_dir: the bundle's ``scripts`` folder (created).
        config_modules: naslung modules the bundle's configs name; each must be in the bundle.
        naslung_version: recorded in the package docstring.

    Returns:
        the copied module names, sorted.

    Raises:
        ConfigError: a module is missing or not in the list while something imports it, uses ``import naslung...``,
            or imports at module level a third-party package outside :data:`BUNDLE_REQUIREMENTS`.
    """
    target = Path(scripts_dir)
    declared = set(BUNDLE_MODULES) | set(BUNDLE_PACKAGE_EXPORTS) | {"naslung", "naslung.bundles"}
    outside_list = sorted(set(config_modules) - declared)
    if outside_list:
        raise ConfigError(
            f"the bundle's configs use {outside_list}, which the bundle does not ship; add them to "
            "naslung.pipeline.bundle_export.FINE_TUNING_MODULES (or INFERENCE_MODULES) with what they import"
        )
    allowed = set(BUNDLE_REQUIREMENTS) | set(sys.stdlib_module_names) | {"__future__"}
    package_root = target / BUNDLE_PACKAGE
    for module in BUNDLE_MODULES:
        found = _module_source(module)
        if found is None:
            raise ConfigError(
                f"module {module!r} listed in naslung.pipeline.bundle_export.BUNDLE_MODULES was not found"
            )
        path, is_package = found
        source = path.read_text(encoding="utf-8")
        undeclared = _undeclared_imports(module, source, is_package)
        if undeclared:
            raise ConfigError(
                f"{module} imports {undeclared}, which a bundle does not ship; add the module to "
                "naslung.pipeline.bundle_export.BUNDLE_MODULES (or the name to BUNDLE_PACKAGE_EXPORTS), or import "
                "it from a module that is shipped"
            )
        outside = sorted(_module_level_imports(source) - allowed - {"naslung"})
        if outside:
            raise ConfigError(
                f"{module} imports {outside} at module level; a bundle may only need {sorted(BUNDLE_REQUIREMENTS)}: "
                "move the import into the function that uses it"
            )
        parts = _bundle_parts(module)
        destination = package_root.joinpath(*parts, "__init__.py") if is_package else package_root.joinpath(*parts)
        if not is_package:
            destination = destination.with_suffix(".py")
        destination.parent.mkdir(parents=True, exist_ok=True)
        header = f"# Generated by `naslung export-bundle` from {module}; edit naslung, not this copy.\n"
        destination.write_text(header + rewrite_naslung_imports(source, module, is_package), encoding="utf-8")
    for package, exports in BUNDLE_PACKAGE_EXPORTS.items():
        init = package_root.joinpath(*_bundle_parts(package), "__init__.py")
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_text(_package_init(package, exports), encoding="utf-8")
    for folder in sorted({p.parent for p in package_root.rglob("*.py")} | {package_root}):
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text(f'"""Generated by `naslung export-bundle`: {folder.name} of the bundle code."""\n')
    listing = ", ".join(sorted(BUNDLE_MODULES))
    (package_root / "__init__.py").write_text(
        f'"""naslung {naslung_version} code used by this bundle\'s configs, copied at export time with relative '
        f'imports:\n{listing}."""\n'
    )
    (target / "__init__.py").write_text('"""Custom code of this MONAI bundle (imported from ``bundle_root``)."""\n')
    return sorted(BUNDLE_MODULES)


# ------------------------------------------------------------------------------------------------ configs


def _to_bundle_refs(value: Any) -> Any:
    """Replace ``naslung.`` module references in a config by ``scripts.naslung_bundle.`` ones, recursively."""
    if isinstance(value, dict):
        return {k: _to_bundle_refs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_bundle_refs(v) for v in value]
    if isinstance(value, str):
        return _NASLUNG_REF.sub(_SCRIPTS_TARGET, value)
    return value


def _require_scripts(value: Any) -> Any:
    """Give each component built from ``scripts`` a ``_requires_`` on ``@scripts_path`` (bundle_root on sys.path)."""
    if isinstance(value, list):
        return [_require_scripts(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _require_scripts(v) for k, v in value.items()}
    if str(out.get("_target_", "")).startswith("scripts.") and "_requires_" not in out:
        out["_requires_"] = "@scripts_path"
    return out


def _scripts_imports_as_items(config: dict[str, Any]) -> dict[str, Any]:
    """Turn ``$from scripts... import x as y`` statements into config items ``y`` that first put the bundle on sys.path.

    MONAI evaluates every import statement of a config before anything else, so an import of the bundle's
    ``scripts`` package would run before ``bundle_root`` is on ``sys.path`` (``ConfigWorkflow.check_properties``,
    ``verify_net_in_out``). Each such statement becomes an item ``"y": "$(@scripts_path, load_bundle_module(...))[-1]"``
    and the expressions that use ``y`` refer to ``@y`` instead. (MONAI parses any expression containing the word
    "import" as a possible import statement, which fails on ``@`` references, hence the ``import_module`` alias.)
    """
    kept: list[Any] = []
    aliases: dict[str, str] = {}
    for statement in config.get("imports", []):
        node = None
        if isinstance(statement, str) and statement.startswith("$"):
            try:
                node = ast.parse(statement[1:]).body[0]
            except (SyntaxError, IndexError):
                node = None
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "scripts" and not node.level:
            for alias in node.names:
                module = f"{node.module}.{alias.name}"
                project = module.replace(_SCRIPTS_TARGET, "naslung.", 1)
                target = (
                    f"load_bundle_module({module!r})"
                    if _module_source(project)
                    else f"getattr(load_bundle_module({node.module!r}), {alias.name!r})"
                )
                aliases[alias.asname or alias.name] = f"$(@scripts_path, {target})[-1]"
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "scripts" for a in node.names):
            if any(a.asname is None for a in node.names):
                raise ConfigError(f"config import {statement!r}: give the scripts module an alias (`import x as y`)")
            for alias in node.names:
                aliases[str(alias.asname)] = f"$(@scripts_path, load_bundle_module({alias.name!r}))[-1]"
        else:
            kept.append(statement)
    if not aliases:
        return config
    clash = sorted(set(aliases) & set(config))
    if clash:
        raise ConfigError(f"config imports {clash} under names that are also config keys; rename the import alias")
    pattern = re.compile(r"(?<![\w.@'\"])(" + "|".join(map(re.escape, aliases)) + r")\b")

    def refer(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: refer(v) for k, v in value.items()}
        if isinstance(value, list):
            return [refer(v) for v in value]
        if isinstance(value, str) and value.startswith("$"):
            return pattern.sub(r"@\1", value)
        return value

    config = refer({k: v for k, v in config.items() if k != "imports"})
    config = {"imports": [*kept, "$from importlib import import_module as load_bundle_module"], **config}
    config.update(aliases)
    return config


def _add_imports(config: dict[str, Any], *statements: str) -> None:
    imports = list(config.get("imports", []))
    for statement in statements:
        if statement not in imports:
            imports.append(statement)
    config["imports"] = imports


def _network_def(member: BundleMember) -> dict[str, Any]:
    """The member's ``network_def`` with every reference resolved, its target made a bundle one."""
    config = member.config
    definition = config.get("network_def")
    if not isinstance(definition, dict) or "_target_" not in definition:
        raise ConfigError(f"{member.fold_dir / 'config.json'}: no network_def component to export")
    parser = ConfigParser(copy.deepcopy(config))
    kwargs: dict[str, Any] = {}
    for key in definition:
        if key.startswith("_"):
            continue
        value = parser.get_parsed_content(f"network_def#{key}", instantiate=False)
        kwargs[key] = value.to_list() if hasattr(value, "to_list") else value
    if str(kwargs.get("name_or_spec", "")).strip().startswith("["):
        kwargs["name_or_spec"] = str(kwargs["name_or_spec"]).replace(" ", "")
    target = _to_bundle_refs(definition["_target_"])
    return {"_target_": target, "_requires_": "@scripts_path", **kwargs}


def _build_project_network(network_def: dict[str, Any], weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The member as naslung builds it, with its weights loaded (strict), in eval mode."""
    target = network_def["_target_"].replace(_SCRIPTS_TARGET, "naslung.")
    kwargs = {k: v for k, v in network_def.items() if not k.startswith("_")}
    parser = ConfigParser({"net": {"_target_": target, **kwargs}})
    network = parser.get_parsed_content("net")
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"the weights do not fit the network {kwargs}: {err}") from err
    return network.eval()


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several kinds for unreadable files
        raise DataError(f"cannot load the weights ({err}); expected {_STATE_DICT_HINT}", path=str(path)) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"not {_STATE_DICT_HINT}", path=str(path))
    return state


def _train_config(members: Sequence[BundleMember], overlay: dict[str, Any], ensemble: bool) -> dict[str, Any]:
    """naslung's training config of the (first) member, with the bundle's data, weights and code."""
    config = _to_bundle_refs(copy.deepcopy(members[0].config))
    overlay = copy.deepcopy(overlay)
    if ensemble:
        overlay["members"] = [
            {key: member.config.get(key) for key in ("arch", "attention", "loss_name", "margin")} for member in members
        ]
    pretrained = overlay.pop("pretrained_loader", None)
    config.update(overlay)
    if pretrained is not None and isinstance(config.get("train"), dict):
        handlers = config["train"].get("handlers", [])
        config["train"]["handlers"] = [pretrained, *handlers]
    _add_imports(config, "$import os", "$import sys", "$import torch", "$from importlib.util import find_spec")
    for handler in _iter_components(config):
        if handler.get("_target_") == "TensorBoardStatsHandler":
            handler.setdefault("_disabled_", "$find_spec('tensorboard') is None")
    return _require_scripts(_scripts_imports_as_items(config))


def _iter_components(value: Any) -> Iterable[dict[str, Any]]:
    if isinstance(value, dict):
        if "_target_" in value:
            yield value
        for item in value.values():
            yield from _iter_components(item)
    elif isinstance(value, list):
        for item in value:
            yield from _iter_components(item)


def _inference_config(template: dict[str, Any], defs: Sequence[dict[str, Any]], ensemble: bool) -> dict[str, Any]:
    config = copy.deepcopy(template)
    if not ensemble:
        config["network_def"] = dict(defs[0])
        return config
    config["member_defs"] = [dict(d) for d in defs]
    loaders = [
        {
            "_target_": "CheckpointLoader",
            "load_path": f"$os.path.join(@bundle_root, 'models', 'member_{index}.pt')",
            "load_dict": {"model": f"$@network.members[{index}]"},
            "map_location": "@device",
        }
        for index in range(len(defs))
    ]
    config["handlers"] = [*loaders, "@writer"]
    return config


# ------------------------------------------------------------------------------------------------ docs


def _versions() -> dict[str, str]:
    import monai

    def version(distribution: str) -> str:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            return ""

    return {
        "monai": monai.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "naslung": version("naslung") or "unknown",
        **{name: version(name) for name in ("pytorch-ignite", "scipy", "SimpleITK", "nibabel", "onnxruntime")},
    }


def _render(template: str, values: dict[str, Any]) -> str:
    missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - set(values))
    if missing:
        raise ConfigError(f"README template placeholders without a value: {missing}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


def _data_texts(data: _DataDescription) -> dict[str, str]:
    counts = (
        f"{data.n_nodules} nodules ({data.n_malignant} malignant, {data.n_nodules - data.n_malignant} benign) of "
        f"{data.n_patients} patients"
    )
    if data.kind == "embedded":
        return {
            "data_source": f"naslung's embedded SYNTHETIC data set ({counts}): generated cubes, not patient data",
            "data_short": "naslung's embedded synthetic cubes, not real CT",
            "data_warning": (
                "> **Trained on synthetic data.** These weights come from naslung's embedded synthetic data set "
                "(`source` = `embedded` in the run's `data/manifest.csv`): generated cubes, not CT scans of "
                "patients. The bundle shows that the pipeline works; its predictions on real scans mean nothing."
            ),
            "data_section": (
                f"naslung's embedded synthetic data set: {counts}, generated by `naslung prepare embedded`. No "
                "patient data were used."
            ),
        }
    if data.kind == "lidc":
        return {
            "data_source": (
                f"LIDC-IDRI (The Cancer Imaging Archive, https://doi.org/10.7937/K9/TCIA.2015.L09QL9SX), "
                f"{', '.join(data.sources)}: {counts}"
            ),
            "data_short": "LIDC-IDRI CT scans",
            "data_warning": "",
            "data_section": (
                f"{counts} from LIDC-IDRI ({', '.join(data.sources)}), labels from the radiologists' malignancy "
                "ratings as prepared by `naslung prepare`; see `docs/data_license.txt`."
            ),
        }
    described = f"{', '.join(data.sources)}: {counts}" if data.n_nodules else "not recorded (no data/manifest.csv)"
    return {
        "data_source": f"data set {described}",
        "data_short": "the data set named in configs/metadata.json",
        "data_warning": "",
        "data_section": f"Data set {described}.",
    }


def _metrics_section(eval_metrics: dict[str, Any], protocol: str) -> str:
    rows = []
    for name in BINARY_METRICS:
        mean = eval_metrics.get(f"{name}_mean", eval_metrics.get(name))
        if mean is None:
            continue
        std = eval_metrics.get(f"{name}_std")
        rows.append(f"| {name} | {mean:.4f}" + (f" ± {std:.4f} |" if std is not None else " |"))
    if not rows:
        return f"Not measured: {protocol}"
    return "\n".join([protocol, "", "| metric | value |", "|---|---|", *rows])


def _write_sample_data(folder: Path, n_cubes: int = 4) -> None:
    """Synthetic example cubes and ``datalist.json``, the configs' default input (bright spheres, no patient data)."""
    folder.mkdir(parents=True, exist_ok=True)
    radius = np.sqrt(((np.mgrid[:32, :32, :32] - 15.5) ** 2).sum(axis=0))
    entries = []
    for index in range(n_cubes):
        label = index % 2
        cube = np.full((32, 32, 32), 0.12, dtype=np.float32)  # about -985 HU: lung parenchyma
        cube[radius < (7.0 if label else 3.5)] = 0.65  # about -30 HU: a soft-tissue nodule
        np.save(folder / f"synthetic_{index}.npy", cube)
        name = f"synthetic_{index}"
        entries.append({"image": f"{name}.npy", "label": label, "patient_id": name, "nodule_id": name})
    (folder / "datalist.json").write_text(json.dumps(entries, indent=2) + "\n")


class _EnsembleGraph(torch.nn.Module):
    """The ensemble as one ONNX graph: ``x`` (B, 1, D, H, W) -> the members' mean class probabilities (B, 2) and
    each member's probability of malignancy (B, n), as ``EnsembleClassifier``'s ``forward`` and
    ``member_probabilities`` compute them."""

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.stack([torch.softmax(member(x), dim=1) for member in self.members], dim=1)
        return probabilities.mean(dim=1), probabilities[:, :, 1]


def _export_onnx(networks: Sequence[torch.nn.Module], path: Path, ensemble: bool) -> OnnxPredictor:
    """Write ``models/model.onnx`` (atomically) and check it on ONNX Runtime against the PyTorch network(s).

    A classifier's graph returns the logits (B, 2); an ensemble's one graph returns ``probabilities`` (B, 2), the
    members' mean, and ``member_probabilities`` (B, n), which the ensemble's inferer reads.

    Returns:
        the bundle's :class:`~naslung.bundles.runtime.onnx_predictor.OnnxPredictor` of the file, one thread.

    Raises:
        ConfigError: the export fails, or ONNX Runtime differs from PyTorch by more than :data:`ONNX_TOLERANCE`.
    """
    model = _EnsembleGraph(networks).eval() if ensemble else networks[0]
    names = ("probabilities", "member_probabilities") if ensemble else ("logits",)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer warnings
            to_onnx(model, path, (1, 32, 32, 32), output_names=names)
    except Exception as err:  # noqa: BLE001 - the exporter raises many kinds
        raise ConfigError(f"ONNX export of the bundle's network to {path} failed: {err}") from err
    predictor = OnnxPredictor(path, num_threads=1)
    cubes = torch.rand((3, 1, 32, 32, 32), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(cubes)
        produced = predictor.outputs(cubes)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for name, reference in zip(names, expected, strict=True):
        difference = ((produced[name] - reference).abs() / reference.abs().clamp(min=1.0)).max().item()
        if not difference <= ONNX_TOLERANCE:
            raise ConfigError(
                f"{path}: ONNX Runtime's {name!r} differs from PyTorch's by {difference:.2e} > {ONNX_TOLERANCE:g}; "
                "report the exporter issue (configs/inference.json, PyTorch, is unaffected)"
            )
    return predictor


def _latency_ms(networks: Sequence[torch.nn.Module]) -> float:
    from naslung.networks import fixed_threads, measure_latency_ms

    example = torch.rand(1, 1, 32, 32, 32)

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        return [network(x) for network in networks]

    with fixed_threads(1):
        return measure_latency_ms(run, example, warmup=2, repeats=7)


# ------------------------------------------------------------------------------------------------ checks


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


def _export_and_verify(bundle: Path, jobs: list[dict[str, str]], schema: Path) -> None:
    """Run MONAI's ckpt_export for each model, verify_metadata and verify_net_in_out in a naslung-free subprocess."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
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
            _load_state_dict(root / "models/model.pt")
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
    for component in _iter_components(config):
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


# ------------------------------------------------------------------------------------------------ the step


def _replace_dir(source: Path, target: Path) -> None:
    """Move the finished bundle ``source`` onto ``target`` by renames (an old bundle is removed after)."""
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


_NOT_BUNDLE_SOURCES = ("__pycache__", "monailabel")
"""Folders under ``bundles/`` that no exported bundle is made from (the MONAI Label app serves bundles)."""


def _sources_digest(sources: Path, modules: Iterable[str]) -> str:
    digest = hashlib.sha256()
    files = (p for p in sources.rglob("*") if p.is_file())
    for path in sorted(p for p in files if not set(p.relative_to(sources).parts) & set(_NOT_BUNDLE_SOURCES)):
        digest.update(path.relative_to(sources).as_posix().encode())
        digest.update(path.read_bytes())
    for module in sorted(modules):
        found = _module_source(module)
        if found:
            digest.update(module.encode())
            digest.update(found[0].read_bytes())
    return digest.hexdigest()


def export_bundle(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    ensemble: bool = False,
    members: Sequence[str] | None = None,
    fold: int | None = None,
    progress: Progress = no_progress,
) -> ExportedBundle:
    """Write a MONAI bundle of one trained network (or of the ensemble) of a run directory.

    The bundle holds ``configs/`` (``metadata.json``, ``inference.json``, ``evaluate.json``, ``train.json``),
    ``models/`` (``model.pt`` plain ``state_dict`` and ``model.ts``; for an ensemble also ``member_<i>.pt/.ts``),
    ``scripts/naslung_bundle/`` (the naslung code the configs use), ``docs/README.md``, ``docs/data_license.txt``
    and ``LICENSE``. It is built in a temporary folder, checked (:func:`check_bundle_layout`, MONAI's
    ``verify_metadata`` against naslung's schema, ``verify_net_in_out``) and then moved onto ``out_dir``; an
    export with unchanged inputs is skipped.

    Args:
        run_dir: the run directory (``RUN/train/<slug>/...``, ``RUN/data/manifest.csv``, ``RUN/ensemble``).
        out_dir: the bundle folder to write (replaced when it exists).
        ensemble: export the majority-vote ensemble instead of one network.
        members: slugs (or specs) of the networks to ship; default :func:`default_members`.
        fold: ship the models of this held-out fold instead of the ``all``/lowest fold.
        progress: progress reporter over the export stages.

    Returns:
        :class:`ExportedBundle` (path-like): the folder, kind, members, metrics, latency and whether it was skipped.

    Raises:
        ConfigError: missing or ambiguous trained networks, or a bundle that fails its checks.
        DataError: unreadable weights or run files.
    """
    run = Path(run_dir)
    out = Path(out_dir)
    sources = bundle_sources_dir()
    kind = "ensemble" if ensemble else "classifier"
    slugs = list(members) if members else default_members(run, ensemble)
    if not ensemble and len(slugs) != 1:
        raise ConfigError(f"a single-network bundle ships one network, got {slugs}; use --ensemble for several")
    if ensemble and len(slugs) < 2:
        raise ConfigError(f"an ensemble bundle needs at least two members, got {slugs}")
    chosen = [resolve_member(run, slug, fold) for slug in slugs]
    templates = sources / kind / "configs"
    inference_template = _read_json(templates / "inference.json")
    train_overlay = _read_json(templates / "train_overlay.json")
    defs = [_network_def(member) for member in chosen]
    inference = _require_scripts(_inference_config(inference_template, defs, ensemble))
    train = _train_config(chosen, train_overlay, ensemble)
    config_modules = _config_modules([m.config for m in chosen])
    data = _describe_data(run)
    ensemble_metrics = _ensemble_eval_metrics(run) if ensemble else {}
    versions = _versions()
    digest = fingerprint(
        kind,
        [(m.slug, str(m.fold_dir.relative_to(run)), _sha256(m.weights), m.config, m.cv_metrics) for m in chosen],
        ensemble_metrics,
        data.__dict__,
        _sources_digest(sources, BUNDLE_MODULES),
        {k: v for k, v in versions.items() if k != "naslung"},
    )
    marker_dir = out.parent / ".export_done" / out.name
    if is_done(marker_dir, digest) and (out / "configs" / "metadata.json").is_file():
        logger.info("%s is up to date; skipping", out)
        return ExportedBundle(path=out, **_read_json(marker_dir / "done.json")["summary"], skipped=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        summary = _build(work, run, kind, chosen, defs, inference, train, config_modules, data, ensemble_metrics,
                         versions, sources, progress)  # fmt: skip
        work.chmod(0o755)
        _replace_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    mark_done(marker_dir, digest, [], summary)
    logger.info("exported %s bundle to %s", kind, out)
    return ExportedBundle(path=out, **summary)


def _build(
    work: Path,
    run: Path,
    kind: str,
    chosen: Sequence[BundleMember],
    defs: Sequence[dict[str, Any]],
    inference: dict[str, Any],
    train: dict[str, Any],
    config_modules: set[str],
    data: _DataDescription,
    ensemble_metrics: dict[str, Any],
    versions: dict[str, str],
    sources: Path,
    progress: Progress,
) -> dict[str, Any]:
    ensemble = kind == "ensemble"
    stages = iter(progress(range(4), total=4, desc=f"export {kind} bundle"))
    next(stages, None)
    for folder in ("configs", "models", "docs", "scripts"):
        (work / folder).mkdir()
    shutil.copyfile(sources / "LICENSE", work / "LICENSE")
    _write_sample_data(work / "sample")
    modules = generate_bundle_scripts(work / "scripts", config_modules, versions["naslung"])

    # weights: plain state_dicts, checked against the network naslung builds from the same definition
    weights = [_load_state_dict(member.weights) for member in chosen]
    networks = [_build_project_network(d, w) for d, w in zip(defs, weights, strict=True)]
    jobs: list[dict[str, str]] = []
    if ensemble:
        combined: dict[str, torch.Tensor] = {}
        for index, state in enumerate(weights):
            torch.save(state, work / "models" / f"member_{index}.pt")
            combined.update({f"members.{index}.{key}": value for key, value in state.items()})
            files = {"pt": f"models/member_{index}.pt", "ts": f"models/member_{index}.ts"}
            jobs.append({"net_id": f"member_defs#{index}", **files})
        torch.save(combined, work / "models" / "model.pt")
    else:
        torch.save(weights[0], work / "models" / "model.pt")
    jobs.append({"net_id": "network_def", "pt": "models/model.pt", "ts": "models/model.ts"})
    onnx_predictor = _export_onnx(networks, work / "models" / "model.onnx", ensemble)
    next(stages, None)

    latency = _latency_ms(networks)
    onnx_latency = _latency_ms([onnx_predictor])
    parameters = [sum(p.numel() for p in network.parameters()) for network in networks]
    architectures = [
        {
            "slug": member.slug,
            "spec": member.spec,
            "network_def": {k: v for k, v in d.items() if not k.startswith("_")},
            "loss_name": member.config.get("loss_name"),
            "parameters": count,
            "weights": f"{member.fold_dir.name} of RUN/train/{member.slug}",
        }
        for member, d, count in zip(chosen, defs, parameters, strict=True)
    ]
    if ensemble:
        eval_metrics = ensemble_metrics
        protocol = (
            "Majority-vote ensemble, held-out test folds (`naslung ensemble`, RUN/ensemble/metrics.json): each "
            "member was trained without the fold it is tested on."
            if eval_metrics
            else "no ensemble metrics in RUN/ensemble/metrics.json; run `naslung ensemble` before exporting."
        )
    else:
        eval_metrics = _cv_eval_metrics(chosen[0].cv_metrics)
        folds = eval_metrics.get("test_folds", [])
        protocol = (
            f"Mean ± sample std over the held-out test folds {folds} of cross-validation (RUN/train/"
            f"{chosen[0].slug}/cv_metrics.json): each fold's model was trained, and its checkpoint chosen, without "
            f"its test fold. The shipped weights are the {chosen[0].fold_dir.name} model of that recipe."
            if eval_metrics
            else f"no cv_metrics.json in RUN/train/{chosen[0].slug}; train the spec on all folds to measure it."
        )
    texts = _data_texts(data)
    packages = ("pytorch-ignite", "scipy", "SimpleITK", "nibabel")
    requirements = {name: versions[name] for name in packages if versions[name]}
    metadata = _read_json(sources / kind / "configs" / "metadata.json")
    metadata.update(
        schema=SCHEMA_URL,
        monai_version=versions["monai"],
        pytorch_version=versions["torch"],
        numpy_version=versions["numpy"],
        # MONAI >= 1.4 reads optional_packages_version as the deprecated name of required_packages_version and
        # replaces one by the other, while the bundle specification still lists it: both hold the same packages
        required_packages_version=requirements,
        optional_packages_version=dict(requirements),
        data_source=texts["data_source"],
        eval_metrics=eval_metrics,
        eval_protocol=protocol,
        network_architecture=architectures if ensemble else architectures[0],
        latency_ms_per_nodule={
            "value": round(latency, 3),
            "onnxruntime": round(onnx_latency, 3),
            "device": "cpu",
            "threads": 1,
            "batch_size": 1,
        },
        inference_configs={
            "configs/inference.json": "PyTorch: the network built from scripts/ with models/model.pt",
            "configs/inference_onnx.json": (
                "overlay on inference.json: models/model.onnx on ONNX Runtime (CPU); needs onnxruntime "
                f"(exported with onnxruntime {versions['onnxruntime'] or 'unknown'})"
            ),
        },
        naslung_version=versions["naslung"],
        scripts_modules=modules,
    )
    metadata["description"] = _description(kind, chosen, texts["data_short"])
    write_json(work / "configs" / "metadata.json", metadata, indent=4)
    write_json(work / "configs" / "inference.json", inference, indent=4)
    shutil.copyfile(sources / kind / "configs" / "inference_onnx.json", work / "configs" / "inference_onnx.json")
    shutil.copyfile(sources / kind / "configs" / "evaluate.json", work / "configs" / "evaluate.json")
    write_json(work / "configs" / "train.json", train, indent=4)
    next(stages, None)

    license_name = {"embedded": "data_license_embedded.txt", "lidc": "data_license_lidc.txt"}.get(
        data.kind, "data_license_other.txt"
    )
    shutil.copyfile(sources / "docs" / license_name, work / "docs" / "data_license.txt")
    latency_text = (
        f"{latency:.2f} ms per nodule for the network{'s' if ensemble else ''} alone on PyTorch "
        f"(`inference.json`) and {onnx_latency:.2f} ms on ONNX Runtime (`inference_onnx.json`), one CPU thread "
        f"(batch 1, median, measured at export on the exporting machine); reading a scan and cutting the cube add "
        f"to this"
    )
    values = {
        "title": metadata["name"],
        "data_warning": texts["data_warning"],
        "data_section": texts["data_section"],
        "data_short": texts["data_short"],
        "metrics_section": _metrics_section(eval_metrics, protocol),
        "latency": latency_text,
        "threshold": DEFAULT_THRESHOLD,
        "naslung_version": versions["naslung"],
        "export_date": datetime.date.today().isoformat(),
        "monai_version": versions["monai"],
        "torch_version": versions["torch"],
    }
    if ensemble:
        values["n_members"] = len(chosen)
        values["members_table"] = "\n".join(
            ["| i | spec | attention | head / loss | parameters | weights |", "|---|---|---|---|---|---|"]
            + [
                f"| {i} | `{a['spec']}` | {a['network_def'].get('attention', '-')} | "
                f"{a['network_def'].get('head', '-')} / {a['loss_name']} | {a['parameters']:,} | {a['weights']} |"
                for i, a in enumerate(architectures)
            ]
        )
    else:
        first = architectures[0]
        values.update(
            arch=first["spec"],
            attention=first["network_def"].get("attention", "-"),
            head=first["network_def"].get("head", "-"),
            loss_name=first["loss_name"],
            loss_text="A-Softmax" if first["loss_name"] == "asoftmax" else "softmax cross-entropy",
            parameters=f"{first['parameters']:,}",
            weights_origin=first["weights"],
        )
    readme = _render((sources / "docs" / f"README_{kind}.md").read_text(encoding="utf-8"), values)
    (work / "docs" / "README.md").write_text(re.sub(r"\n{3,}", "\n\n", readme), encoding="utf-8")

    _export_and_verify(work, jobs, local_schema_path())
    problems = check_bundle_layout(work)
    if problems:
        raise ConfigError("the exported bundle breaks the bundle rules:\n  " + "\n  ".join(problems))
    next(stages, None)
    return {
        "kind": kind,
        "members": [{"slug": m.slug, "spec": m.spec, "weights": str(m.weights)} for m in chosen],
        "eval_metrics": eval_metrics,
        "latency_ms_per_nodule": latency,
    }


def _description(kind: str, chosen: Sequence[BundleMember], data_short: str) -> str:
    specs = ", ".join(m.spec for m in chosen)
    if kind == "ensemble":
        what = f"A majority-vote ensemble of {len(chosen)} NAS-Lung CBAM-3D residual networks ({specs})"
    else:
        what = f"A NAS-Lung CBAM-3D residual network ({specs})"
    return (
        f"{what} classifying a pulmonary nodule as benign or malignant from a 32x32x32 cube of 1 mm CT voxels "
        f"around its centre (Jiang et al., Pattern Recognition 2021), trained on {data_short}. Inference reads CT "
        "scans with nodule centres in world mm (LPS) or ready cubes and writes predictions.csv."
    )


# ------------------------------------------------------------------------------------------------ running


_HIDDEN_RUNNER = """
try:
    import naslung  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("naslung is importable in the bundle's process")
import runpy
sys.argv = ["monai.bundle", *sys.argv[1:]]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
"""


def run_bundle_inference(
    bundle_dir: str | os.PathLike,
    datalist: str | os.PathLike,
    output_dir: str | os.PathLike,
    extra_configs: Sequence[str] = (),
    hide_naslung: bool = True,
    timeout_s: float = 600.0,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """Run a bundle's ``configs/inference.json`` with ``python -m monai.bundle run`` in a fresh process.

    The process starts in an empty temporary folder; with ``hide_naslung`` it cannot import naslung (a
    meta-path blocker goes first), which proves the bundle is self-contained.

    Args:
        bundle_dir: the bundle root (passed as ``--bundle_root``).
        datalist: the JSON datalist (``--datalist``).
        output_dir: where ``predictions.csv`` goes (``--output_dir``).
        extra_configs: further config files merged after ``inference.json`` (e.g. ``configs/evaluate.json``, or
            ``configs/inference_onnx.json`` for ONNX Runtime), relative to the bundle root.
        hide_naslung: block ``import naslung`` in the process.
        timeout_s: wall-clock limit in seconds.
        overrides: further ``--key value`` arguments of ``monai.bundle run`` (config ids, e.g. ``batch_size``).
        env: environment variables set in the process on top of this one's (e.g. ``OMP_NUM_THREADS``).

    Returns:
        the path of ``predictions.csv``.

    Raises:
        ConfigError: the run failed (the message holds the end of its output) or timed out.
    """
    bundle = Path(bundle_dir).resolve()
    configs = [str(bundle / "configs" / "inference.json"), *(str(bundle / c) for c in extra_configs)]
    config_arg = configs[0] if len(configs) == 1 else json.dumps(configs)
    args = ["run", "--config_file", config_arg, "--bundle_root", str(bundle)]
    args += ["--datalist", str(Path(datalist).resolve()), "--output_dir", str(Path(output_dir).resolve())]
    for key, value in (overrides or {}).items():
        args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    if hide_naslung:
        command = [sys.executable, "-c", hide_naslung_code() + _HIDDEN_RUNNER, *args]
    else:
        command = [sys.executable, "-m", "monai.bundle", *args]
    process_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    process_env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory(prefix="naslung-bundle-run-") as workdir:
        try:
            result = subprocess.run(
                command, cwd=workdir, env=process_env, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise ConfigError(f"bundle inference of {bundle} took longer than {timeout_s:.0f} s") from err
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        names = " + ".join(Path(c).name for c in configs)
        raise ConfigError(f"bundle inference of {bundle} ({names}) failed:\n{tail}")
    csv_path = Path(output_dir) / "predictions.csv"
    if not csv_path.is_file():
        raise ConfigError(f"bundle inference of {bundle} wrote no {csv_path}")
    return csv_path


def smoke_test_bundle(
    bundle_dir: str | os.PathLike, data_dir: str | os.PathLike, n_nodules: int = 4, tolerance: float = 1e-4
) -> dict[str, Any]:
    """Run an exported bundle, without naslung, on a few cubes of the run's data and compare with naslung.

    The first ``n_nodules`` cubes of ``data_dir/manifest.csv`` go through the bundle's inference in a fresh
    process that cannot import naslung, once with ``inference.json`` (PyTorch) and once with
    ``inference_onnx.json`` (ONNX Runtime); naslung then predicts the same cubes with the same weights
    (:func:`naslung.pipeline.training.predict`, member probabilities averaged for an ensemble).

    Args:
        bundle_dir: the exported bundle.
        data_dir: the run's data folder (``manifest.csv`` and its cubes).
        n_nodules: how many cubes to run.
        tolerance: largest accepted difference of a probability.

    Returns:
        ``{"status": "ok" | "failed", "bundle", "n", "n_failed", "max_abs_difference", "onnx_max_abs_difference",
        "seconds", "problems"}`` (the differences are from naslung's probabilities).

    Raises:
        ConfigError: the bundle cannot be run at all.
        DataError: the manifest is missing or unreadable.
    """
    import time

    from naslung.pipeline.datalists import read_manifest
    from naslung.pipeline.training import predict

    bundle = Path(bundle_dir)
    items = read_manifest(Path(data_dir) / "manifest.csv")[: max(1, int(n_nodules))]
    metadata = _read_json(bundle / "configs" / "metadata.json")
    architectures = metadata.get("network_architecture")
    architectures = architectures if isinstance(architectures, list) else [architectures]
    if any(not isinstance(a, dict) or "network_def" not in a for a in architectures):
        raise ConfigError(f"{bundle}: metadata has no network_architecture; was it exported by naslung?")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="naslung-smoke-") as workdir:
        datalist = Path(workdir) / "datalist.json"
        datalist.write_text(json.dumps([{"image": d["image"], "nodule_id": d["nodule_id"]} for d in items]))
        csv_path = run_bundle_inference(bundle, datalist, Path(workdir) / "out")
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        onnx_rows: list[dict[str, str]] = []
        if (bundle / "configs" / "inference_onnx.json").is_file():
            onnx_csv = run_bundle_inference(bundle, datalist, Path(workdir) / "onnx", ["configs/inference_onnx.json"])
            with open(onnx_csv, newline="") as handle:
                onnx_rows = list(csv.DictReader(handle))
    seconds = time.perf_counter() - started
    if len(architectures) == 1:
        weight_files = [bundle / "models" / "model.pt"]
    else:
        weight_files = [bundle / "models" / f"member_{i}.pt" for i in range(len(architectures))]
    member_probabilities = []
    for architecture, weight_file in zip(architectures, weight_files, strict=True):
        definition = {"_target_": "naslung.networks.build_network", **architecture["network_def"]}
        network = _build_project_network(definition, _load_state_dict(weight_file))
        member_probabilities.append([r["probability"] for r in predict(network, items, "cpu")])
    expected = np.mean(np.asarray(member_probabilities, dtype=np.float64), axis=0)
    problems = [f"{row['nodule_id']}: {row['error']}" for row in rows if row.get("error")]
    pairs = zip(rows, expected, strict=False)
    differences = [abs(float(row["probability"]) - float(value)) for row, value in pairs if row.get("probability")]
    if len(rows) != len(items):
        problems.append(f"{len(rows)} rows for {len(items)} nodules")
    largest = max(differences) if differences else math.nan
    if differences and largest > tolerance:
        problems.append(f"bundle and naslung differ by {largest:.2e} > {tolerance:g}")
    onnx_differences = [
        abs(float(row["probability"]) - float(value))
        for row, value in zip(onnx_rows, expected, strict=False)
        if row.get("probability")
    ]
    onnx_largest = max(onnx_differences) if onnx_differences else math.nan
    if not onnx_rows:
        problems.append("no configs/inference_onnx.json (ONNX Runtime); export the bundle again")
    elif len(onnx_differences) != len(differences) or onnx_largest > tolerance:
        problems.append(
            f"inference_onnx.json: {len(onnx_differences)} probabilities, differing from naslung by up to "
            f"{onnx_largest:.2e} (tolerance {tolerance:g})"
        )
    return {
        "status": "ok" if not problems and differences else "failed",
        "bundle": str(bundle),
        "n": len(rows),
        "n_failed": sum(1 for row in rows if row.get("error")),
        "max_abs_difference": largest,
        "onnx_max_abs_difference": onnx_largest,
        "seconds": round(seconds, 2),
        "problems": problems,
    }
