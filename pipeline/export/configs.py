"""A bundle's configs: naslung's training config and the inference template made to use the bundle's own code."""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Iterable, Sequence
from typing import Any

from monai.bundle import ConfigParser

from naslung.pipeline.errors import ConfigError
from naslung.pipeline.export.run_content import BundleMember
from naslung.pipeline.export.scripts import SCRIPTS_TARGET, module_source

__all__ = [
    "to_bundle_refs",
    "require_scripts",
    "scripts_imports_as_items",
    "LAYOUT_TARGETS",
    "network_kind",
    "member_network_kwargs",
    "bundle_network_def",
    "member_train_config",
    "bundle_train_config",
    "bundle_inference_config",
    "iter_components",
]


_NASLUNG_REF = re.compile(r"(?<![\w.])naslung\.(?=[A-Za-z_])")


def to_bundle_refs(value: Any) -> Any:
    """Replace ``naslung.`` module references in a config by ``scripts.naslung_bundle.`` ones, recursively."""
    if isinstance(value, dict):
        return {k: to_bundle_refs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_bundle_refs(v) for v in value]
    if isinstance(value, str):
        return _NASLUNG_REF.sub(SCRIPTS_TARGET, value)
    return value


def require_scripts(value: Any) -> Any:
    """Give each component built from ``scripts`` a ``_requires_`` on ``@scripts_path`` (bundle_root on sys.path)."""
    if isinstance(value, list):
        return [require_scripts(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: require_scripts(v) for k, v in value.items()}
    if str(out.get("_target_", "")).startswith("scripts.") and "_requires_" not in out:
        out["_requires_"] = "@scripts_path"
    return out


def scripts_imports_as_items(config: dict[str, Any]) -> dict[str, Any]:
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
                project = module.replace(SCRIPTS_TARGET, "naslung.", 1)
                target = (
                    f"load_bundle_module({module!r})"
                    if module_source(project)
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


#: The factory function a training config's ``network_def`` names.
_FACTORY_TARGET = "naslung.networks.build_network"
#: The class a spec member's ``network_def`` builds in a bundle, by ``layout`` (the factory's own choice,
#: :data:`naslung.networks.factory.LAYOUTS`), so that the bundle need not ship the factory and the baselines.
LAYOUT_TARGETS: dict[str, str] = {
    "naslung": "naslung.networks.cbam_resnet.CBAMResNet3D",
    "reference": "naslung.networks.reference_convres.ReferenceConvRes3D",
}


def _member_network(member: BundleMember) -> tuple[str, dict[str, Any], str]:
    """(the target of the member's ``network_def``, its arguments with every reference resolved and a spec's
    ``name_or_spec`` without spaces, its kind as :func:`network_kind` returns it), from one parse of the config."""
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
    target = definition["_target_"]
    if not str(kwargs.get("name_or_spec", "")).strip().startswith("["):
        return target, kwargs, "factory"
    kwargs["name_or_spec"] = str(kwargs["name_or_spec"]).replace(" ", "")
    if target != _FACTORY_TARGET:
        return target, kwargs, "factory"
    layout = kwargs.get("layout") or "naslung"
    if layout not in LAYOUT_TARGETS:
        raise ConfigError(
            f"{member.fold_dir / 'config.json'}: network_def layout {layout!r} is not one of {sorted(LAYOUT_TARGETS)}"
        )
    return target, kwargs, str(layout)


def network_kind(member: BundleMember) -> str:
    """``"naslung"`` or ``"reference"`` for a member built from a spec by the factory (its ``layout``), else
    ``"factory"`` (a baseline, or a ``network_def`` with another target): the keys of
    :data:`naslung.pipeline.export.scripts.NETWORK_KIND_MODULES`."""
    return _member_network(member)[2]


def _layout_network_def(definition: dict[str, Any], kind: str) -> dict[str, Any]:
    """A factory ``network_def`` of a spec as the layout class's own: ``name_or_spec`` becomes ``arch``."""
    if kind not in LAYOUT_TARGETS:
        return dict(definition)
    out = {"_target_": LAYOUT_TARGETS[kind]}
    for key, value in definition.items():
        if key == "name_or_spec":
            out["arch"] = value
        elif key not in ("_target_", "layout"):
            out[key] = value
    return out


def member_network_kwargs(member: BundleMember) -> dict[str, Any]:
    """The arguments of the member's ``network_def`` as its training config gives them, every reference resolved
    (for a spec, :func:`naslung.networks.build_network`'s ``name_or_spec`` without spaces): what ``metadata.json``
    records and what the smoke check builds the member from with naslung."""
    return _member_network(member)[1]


def bundle_network_def(member: BundleMember) -> dict[str, Any]:
    """The member's ``network_def`` with every reference resolved, its target made a bundle one: a spec's
    layout class (:data:`LAYOUT_TARGETS`), or the factory for a baseline."""
    target, kwargs, kind = _member_network(member)
    resolved = _layout_network_def({"_target_": target, **kwargs}, kind)
    return {"_target_": to_bundle_refs(resolved.pop("_target_")), "_requires_": "@scripts_path", **resolved}


def member_train_config(member: BundleMember) -> dict[str, Any]:
    """The member's training config with its ``network_def`` as in :func:`bundle_network_def` (references kept)."""
    config = copy.deepcopy(member.config)
    config["network_def"] = _layout_network_def(config["network_def"], network_kind(member))
    return config


def bundle_train_config(members: Sequence[BundleMember], overlay: dict[str, Any], ensemble: bool) -> dict[str, Any]:
    """naslung's training config of the (first) member, with the bundle's data, weights and code."""
    config = to_bundle_refs(member_train_config(members[0]))
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
    for handler in iter_components(config):
        if handler.get("_target_") == "TensorBoardStatsHandler":
            handler.setdefault("_disabled_", "$find_spec('tensorboard') is None")
    return require_scripts(scripts_imports_as_items(config))


def iter_components(value: Any) -> Iterable[dict[str, Any]]:
    """Every config component (a dict with ``_target_``) in ``value``, depth first."""
    if isinstance(value, dict):
        if "_target_" in value:
            yield value
        for item in value.values():
            yield from iter_components(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_components(item)


def bundle_inference_config(template: dict[str, Any], defs: Sequence[dict[str, Any]], ensemble: bool) -> dict[str, Any]:
    """The bundle's ``inference.json``: the template with the network(s); an ensemble loads each member's weights."""
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
