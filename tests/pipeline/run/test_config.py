"""One config loader: training, search and evaluation configs, and profiles checked key by key."""

from __future__ import annotations

import inspect
import json

import pytest

from naslung.pipeline.ensemble.step import run_ensemble_step
from naslung.pipeline.errors import ConfigError
from naslung.pipeline.run.config import (
    CONFIG_FILES,
    ENSEMBLE_KEYS,
    PROFILE_SECTIONS,
    PROFILES,
    check_profile,
    config_keys,
    load_profile,
    merge_config,
)


@pytest.mark.parametrize("kind", sorted(CONFIG_FILES))
def test_merge_applies_config_then_overrides(kind, tmp_path):
    key = {"train": "max_epochs", "search": "max_candidates", "evaluate": "max_specs"}[kind]
    config = tmp_path / "user.json"
    config.write_text(json.dumps({key: 3}), encoding="utf-8")
    assert merge_config(kind, config).config[key] == 3
    assert merge_config(kind, config, {key: 5}).config[key] == 5
    assert merge_config(kind, {key: 4}).config[key] == 4


@pytest.mark.parametrize("kind", sorted(CONFIG_FILES))
def test_unknown_key_names_the_key_and_the_file(kind, tmp_path):
    config = tmp_path / "typo.json"
    config.write_text(json.dumps({"max_epochz": 3}), encoding="utf-8")
    if kind != "train":  # a training config file may define new ids (bundle syntax); see the next test
        with pytest.raises(ConfigError, match=f"{config}: unknown .* key 'max_epochz'"):
            merge_config(kind, config)
    with pytest.raises(ConfigError, match="overrides: unknown .* key 'max_epochz'"):
        merge_config(kind, overrides={"max_epochz": 3})


def test_training_config_file_may_define_new_ids():
    parser = merge_config("train", {"my_lr": 0.5, "lr": "@my_lr"}, new_keys_in_config=True)
    assert parser.get_parsed_content("lr") == 0.5


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nothing.json: training config file not found"):
        merge_config("train", tmp_path / "nothing.json")


@pytest.mark.parametrize("profile", PROFILES)
def test_packaged_profiles_pass_their_own_check(profile):
    settings = load_profile(profile)
    assert {"prepare", "train", "ensemble", "evaluate", "export"} <= set(settings) <= {"_doc_", *PROFILE_SECTIONS}
    check_profile(settings)


TEST_CASES_UNKNOWN = [
    [{"train": {"max_epoch": 3}}, "unknown key 'max_epoch' in section 'train'"],
    [{"train": {"parallel": {"threads": 1}}}, "unknown key 'threads' in section 'train', 'parallel'"],
    [{"search": {"epochs": 3}}, "unknown key 'epochs' in section 'search'"],
    [{"search": {"train": {"lr_rate": 0.1}}}, "unknown key 'lr_rate' in section 'search', 'train'"],
    [{"baselines": {"network": ["resnet18"]}}, "unknown key 'network' in section 'baselines'"],
    [{"baselines": {"train": {"epochs": 3}}}, "unknown key 'epochs' in section 'baselines', 'train'"],
    [{"ensemble": {"drawz": 3}}, "unknown key 'drawz' in section 'ensemble'"],
    [{"evaluate": {"train_overrides": {"epochs": 2}}}, "unknown key 'epochs' in section 'evaluate', 'train_overrides'"],
    [{"prepare": {"nodules": 10}}, "unknown key 'nodules' in section 'prepare'"],
    [{"export": {"onnx": True}}, "unknown key 'onnx' in section 'export'"],
    [{"trian": {}}, "unknown section 'trian'"],
]


@pytest.mark.parametrize("user, message", TEST_CASES_UNKNOWN)
def test_unknown_profile_key_names_key_section_and_file(user, message, tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps(user), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{config}: {message}"):
        load_profile("quick", config)


def test_user_sections_update_the_profile_key_by_key(tmp_path):
    config = tmp_path / "run.json"
    user = {"_doc_": "comment", "train": {"max_epochs": 2, "train#dataloader#num_workers": 0, "_note": "x"}}
    config.write_text(json.dumps(user), encoding="utf-8")
    settings = load_profile("quick", config)
    quick = load_profile("quick")
    assert settings["train"]["max_epochs"] == 2 and settings["train"]["folds"] == quick["train"]["folds"]
    assert settings["train"]["loss_name"] == "asoftmax"  # the profile's policy, not the step's


def test_nested_sections_merge_key_by_key_and_null_replaces(tmp_path):
    """A nested mapping (search.train, train.parallel) merges into the profile's; null clears one; lists replace."""
    config = tmp_path / "run.json"
    user = {"search": {"train": {"num_workers": 4}, "space": {"channels": [4, 8]}}, "train": {"parallel": None}}
    config.write_text(json.dumps(user), encoding="utf-8")
    settings, standard = load_profile("standard", config), load_profile("standard")
    assert settings["search"]["train"] == {**standard["search"]["train"], "num_workers": 4}
    assert settings["search"]["space"] == {**standard["search"]["space"], "channels": [4, 8]}
    assert settings["train"]["parallel"] is None and standard["train"]["parallel"]["executor"] == "ray"
    assert load_profile("standard") == standard  # the packaged profile is not changed by a merge


def test_unknown_profile_and_kind():
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        load_profile("fast")
    with pytest.raises(ConfigError, match="unknown config kind 'bundle'"):
        config_keys("bundle")


def test_ensemble_keys_are_the_steps_arguments():
    parameters = set(inspect.signature(run_ensemble_step).parameters) - {"run_dir", "force", "progress"}
    assert set(ENSEMBLE_KEYS) == parameters
