"""One loader for naslung's configs: the training, search and evaluation configs, and the profiles of ``naslung run``.

Each config is its packaged JSON (``pipeline/configs/<kind>.json``, MONAI bundle syntax) updated by a user file or
mapping, then by overrides (MONAI ``#`` ids, ``"space#max_blocks": 5``); a key the packaged config does not have is
an error naming the key and where it came from. A profile holds one section per step of ``naslung run``; each
section is checked key by key against what its step takes, and the step receives it as it is.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from naslung.pipeline.config_files import packaged_config, read_config_file
from naslung.pipeline.errors import ConfigError

__all__ = [
    "CONFIG_FILES",
    "STEP_NAMES",
    "PROFILES",
    "PROFILE_SECTIONS",
    "PREPARE_KEYS",
    "TRAIN_STEP_KEYS",
    "PARALLEL_KEYS",
    "BASELINES_KEYS",
    "ENSEMBLE_KEYS",
    "EXPORT_KEYS",
    "config_keys",
    "merge_config",
    "check_section",
    "check_profile",
    "load_profile",
]

#: The packaged config of each kind, in ``pipeline/configs``.
CONFIG_FILES: dict[str, str] = {"train": "train.json", "search": "search.json", "evaluate": "evaluate.json"}
_KIND_NAMES = {"train": "training config", "search": "search config", "evaluate": "evaluation config"}
#: The steps of ``naslung run``, in order; a profile has a section for each step that takes settings.
STEP_NAMES: tuple[str, ...] = (
    "prepare",
    "search",
    "train",
    "baselines",
    "ensemble",
    "evaluate",
    "export-bundle",
    "smoke",
    "report",
)
#: Profiles shipped with naslung (``pipeline/configs/profile_<name>.json``).
PROFILES: tuple[str, ...] = ("quick", "standard", "paper")
#: Sections of a profile, in the order of the steps that read them.
PROFILE_SECTIONS: tuple[str, ...] = ("prepare", "search", "train", "baselines", "ensemble", "evaluate", "export")
#: Keys of the ``prepare`` section (the embedded data's rendering).
PREPARE_KEYS: tuple[str, ...] = ("subsample_nodules", "scans", "seed", "workers")
#: Keys of the ``train`` section that steer the step rather than the training config.
TRAIN_STEP_KEYS: tuple[str, ...] = ("parallel",)
#: Keys of ``train.parallel``: the executor of the (network, fold) jobs.
PARALLEL_KEYS: tuple[str, ...] = ("executor", "workers", "threads_per_job", "ray_address")
#: Keys of the ``baselines`` section: the factory networks and their training overrides.
BASELINES_KEYS: tuple[str, ...] = ("networks", "train")
#: Keys of the ``ensemble`` section: the keyword arguments of ``run_ensemble_step``.
ENSEMBLE_KEYS: tuple[str, ...] = ("members", "sizes", "draws", "seed", "threshold", "latency")
#: Keys of the ``export`` section: which bundles to export.
EXPORT_KEYS: tuple[str, ...] = ("single", "ensemble")


def config_keys(kind: str) -> tuple[str, ...]:
    """The top-level keys of the packaged config of ``kind`` (``train``, ``search``, ``evaluate``), comments left out.

    Raises:
        ConfigError: an unknown kind.
    """
    if kind not in CONFIG_FILES:
        raise ConfigError(f"unknown config kind {kind!r}; kinds: {sorted(CONFIG_FILES)}")
    return tuple(k for k in packaged_config(CONFIG_FILES[kind]) if not k.startswith("_"))


def merge_config(
    kind: str,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    new_keys_in_config: bool = False,
) -> ConfigParser:
    """The packaged config of ``kind`` updated by ``config`` (a JSON/YAML file or a mapping), then ``overrides``.

    Args:
        kind: ``train``, ``search`` or ``evaluate`` (:data:`CONFIG_FILES`).
        config: a user config over the packaged one.
        overrides: last-word values by MONAI id (``"train#dataloader#num_workers": 2``).
        new_keys_in_config: let ``config`` define ids the packaged config lacks (a training config may add
            components that its other entries refer to, as MONAI bundle configs do); overrides never may.

    Returns:
        a ``ConfigParser`` over the merged config (its ``config`` holds the raw values, ``$`` expressions unevaluated).

    Raises:
        ConfigError: a missing or unreadable file, or an unknown key, naming the key, the file and the known keys.
    """
    if kind not in CONFIG_FILES:
        raise ConfigError(f"unknown config kind {kind!r}; kinds: {sorted(CONFIG_FILES)}")
    parser = ConfigParser(packaged_config(CONFIG_FILES[kind]))
    known = sorted(k for k in parser.config if not k.startswith("_"))
    sources: list[tuple[str, Mapping[str, Any], bool]] = []
    if config is not None:
        if isinstance(config, Mapping):
            sources.append(("config", config, new_keys_in_config))
        else:
            sources.append((str(config), read_config_file(config, f"{_KIND_NAMES[kind]} file"), new_keys_in_config))
    sources.append(("overrides", overrides or {}, False))
    for where, items, free in sources:
        for key, value in items.items():
            if not free and key.split("#")[0] not in parser.config:
                raise ConfigError(f"{where}: unknown {_KIND_NAMES[kind]} key {key!r}; known keys: {known}")
            parser[key] = value
    return parser


def _section_keys(section: str) -> tuple[str, ...]:
    if section == "search":
        return config_keys("search")
    if section == "train":
        return (*config_keys("train"), *TRAIN_STEP_KEYS)
    if section == "evaluate":
        return config_keys("evaluate")
    fixed = {"prepare": PREPARE_KEYS, "baselines": BASELINES_KEYS, "ensemble": ENSEMBLE_KEYS, "export": EXPORT_KEYS}
    return fixed[section]


#: Nested mappings of a section checked key by key too: (section, key) -> what their keys are.
_NESTED: dict[tuple[str, str], str] = {
    ("train", "parallel"): "parallel",
    ("search", "train"): "train",
    ("baselines", "train"): "train",
    ("evaluate", "train_overrides"): "train",
}


def _check_keys(values: Any, known: tuple[str, ...], where: str, source: str) -> None:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: {where} must be a mapping of keys to values, got {values!r}")
    for key in values:
        if str(key).startswith("_"):  # comments ("_doc_")
            continue
        if str(key).split("#")[0] not in known:
            raise ConfigError(f"{source}: unknown key {key!r} in {where}; known keys: {sorted(known)}")


def check_section(section: str, values: Any, source: str = "profile") -> None:
    """Check a profile section key by key, and its nested training overrides and ``train.parallel``.

    Args:
        section: one of :data:`PROFILE_SECTIONS`.
        values: the section's mapping.
        source: the file (or object) it came from, for the message.

    Raises:
        ConfigError: an unknown section or key, naming the key, the section and ``source``.
    """
    if section not in PROFILE_SECTIONS:
        raise ConfigError(f"{source}: unknown section {section!r}; sections: {sorted(PROFILE_SECTIONS)}")
    _check_keys(values, _section_keys(section), f"section {section!r}", source)
    for (outer, key), kind in _NESTED.items():
        if outer == section and isinstance(values, Mapping) and values.get(key) is not None:
            known = PARALLEL_KEYS if kind == "parallel" else config_keys(kind)
            _check_keys(values[key], known, f"section {section!r}, {key!r}", source)


def check_profile(settings: Mapping[str, Any], source: str = "profile") -> None:
    """Check every section of a profile's settings (:func:`check_section`); sections may be missing.

    Raises:
        ConfigError: see :func:`check_section`.
    """
    for section, values in settings.items():
        if not str(section).startswith("_"):
            check_section(str(section), values, source)


def load_profile(profile: str = "quick", config: str | os.PathLike | None = None) -> dict[str, Any]:
    """The profile's settings per step, updated section by section with a user JSON/YAML file, checked key by key.

    Args:
        profile: one of :data:`PROFILES`.
        config: a file of sections over the profile's (``{"train": {"max_epochs": 3}}``). A key's value replaces the
            profile's, except that a mapping is merged into the profile's mapping key by key, at any depth
            (``{"search": {"train": {"num_workers": 4}}}`` keeps the profile's other ``search.train`` keys);
            ``null`` replaces a mapping (``{"train": {"parallel": null}}``: no parallel jobs).

    Raises:
        ConfigError: unknown profile, unreadable file, or an unknown section or key (naming it and the file).
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {list(PROFILES)}")
    name = f"profile_{profile}.json"
    settings = packaged_config(name)
    check_profile(settings, str(resources.files("naslung.pipeline").joinpath("configs", name)))
    if config is not None:
        path = Path(config)
        user = read_config_file(path, "run config")
        check_profile(user, str(path))
        for section, values in user.items():
            if not section.startswith("_"):
                _merge_into(settings.setdefault(section, {}), values)
    return settings


def _merge_into(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Merge ``update`` into ``base`` in place: mappings key by key at any depth, any other value replacing."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge_into(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
