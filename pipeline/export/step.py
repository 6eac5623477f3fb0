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

import datetime
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from naslung.pipeline.atomic_io import write_json
from naslung.pipeline.errors import ConfigError
from naslung.pipeline.export.checks import check_bundle_layout, export_and_verify
from naslung.pipeline.export.configs import (
    bundle_inference_config,
    bundle_network_def,
    bundle_train_config,
    member_network_kwargs,
    member_train_config,
    network_kind,
    require_scripts,
)
from naslung.pipeline.export.docs import (
    bundle_description,
    data_texts,
    metrics_section,
    package_versions,
    render_template,
    write_sample_data,
)
from naslung.pipeline.export.models import build_project_network, export_onnx, latency_ms, load_state_dict_file
from naslung.pipeline.export.run_content import (
    BundleMember,
    DataDescription,
    cv_eval_metrics,
    default_members,
    describe_data,
    ensemble_eval_metrics,
    read_json,
    resolve_member,
)
from naslung.pipeline.export.scripts import (
    bundle_modules,
    generate_bundle_scripts,
    module_source,
    modules_named_in_configs,
)
from naslung.pipeline.export.sources import SCHEMA_URL, bundle_sources_dir, local_schema_path
from naslung.pipeline.metrics import DEFAULT_THRESHOLD
from naslung.pipeline.progress import Progress, no_progress
from naslung.pipeline.run.markers import fingerprint, is_done, mark_done

__all__ = ["ExportedBundle", "export_bundle"]

logger = logging.getLogger(__name__)


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        found = module_source(module)
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
    inference_template = read_json(templates / "inference.json")
    train_overlay = read_json(templates / "train_overlay.json")
    defs = [bundle_network_def(member) for member in chosen]
    inference = require_scripts(bundle_inference_config(inference_template, defs, ensemble))
    train = bundle_train_config(chosen, train_overlay, ensemble)
    config_modules = modules_named_in_configs([member_train_config(m) for m in chosen])
    modules = bundle_modules(network_kind(member) for member in chosen)
    data = describe_data(run)
    ensemble_metrics = ensemble_eval_metrics(run) if ensemble else {}
    versions = package_versions()
    digest = fingerprint(
        kind,
        [(m.slug, str(m.fold_dir.relative_to(run)), _sha256(m.weights), m.config, m.cv_metrics) for m in chosen],
        ensemble_metrics,
        data.__dict__,
        _sources_digest(sources, modules),
        {k: v for k, v in versions.items() if k != "naslung"},
    )
    marker_dir = out.parent / ".export_done" / out.name
    if is_done(marker_dir, digest) and (out / "configs" / "metadata.json").is_file():
        logger.info("%s is up to date; skipping", out)
        return ExportedBundle(path=out, **read_json(marker_dir / "done.json")["summary"], skipped=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        summary = _build(work, run, kind, chosen, defs, inference, train, config_modules, modules, data,
                         ensemble_metrics, versions, sources, progress)  # fmt: skip
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
    modules: Sequence[str],
    data: DataDescription,
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
    write_sample_data(work / "sample")
    shipped = generate_bundle_scripts(work / "scripts", config_modules, versions["naslung"], modules)

    # weights: plain state_dicts, checked against the network naslung builds from the same definition
    weights = [load_state_dict_file(member.weights) for member in chosen]
    networks = [build_project_network(d, w) for d, w in zip(defs, weights, strict=True)]
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
    onnx_predictor = export_onnx(networks, work / "models" / "model.onnx", ensemble)
    next(stages, None)

    latency = latency_ms(networks)
    onnx_latency = latency_ms([onnx_predictor])
    parameters = [sum(p.numel() for p in network.parameters()) for network in networks]
    architectures = [
        {
            "slug": member.slug,
            "spec": member.spec,
            "network_def": member_network_kwargs(member),
            "loss_name": member.config.get("loss_name"),
            "parameters": count,
            "weights": f"{member.fold_dir.name} of RUN/train/{member.slug}",
        }
        for member, count in zip(chosen, parameters, strict=True)
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
        eval_metrics = cv_eval_metrics(chosen[0].cv_metrics)
        folds = eval_metrics.get("test_folds", [])
        protocol = (
            f"Mean ± sample std over the held-out test folds {folds} of cross-validation (RUN/train/"
            f"{chosen[0].slug}/cv_metrics.json): each fold's model was trained, and its checkpoint chosen, without "
            f"its test fold. The shipped weights are the {chosen[0].fold_dir.name} model of that recipe."
            if eval_metrics
            else f"no cv_metrics.json in RUN/train/{chosen[0].slug}; train the spec on all folds to measure it."
        )
    texts = data_texts(data)
    packages = ("pytorch-ignite", "scipy", "SimpleITK", "nibabel")
    requirements = {name: versions[name] for name in packages if versions[name]}
    metadata = read_json(sources / kind / "configs" / "metadata.json")
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
        scripts_modules=shipped,
    )
    metadata["description"] = bundle_description(kind, chosen, texts["data_short"])
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
        "metrics_section": metrics_section(eval_metrics, protocol),
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
    readme = render_template((sources / "docs" / f"README_{kind}.md").read_text(encoding="utf-8"), values)
    (work / "docs" / "README.md").write_text(re.sub(r"\n{3,}", "\n\n", readme), encoding="utf-8")

    export_and_verify(work, jobs, local_schema_path())
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
