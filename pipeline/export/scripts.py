"""The naslung code a bundle ships in ``scripts/naslung_bundle/``: the declared module lists and their copying with
relative imports."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from naslung.pipeline.errors import ConfigError
from naslung.pipeline.export.sources import bundle_sources_dir

__all__ = [
    "BUNDLE_PACKAGE",
    "SCRIPTS_TARGET",
    "INFERENCE_MODULES",
    "FINE_TUNING_MODULES",
    "BUNDLE_MODULES",
    "NETWORK_KIND_MODULES",
    "BUNDLE_PACKAGE_EXPORTS",
    "RUNTIME_MODULES",
    "BUNDLE_REQUIREMENTS",
    "bundle_modules",
    "bundle_package_exports",
    "module_source",
    "modules_named_in_configs",
    "rewrite_naslung_imports",
    "generate_bundle_scripts",
]


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
#: live in ``naslung.pipeline``; only ``train.json`` imports them. The schedule has a module of its own
#: (:mod:`naslung.pipeline.training.lr_schedule`) so that the training step, run layout and config loader stay out.
FINE_TUNING_MODULES: tuple[str, ...] = (
    "naslung.networks.losses",
    "naslung.networks.blocks.narrow_channels",
    "naslung.transforms.pipelines",
    "naslung.pipeline",
    "naslung.pipeline.errors",
    "naslung.pipeline.atomic_io",
    "naslung.pipeline.progress",
    "naslung.pipeline.data",
    "naslung.pipeline.data.datalists",
    "naslung.pipeline.metrics",
    "naslung.pipeline.training",
    "naslung.pipeline.training.handlers",
    "naslung.pipeline.training.inferers",
    "naslung.pipeline.training.lr_schedule",
)
#: Every module a bundle's ``scripts/naslung_bundle/`` can hold (a fixed list: nothing is added by following imports);
#: a bundle ships those of :func:`bundle_modules` for the kinds of network its members are.
BUNDLE_MODULES: tuple[str, ...] = (*INFERENCE_MODULES, *FINE_TUNING_MODULES)
#: The network modules of :data:`INFERENCE_MODULES` that only some bundles need, by the kind of network a member is:
#: a spec in naslung's layout (``"naslung"``, :class:`~naslung.networks.CBAMResNet3D`) needs none of them, one in the
#: authors' layout (``"reference"``) the reference blocks and net, and a factory baseline (``"factory"``: MONAI's
#: nets, MC3-18, built by :func:`~naslung.networks.build_network`) the factory, which imports every kind.
NETWORK_KIND_MODULES: dict[str, tuple[str, ...]] = {
    "naslung": (),
    "reference": (
        "naslung.networks.blocks.reference_cbam",
        "naslung.networks.blocks.reference_residual",
        "naslung.networks.reference_convres",
    ),
    "factory": (
        "naslung.networks.blocks.reference_cbam",
        "naslung.networks.blocks.reference_residual",
        "naslung.networks.reference_convres",
        "naslung.networks.mc3",
        "naslung.networks.factory",
    ),
}
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
#: Prefix of a bundle config's references to the copied code: ``naslung.x`` becomes ``scripts.naslung_bundle.x``.
SCRIPTS_TARGET = f"scripts.{BUNDLE_PACKAGE}."


def bundle_modules(network_kinds: Iterable[str]) -> tuple[str, ...]:
    """The modules a bundle whose members are networks of ``network_kinds`` ships (keys of
    :data:`NETWORK_KIND_MODULES`), in :data:`BUNDLE_MODULES` order.

    Raises:
        ConfigError: for an unknown kind.
    """
    kinds = set(network_kinds)
    unknown = sorted(kinds - set(NETWORK_KIND_MODULES))
    if unknown:
        raise ConfigError(f"unknown network kinds {unknown}; use {sorted(NETWORK_KIND_MODULES)}")
    optional = {module for modules in NETWORK_KIND_MODULES.values() for module in modules}
    wanted = {module for kind in kinds for module in NETWORK_KIND_MODULES[kind]}
    return tuple(module for module in BUNDLE_MODULES if module not in optional or module in wanted)


def bundle_package_exports(modules: Iterable[str]) -> dict[str, dict[str, tuple[str, ...]]]:
    """:data:`BUNDLE_PACKAGE_EXPORTS` without the names of modules a bundle does not ship."""
    shipped = set(modules)
    return {
        package: {module: names for module, names in exports.items() if module in shipped}
        for package, exports in BUNDLE_PACKAGE_EXPORTS.items()
    }


def _bundle_parts(module: str) -> list[str]:
    """``naslung.networks.spec`` -> ``["networks", "spec"]``; ``naslung.bundles.runtime.x`` -> ``["runtime", "x"]``."""
    parts = module.split(".")
    if parts[0] != "naslung":
        raise ConfigError(f"{module!r} is not a naslung module")
    parts = parts[1:]
    if parts[:1] == ["bundles"]:
        parts = parts[1:]
    return parts


def module_source(module: str) -> tuple[Path, bool] | None:
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
            found.update(f"{base}.{alias.name}" for alias in node.names if module_source(f"{base}.{alias.name}"))
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


def modules_named_in_configs(config: Any) -> set[str]:
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
                    if module_source(candidate):
                        found.add(candidate)
                        break

    visit(config)
    return found


def _undeclared_imports(
    module: str, source: str, is_package: bool, shipped: Iterable[str], exports: dict[str, dict[str, tuple[str, ...]]]
) -> list[str]:
    """The naslung imports of ``module`` (at any depth) that the bundle does not hold: modules outside ``shipped``,
    or names a generated package (``exports``, see :data:`BUNDLE_PACKAGE_EXPORTS`) does not export."""
    package = module if is_package else module.rpartition(".")[0]
    declared = set(shipped) | {"naslung", "naslung.bundles"}
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
        exported = {name for names in exports.get(base, {}).values() for name in names}
        for alias in node.names:
            full = f"{base}.{alias.name}"
            if full in declared or (base in declared and not module_source(full)):
                continue
            if base in exports and alias.name in exported:
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
    scripts_dir: str | os.PathLike,
    config_modules: Iterable[str] = (),
    naslung_version: str = "",
    modules: Sequence[str] = BUNDLE_MODULES,
) -> list[str]:
    """Copy the declared naslung modules a bundle runs into ``scripts_dir/naslung_bundle``.

    The list is fixed: :data:`INFERENCE_MODULES` (what ``inference.json`` needs) and :data:`FINE_TUNING_MODULES`
    (what ``train.json`` adds), less the network modules its members do not need (``modules``, from
    :func:`bundle_modules`). Nothing is added by following imports; instead, a copied module that imports a naslung
    module outside the list, or a config naming one, is an error. ``naslung.a.b`` lands in ``naslung_bundle/a/b.py``
    (``naslung.bundles.runtime.x`` in ``naslung_bundle/runtime/x.py``) with its naslung imports made relative
    (:func:`rewrite_naslung_imports`; the runtime sits one level higher in the bundle than in naslung, so the one
    rewrite cannot be avoided). The ``__init__`` of :data:`BUNDLE_PACKAGE_EXPORTS` packages is generated;
    ``scripts/__init__.py`` makes ``scripts`` the package MONAI bundles import from ``bundle_root``.

    Args:
        scripts_dir: the bundle's ``scripts`` folder (created).
        config_modules: naslung modules the bundle's configs name; each must be in the bundle.
        naslung_version: recorded in the package docstring.
        modules: the modules to ship, a subset of :data:`BUNDLE_MODULES` (default: all of them).

    Returns:
        the copied module names, sorted.

    Raises:
        ConfigError: a module is missing or not in the list while something imports it, uses ``import naslung...``,
            or imports at module level a third-party package outside :data:`BUNDLE_REQUIREMENTS`.
    """
    target = Path(scripts_dir)
    modules = tuple(modules)
    not_declared = sorted(set(modules) - set(BUNDLE_MODULES))
    if not_declared:
        raise ConfigError(f"{not_declared} are not in naslung.pipeline.export.scripts.BUNDLE_MODULES")
    exports = bundle_package_exports(modules)
    declared = set(modules) | set(exports) | {"naslung", "naslung.bundles"}
    outside_list = sorted(set(config_modules) - declared)
    if outside_list:
        raise ConfigError(
            f"the bundle's configs use {outside_list}, which the bundle does not ship; add them to "
            "naslung.pipeline.export.scripts.FINE_TUNING_MODULES (or INFERENCE_MODULES) with what they import"
        )
    allowed = set(BUNDLE_REQUIREMENTS) | set(sys.stdlib_module_names) | {"__future__"}
    package_root = target / BUNDLE_PACKAGE
    for module in modules:
        found = module_source(module)
        if found is None:
            raise ConfigError(
                f"module {module!r} listed in naslung.pipeline.export.scripts.BUNDLE_MODULES was not found"
            )
        path, is_package = found
        source = path.read_text(encoding="utf-8")
        undeclared = _undeclared_imports(module, source, is_package, modules, exports)
        if undeclared:
            raise ConfigError(
                f"{module} imports {undeclared}, which a bundle does not ship; add the module to "
                "naslung.pipeline.export.scripts.BUNDLE_MODULES (or the name to BUNDLE_PACKAGE_EXPORTS), or import "
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
    for package, package_exports in exports.items():
        init = package_root.joinpath(*_bundle_parts(package), "__init__.py")
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_text(_package_init(package, package_exports), encoding="utf-8")
    for folder in sorted({p.parent for p in package_root.rglob("*.py")} | {package_root}):
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text(f'"""Generated by `naslung export-bundle`: {folder.name} of the bundle code."""\n')
    listing = ", ".join(sorted(modules))
    (package_root / "__init__.py").write_text(
        f'"""naslung {naslung_version} code used by this bundle\'s configs, copied at export time with relative '
        f'imports:\n{listing}."""\n'
    )
    (target / "__init__.py").write_text('"""Custom code of this MONAI bundle (imported from ``bundle_root``)."""\n')
    return sorted(modules)
