"""Train and evaluate one network per held-out fold with MONAI's Ignite engines, driven by a bundle-style config."""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.utils import set_determinism

from naslung.networks import BASELINES, registered_name
from naslung.pipeline.atomic_io import append_jsonl, read_jsonl, write_csv, write_json
from naslung.pipeline.data.datalists import FoldSplit, split_for_fold
from naslung.pipeline.errors import ConfigError, NaslungError
from naslung.pipeline.metrics import BINARY_METRICS, binary_metrics, summarise_folds
from naslung.pipeline.progress import bar_options, is_terminal
from naslung.pipeline.run.config import CONFIG_FILES, merge_config
from naslung.pipeline.run.layout import (
    CHECKPOINT,
    CV_METRICS,
    FOLD_CONFIG,
    FOLD_METRICS,
    HISTORY,
    TEST_PREDICTIONS,
    VAL_PREDICTIONS,
    fold_dir_name,
    spec_slug,
)
from naslung.pipeline.run.markers import fingerprint, is_done, mark_done
from naslung.pipeline.training.handlers import PredictionCollector
from naslung.transforms import eval_transforms

__all__ = [
    "DEFAULT_TRAIN_CONFIG",
    "load_train_config",
    "attach_progress_bar",
    "train_fold",
    "train_folds",
    "train_fold_job",
    "predict",
    "fold_dir_name",
    "spec_slug",
    "network_overrides",
]

logger = logging.getLogger(__name__)

#: The packaged training config (MONAI bundle syntax); every key can be overridden.
DEFAULT_TRAIN_CONFIG = CONFIG_FILES["train"]

#: Keys the training step sets itself for each fold; a user config must not rely on setting them.
_RUNTIME_KEYS = ("train_data", "val_data", "test_data", "output_dir", "bundle_root", "dataset_dir")


