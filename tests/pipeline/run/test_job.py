"""``naslung run`` end to end on a tiny config: every artefact, and a killed run resumes without redoing work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.cli import main
from naslung.pipeline.errors import ConfigError
from naslung.pipeline.run import job as run_job
from naslung.pipeline.run.config import STEP_NAMES, load_profile
from naslung.pipeline.run.job import RUN_STEPS, RunContext, subsample_cohort

TINY = {
    "prepare": {"subsample_nodules": 40, "scans": 1, "workers": 1},
    "search": {
        "space": {"channels": [4, 8], "min_blocks": 3, "max_blocks": 3},
        "epochs_per_candidate": 1,
        "max_candidates": 2,
        "batch_size": 1,
        "select_top_n": 2,
        "executor": "sequential",
        "latency_repeats": 1,
        "latency_warmup": 1,
        "train": {"batch_size": 8},
    },
    "train": {"max_epochs": 1, "folds": [0], "batch_size": 8},
    "evaluate": {"max_specs": 1, "analyses": ["attention", "training_curves"]},
    "export": {"single": True, "ensemble": False},
}


class _Killed(RuntimeError):
    pass


def test_tiny_run_killed_then_resumed(tmp_path, monkeypatch, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY), encoding="utf-8")
    run = tmp_path / "run"
    args = ["run", "--config", str(config), "--out", str(run)]

    def killed(*args, **kwargs):
        raise _Killed("simulated kill during retraining")

    monkeypatch.setattr(run_job, "train_folds", killed)
    with pytest.raises(_Killed):
        main(args)
    stamps = {p: (run / p).stat().st_mtime_ns for p in ("data/manifest.csv", "search/journal.jsonl")}
    journal_lines = (run / "search" / "journal.jsonl").read_text(encoding="utf-8").count("\n")
    monkeypatch.undo()

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[prepare]" in out and "[report]" in out and "report.md" in out
    for path, stamp in stamps.items():  # finished steps were not redone
        assert (run / path).stat().st_mtime_ns == stamp, path
    assert (run / "search" / "journal.jsonl").read_text(encoding="utf-8").count("\n") == journal_lines
    for artefact in (
        "report.md",
        "report.html",
        "search/pareto.png",
        "search/selected.json",
        "ensemble/metrics.json",
        "analysis/attention.png",
        "bundles/naslung_classifier/configs/inference.json",
        "bundles/smoke.json",
    ):
        assert (run / artefact).is_file(), artefact
    assert json.loads((run / "bundles" / "smoke.json").read_text(encoding="utf-8"))["status"] == "ok"
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "This step has not run yet" not in report.split("## Ablation")[0]


def test_profiles_and_unknown_section(tmp_path):
    assert load_profile("quick")["train"]["folds"] == [0, 1]
    standard = load_profile("standard")
    assert standard["train"]["folds"] == [0, 1, 2, 3, 4] and standard["prepare"]["subsample_nodules"] is None
    paper = load_profile("paper")
    assert paper["train"]["max_epochs"] == 700
    # the paper profile keeps the paper's recipe whatever the training config's defaults
    assert (paper["train"]["lr_schedule"], paper["train"]["rotate90_prob"]) == ("constant", 0.0)
    assert paper["train"]["lambda_floor_fraction"] is None
    bad = tmp_path / "bad.json"
    bad.write_text('{"trian": {}}', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown section 'trian'"):
        load_profile("quick", bad)


def test_subsample_keeps_patients_whole_and_is_deterministic():
    rows = [
        {"nodule_id": f"n{i}", "patient_id": f"p{i // 3}", "fold": (i // 3) % 4, "label": int(i % 5 == 0)}
        for i in range(120)
    ]
    a, b = subsample_cohort(rows, 40, seed=1), subsample_cohort(rows, 40, seed=1)
    assert a == b and 30 <= len(a) <= 55
    chosen = {r["patient_id"] for r in a}
    assert all(sum(r["patient_id"] == p for r in a) == 3 for p in chosen)
    assert {r["fold"] for r in a} == {0, 1, 2, 3}
    assert subsample_cohort(rows, None) == rows


def test_prepare_step_is_stale_after_a_renderer_version_change(tmp_path, monkeypatch):
    """Run data prepared by an older synthetic renderer is rendered again, not reused."""
    calls = []

    def fake_render(out_dir, rows, **kwargs):
        calls.append(len(rows))
        (out_dir / "manifest.csv").parent.mkdir(parents=True, exist_ok=True)
        (out_dir / "manifest.csv").write_text("nodule_id\n", encoding="utf-8")
        return {"n_scans": 0}

    monkeypatch.setattr(run_job, "render_embedded", fake_render)
    ctx = RunContext(run_dir=tmp_path, settings={"prepare": {"subsample_nodules": 10, "scans": 0}})
    run_job._step_prepare(ctx)
    run_job._step_prepare(ctx)
    assert len(calls) == 1  # up to date
    monkeypatch.setattr(run_job, "RENDER_VERSION", run_job.RENDER_VERSION + 1)
    run_job._step_prepare(ctx)
    assert len(calls) == 2  # stale: rendered again


def test_parallel_retraining_runs_every_network_fold_job(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(run_job, "train_fold_job", lambda job: seen.append((job["out_dir"], job["test_fold"])))
    jobs = [{"out_dir": str(tmp_path / name), "test_fold": fold} for name in ("a", "b") for fold in (0, 1)]
    ctx = RunContext(run_dir=tmp_path, settings={"train": {}})
    run_job._run_jobs_in_parallel(ctx, jobs, {"executor": "sequential", "threads_per_job": 1})
    assert sorted(seen) == [(str(tmp_path / n), f) for n in ("a", "b") for f in (0, 1)]
    assert (tmp_path / "a" / "fold_1" / "job.log").is_file()  # each job logs into its own fold folder
    with pytest.raises(ConfigError, match="unknown key 'threads' in section 'train', 'parallel'"):
        RunContext(run_dir=tmp_path, settings={"train": {"parallel": {"threads": 1}}})


def test_evaluate_train_overrides_refine_the_train_section(tmp_path, monkeypatch):
    seen = {}

    def fake_evaluate(run_dir, overrides, progress, run_training_jobs):
        seen.update(overrides)
        seen["runner"] = run_training_jobs
        return {"analyses": [], "specs": [], "outputs": []}

    monkeypatch.setattr(run_job, "run_evaluate_step", fake_evaluate)
    settings = {
        "train": {"lr": 0.002, "max_epochs": 10, "folds": [0, 1], "parallel": {"workers": 2}},
        "evaluate": {"folds": [0], "train_overrides": {"max_epochs": 2}},
    }
    run_job._step_evaluate(RunContext(run_dir=tmp_path, settings=settings))
    assert seen["train_overrides"] == {"lr": 0.002, "max_epochs": 2}  # lr kept, epochs refined, no step keys
    assert seen["folds"] == [0]
    assert callable(seen["runner"])  # train.parallel also runs the analyses' trainings
    settings["train"].pop("parallel")
    run_job._step_evaluate(RunContext(run_dir=tmp_path, settings=settings))
    assert seen["runner"] is None


def test_parallel_retraining_without_ray_leaves_the_jobs_to_the_plain_loop(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(run_job, "train_fold_job", lambda job: seen.append(job))
    monkeypatch.setattr(run_job, "ray_available", lambda: False)
    ctx = RunContext(run_dir=tmp_path, settings={"train": {}})
    job = {"out_dir": str(tmp_path / "a"), "test_fold": 0}
    run_job._run_jobs_in_parallel(ctx, [job], {"executor": "ray", "threads_per_job": 1})
    assert seen == []  # the step's own loop trains them with the configured threads


@pytest.mark.parametrize("statuses, expected", [[("ok", "ok"), "ok"], [("ok", "failed"), "failed"]])
def test_smoke_step_checks_every_bundle(tmp_path, monkeypatch, statuses, expected):
    from naslung.pipeline.analysis.report import build_report

    names = ("naslung_classifier", "naslung_ensemble")
    for name in names:
        (tmp_path / "bundles" / name / "configs").mkdir(parents=True)
        for config in ("inference.json", "metadata.json"):
            (tmp_path / "bundles" / name / "configs" / config).write_text("{}", encoding="utf-8")
    outcome = dict(zip(names, statuses, strict=True))

    def fake_smoke(bundle, data_dir):
        return {"status": outcome[bundle.name], "bundle": str(bundle), "n": 4, "max_abs_difference": 1e-6}

    monkeypatch.setattr(run_job, "smoke_test_bundle", fake_smoke)
    line = run_job._step_smoke(RunContext(run_dir=tmp_path, settings={}))
    assert all(name in line for name in names)
    record = json.loads((tmp_path / "bundles" / "smoke.json").read_text(encoding="utf-8"))
    assert record["status"] == expected
    assert [Path(r["bundle"]).name for r in record["bundles"]] == list(names)
    report = build_report(tmp_path)[0].read_text(encoding="utf-8")
    assert "smoke check of `naslung_ensemble`" in report


def test_ensemble_step_passes_every_profile_key_and_refuses_unknown_ones(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(run_job, "run_ensemble_step", lambda run_dir, progress, **kw: seen.update(kw) or {})
    monkeypatch.setattr(run_job, "ensemble_headline", lambda result: "headline")
    settings = {"ensemble": {"draws": 3, "seed": 7, "sizes": [1, 3], "threshold": 0.4, "latency": False}}
    assert run_job._step_ensemble(RunContext(run_dir=tmp_path, settings=settings)) == "headline"
    assert seen == settings["ensemble"]
    config = tmp_path / "typo.json"
    config.write_text('{"ensemble": {"drawz": 3}}', encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{config}: unknown key 'drawz' in section 'ensemble'"):
        load_profile("quick", config)
    with pytest.raises(ConfigError, match="unknown key 'drawz' in section 'ensemble'"):
        RunContext(run_dir=tmp_path, settings={"ensemble": {"drawz": 3}})


def test_steps_are_those_the_cli_offers():
    assert tuple(name for name, _ in RUN_STEPS) == STEP_NAMES


@pytest.mark.parametrize("loss_name", ["softmax", "asoftmax"])
def test_retrained_networks_and_baselines_take_the_profiles_loss(tmp_path, monkeypatch, loss_name):
    """Issue 14: the retrained networks were forced to A-Softmax while the baselines took the profile's loss."""
    write_json(tmp_path / "search" / "selected.json", {"specs": ["[4,4,[4],[4],[8]]"]})
    trained, baselines = {}, {}
    monkeypatch.setattr(run_job, "read_manifest", lambda path: [])
    monkeypatch.setattr(run_job, "write_rank_correlation", lambda run: {"rho": None, "reason": "test", "metric": "auc"})
    monkeypatch.setattr(
        run_job,
        "train_folds",
        lambda data, folds, out, overrides, show_progress: trained.update(overrides) or {"summary": {}},
    )
    monkeypatch.setattr(run_job, "train_baselines", lambda *args, overrides, **kw: baselines.update(overrides) or {})
    settings = {
        "train": {"loss_name": loss_name, "folds": [0], "max_epochs": 1},
        "baselines": {"networks": ["resnet18"], "train": {}},
    }
    ctx = RunContext(run_dir=tmp_path, settings=settings)
    run_job._step_train(ctx)
    run_job._step_baselines(ctx)
    assert trained["loss_name"] == baselines["loss_name"] == loss_name
    assert trained["arch"] == "[4,4,[4],[4],[8]]" and "parallel" not in trained


def test_packaged_profiles_name_the_loss():
    """The loss is the profile's policy, written in its train section (not forced by the step)."""
    for profile in ("quick", "standard", "paper"):
        assert load_profile(profile)["train"]["loss_name"] == "asoftmax"