def load_train_config(
    config: str | os.PathLike | dict | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Merge the packaged training config with a user config file (JSON/YAML) or dict, then ``overrides``
    (:func:`naslung.pipeline.run.config.merge_config`).

    Keys use MONAI's ``#`` id separator for nested entries (``"train#dataloader#num_workers": 2``). A user config
    may define new ids (components its other entries refer to); an override must name a key the config has.

    Raises:
        ConfigError: the file is missing or unreadable, an override names an unknown key, or a recipe value is out
            of range (``checkpoint_metric``, ``rotate90_prob``, ``lambda_floor_fraction``, ``lambda_min``).
    """
    parser = merge_config("train", config, overrides, new_keys_in_config=True)
    _check_recipe(parser.config, config)
    return parser.config


def _check_recipe(merged: dict[str, Any], source: Any) -> None:
    """Fail early, naming the key and the config, on recipe values the engines would only reject deep inside MONAI.

    Raises:
        ConfigError: ``checkpoint_metric`` not one of :data:`~naslung.pipeline.metrics.BINARY_METRICS`,
            ``rotate90_prob`` or ``checkpoint_from_fraction`` outside [0, 1], or ``lambda_floor_fraction`` outside
            (0, 1] (``null`` allowed), or ``lambda_min`` outside (0, 1500] (the schedule's start).
    """
    where = f" (config: {source})" if isinstance(source, (str, os.PathLike)) else ""

    def literal(key: str, default: Any) -> Any:  # expressions ("$...") and references ("@...") are left to MONAI
        value = merged.get(key, default)
        return None if isinstance(value, str) and value[:1] in ("$", "@", "%") else value

    metric = literal("checkpoint_metric", "auc")
    if metric is not None and metric not in BINARY_METRICS:
        raise ConfigError(f"checkpoint_metric {metric!r}{where}: use one of {BINARY_METRICS}")
    rotate = literal("rotate90_prob", 0.0)
    if rotate is not None and (not isinstance(rotate, (int, float)) or not 0.0 <= float(rotate) <= 1.0):
        raise ConfigError(f"rotate90_prob {rotate!r}{where}: a probability in [0, 1]")
    start = literal("checkpoint_from_fraction", 0.0)
    if start is not None and (not isinstance(start, (int, float)) or not 0.0 <= float(start) <= 1.0):
        raise ConfigError(f"checkpoint_from_fraction {start!r}{where}: a fraction of max_epochs in [0, 1]")
    floor = literal("lambda_floor_fraction", None)
    if floor is not None and (not isinstance(floor, (int, float)) or not 0.0 < float(floor) <= 1.0):
        raise ConfigError(f"lambda_floor_fraction {floor!r}{where}: a fraction of the run in (0, 1], or null")
    lambda_min = literal("lambda_min", 5.0)
    if lambda_min is not None and (
        not isinstance(lambda_min, (int, float)) or isinstance(lambda_min, bool) or not 0.0 < lambda_min <= 1500.0
    ):
        raise ConfigError(f"lambda_min {lambda_min!r}{where}: A-Softmax's lambda floor, a number in (0, 1500]")


def network_overrides(network: str = "cbam_resnet3d", arch: str | None = None) -> dict[str, Any]:
    """Training-config overrides that select a network of :data:`naslung.networks.NETWORKS`.

    The config's ``arch`` names the network (``network_def#name_or_spec``): a NAS-Lung spec builds
    ``cbam_resnet3d``, a registered name builds that baseline. Baselines have no CBAM, so ``attention`` is set to
    ``"none"``; ``head``/``margin`` follow ``loss_name`` for every network (A-Softmax works for all).

    Args:
        network: a registered name (``"cbam_resnet3d"``, ``"resnet18"``, ``"densenet121"``, ``"mc3_18"``, ...).
        arch: the spec of ``cbam_resnet3d`` (``None``: the config's ``arch``).

    Returns:
        ``{"arch": spec}`` (or ``{}``) for ``cbam_resnet3d``; ``{"arch": name, "attention": "none"}`` for a baseline.

    Raises:
        ConfigError: for an unknown network, or a spec given for a baseline.
    """
    name = registered_name(network)
    if name not in BASELINES:
        return {} if arch is None else {"arch": arch}
    if arch is not None:
        raise ConfigError(f"an architecture spec ({arch!r}) is for cbam_resnet3d; network {name!r} takes none")
    return {"arch": name, "attention": "none"}


class _History:
    """Appends each validation's metrics (and the epoch's mean training loss) to ``history.jsonl``."""

    def __init__(self, path: Path, trainer: Any, evaluator: Any) -> None:
        self.path, self.trainer = path, trainer
        self._losses: list[float] = []
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: self._losses.clear())
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._loss)
        evaluator.add_event_handler(Events.COMPLETED, self._record)

    def _loss(self, engine: Any) -> None:
        output = engine.state.output
        loss = output[0]["loss"] if isinstance(output, list) else output["loss"]
        self._losses.append(float(loss))

    def _record(self, engine: Any) -> None:
        record = {"epoch": int(engine.state.epoch)}
        if self._losses:
            record["train_loss"] = sum(self._losses) / len(self._losses)
        record.update({k: float(v) for k, v in engine.state.metrics.items() if isinstance(v, (int, float))})
        append_jsonl(self.path, record)


def predict(
    network: torch.nn.Module,
    datalist: Sequence[dict[str, Any]],
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    transform: Any = None,
) -> list[dict[str, Any]]:
    """Malignancy probabilities for a datalist with a ``SupervisedEvaluator`` (evaluation transforms).

    Args:
        network: a 2-class network returning ``(B, 2)`` logits in eval mode.
        datalist: items with ``image`` (cube path or array) and ``label``; ``nodule_id`` is carried through.
        transform: defaults to :func:`naslung.transforms.eval_transforms`.

    Returns:
        one ``{"nodule_id", "label", "probability"}`` per item, in datalist order.
    """
    items = [dict(d, nodule_id=str(d.get("nodule_id", i))) for i, d in enumerate(datalist)]
    loader = DataLoader(Dataset(items, transform or eval_transforms()), batch_size=batch_size, shuffle=False)
    collector = PredictionCollector()
    evaluator = SupervisedEvaluator(
        device=torch.device(device), val_data_loader=loader, network=network, val_handlers=[collector]
    )
    evaluator.run()
    return collector.rows


def _write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    write_csv(path, rows, ["nodule_id", "label", "probability"])


def attach_progress_bar(
    engine: Engine, desc: str, output_transform: Callable[[Any], dict[str, float]], stream: TextIO | None = None
) -> ProgressBar:
    """Attach Ignite's ``ProgressBar`` (cleared when the run ends) to ``engine`` and return it.

    On a terminal it advances every iteration. On a file or pipe (``stream``, default stderr: a log under ``nohup``,
    CI or a batch job) it advances once an epoch, since Ignite redraws its bar on every event it handles whatever
    tqdm's interval: a run of the standard profile on one held-out fold wrote about 8,700 lines of redraws (370 kB)
    to its log.
    ``output_transform`` maps the engine's output to the values shown beside the bar (e.g. ``{"loss": 0.41}``); the bar
    is drawn on ``stream`` when given.
    """
    bar = ProgressBar(persist=False, desc=desc, **bar_options(stream), **({} if stream is None else {"file": stream}))
    if is_terminal(stream):
        bar.attach(engine, output_transform=output_transform)
    else:
        bar.attach(
            engine,
            output_transform=output_transform,
            event_name=Events.EPOCH_COMPLETED,
            closing_event_name=Events.COMPLETED,
        )
    return bar


def train_fold(
    datalist: Sequence[dict[str, Any]],
    test_fold: int | None,
    out_dir: str | os.PathLike,
    config: str | os.PathLike | dict | None = None,
    overrides: dict[str, Any] | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Train one network with the fold ``test_fold`` held out; validate on a split carved from the rest.

    Writes under ``out_dir/fold_<k>/``: ``checkpoints/last.pt`` (resume state), ``checkpoints/best_model.pt``
    (plain ``state_dict`` of the best validation F1), ``history.jsonl``, ``val_predictions.csv``,
    ``test_predictions.csv`` (best model on the held-out fold), ``metrics.json`` and ``config.json``. A
    finished fold with the same inputs is skipped; an interrupted one resumes from ``last.pt``.

    Args:
        datalist: the whole cohort's cube datalist (``image``, ``label``, ``fold``, ``patient_id``, ``nodule_id``).
        test_fold: fold held out for testing (``None``: train on everything, no test metrics).
        out_dir: run directory of this network.
        config: user training config (file or dict) on top of the packaged one.
        overrides: last-word key/value overrides (MONAI ``#`` ids).
        show_progress: attach Ignite's progress bar (the CLI sets it).

    Returns:
        ``metrics.json``'s content: ``val`` (best validation metrics), ``test`` (held-out metrics), ``best_epoch``.
    """
    merged = load_train_config(config, overrides)
    fold_dir = Path(out_dir) / fold_dir_name(test_fold)
    split: FoldSplit = split_for_fold(
        datalist, test_fold, val_fraction=float(merged.get("val_fraction", 0.1)), seed=int(merged["seed"])
    )
    ids = [[d["nodule_id"] for d in part] for part in (split.train, split.val, split.test)]
    digest = fingerprint({k: v for k, v in merged.items() if k not in _RUNTIME_KEYS}, ids)
    if is_done(fold_dir, digest):
        logger.info("%s is up to date; skipping", fold_dir)
        return json.loads((fold_dir / FOLD_METRICS).read_text(encoding="utf-8"))
    fold_dir.mkdir(parents=True, exist_ok=True)
    write_json(fold_dir / FOLD_CONFIG, merged)

    parser = ConfigParser(copy.deepcopy(merged))
    parser["bundle_root"] = str(fold_dir)
    parser["output_dir"] = str(fold_dir)
    parser["train_data"], parser["val_data"] = split.train, split.val
    set_determinism(seed=int(merged["seed"]))
    try:
        trainer = parser.get_parsed_content("train#trainer")
        evaluator = parser.get_parsed_content("validate#evaluator")
        network = parser.get_parsed_content("network")
        device = parser.get_parsed_content("device")
    except Exception as err:
        cause: BaseException = err  # MONAI wraps our ConfigError (e.g. from build_network): show its message
        while cause.__cause__ is not None and not isinstance(cause, NaslungError):
            cause = cause.__cause__
        reason = cause if isinstance(cause, NaslungError) else err
        raise ConfigError(f"cannot build the training engines from the config: {reason}") from err
    history_path = fold_dir / HISTORY
    _History(history_path, trainer, evaluator)
    if show_progress:
        attach_progress_bar(trainer, f"train {fold_dir.name}", lambda out: {"loss": float(out[0]["loss"])})
    trainer.run()
    set_determinism(seed=None)

    best_path = fold_dir / CHECKPOINT
    network.load_state_dict(torch.load(best_path, map_location=device, weights_only=True))
    network.eval()
    batch_size = int(merged["batch_size"])
    val_rows = predict(network, split.val, device, batch_size)
    _write_predictions(fold_dir / VAL_PREDICTIONS, val_rows)
    result: dict[str, Any] = {
        "test_fold": test_fold,
        "best_epoch": json.loads(best_path.with_suffix(".json").read_text(encoding="utf-8"))["epoch"],
        "epochs_run": int(trainer.state.epoch),
        "val": binary_metrics([r["label"] for r in val_rows], [r["probability"] for r in val_rows]),
        "n_train": len(split.train),
        "n_val": len(split.val),
        "n_test": len(split.test),
    }
    outputs = [FOLD_METRICS, VAL_PREDICTIONS, CHECKPOINT, HISTORY]
    if split.test:
        test_rows = predict(network, split.test, device, batch_size)
        _write_predictions(fold_dir / TEST_PREDICTIONS, test_rows)
        result["test"] = binary_metrics([r["label"] for r in test_rows], [r["probability"] for r in test_rows])
        outputs.append(TEST_PREDICTIONS)
    result["history"] = read_jsonl(history_path)
    write_json(fold_dir / FOLD_METRICS, result)
    mark_done(fold_dir, digest, outputs, {k: result[k] for k in ("val", "best_epoch") if k in result})
    return result


def train_fold_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`train_fold` for one (network, held-out fold) job given as a picklable mapping, for an executor.

    ``job`` holds ``datalist``, ``test_fold``, ``out_dir`` and optionally ``config`` and ``overrides``; each job
    writes only its own ``out_dir/fold_<k>/`` and resumes on its own, so jobs can run in parallel (e.g. Ray tasks
    of :func:`naslung.pipeline.search.executors.make_executor`) and a re-run redoes only unfinished folds.
    """
    return train_fold(job["datalist"], job["test_fold"], job["out_dir"], job.get("config"), job.get("overrides"))


def train_folds(
    datalist: Sequence[dict[str, Any]],
    folds: Sequence[int],
    out_dir: str | os.PathLike,
    config: str | os.PathLike | dict | None = None,
    overrides: dict[str, Any] | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Run :func:`train_fold` for each held-out fold and summarise test metrics as mean ± std over folds."""
    per_fold = [train_fold(datalist, f, out_dir, config, overrides, show_progress) for f in folds]
    summary = {
        "folds": list(folds),
        "per_fold": [{"fold": r["test_fold"], **r.get("test", {})} for r in per_fold],
        "summary": summarise_folds([r["test"] for r in per_fold if "test" in r]) if per_fold else {},
    }
    write_json(Path(out_dir) / CV_METRICS, summary)
    return summary
