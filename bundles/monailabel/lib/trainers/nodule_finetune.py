"""MONAI Label train task: fine-tune a naslung bundle on the nodules outlined in the datastore's final labels.

Label images mark nodules by class: voxel value 1 = benign, 2 = malignant (0 = background), i.e. class index + 1,
so that a painted benign nodule is not background. Each connected component of a value is one nodule; its centroid
is where the bundle's own ``NoduleInputd`` cuts the 32³ cube that the bundle's ``train.json`` trains on.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.train.bundle import BundleTrainTask

from lib.bundle_copies import bundle_nodule_input, bundle_parser, install_weights, is_ensemble, use_bundle_scripts
from lib.nodule_centres import centres_from_label

__all__ = ["LABEL_VALUES", "NoduleFinetuneTrain", "nodule_cubes_from_labels"]

logger = logging.getLogger(__name__)

#: Label image value -> class (0 benign, 1 malignant).
LABEL_VALUES: dict[int, int] = {1: 0, 2: 1}


def nodule_cubes_from_labels(
    pairs: list[dict[str, str]], nodule_input: Any, cube_dir: str | os.PathLike
) -> list[dict[str, Any]]:
    """Cut one cube per labelled nodule and save it, returning the bundle's training datalist.

    Args:
        pairs: ``{"image": CT path, "label": label image path}`` (MONAI Label's ``datastore.datalist()``).
        nodule_input: the bundle's ``NoduleInputd``.
        cube_dir: folder for the ``.npy`` cubes (window-scaled, [0, 1], as ``naslung prepare`` writes).

    Returns:
        ``{"image": cube.npy, "label": 0|1, "patient_id": image name, "nodule_id": ...}`` entries; nodules the
        bundle cannot cut are left out with a warning.
    """
    folder = Path(cube_dir)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for pair in pairs:
        image_id = Path(pair["image"]).name.split(".")[0]
        for centre in centres_from_label(pair["label"], values=sorted(LABEL_VALUES), prefix=image_id):
            item = nodule_input({"image": pair["image"], "center_mm": centre.center_mm})
            if item.get("error"):
                logger.warning("%s: nodule at %s left out: %s", image_id, centre.center_voxel, item["error"])
                continue
            cube_path = folder / f"{centre.nodule_id}.npy"
            np.save(cube_path, torch.as_tensor(item["image"])[0].numpy().astype(np.float32))
            label = LABEL_VALUES[int(centre.extra["value"])]
            entries.append(
                {"image": str(cube_path), "label": label, "patient_id": image_id, "nodule_id": centre.nodule_id}
            )
    return entries


class NoduleFinetuneTrain(BundleTrainTask):
    """Fine-tune the bundle's network(s) with the bundle's own ``train.json`` on the datastore's labelled nodules.

    Departs from :class:`BundleTrainTask` where its segmentation defaults break classification: MONAI Label's
    datalist pairs a CT with a label *image*, while the bundle trains on 32³ cubes with a 0/1 class, so the
    datalist is turned into cubes (:func:`nodule_cubes_from_labels`); the validation split is the bundle's
    patient-wise, class-stratified one instead of a random cut of images; the device is a ``torch.device`` (the
    bundle reads ``@device.type``); each run writes to a fresh output folder; an ensemble's members are trained one
    after the other (``member_index``); and the best weights are installed into the working copy (``.pt`` and
    re-exported ``.ts``), so the infer task serves them at once.

    Args:
        path: the bundle (a working copy).
        conf: the app's ``--conf`` values.
        work_dir: folder for cubes and training runs (``WORK_DIR/train/<name>``).
    """

    def __init__(self, path: str, conf: dict[str, str], work_dir: str | os.PathLike) -> None:
        super().__init__(path, conf, load_strict=True)
        self.work_dir = Path(work_dir)
        self.ensemble = is_ensemble(path) if self.valid else False
        self._member_index = 0
        self._run_dir = self.work_dir
        self._pretrained = True

    def config(self) -> dict[str, Any]:
        options = super().config()
        for key in ("multi_gpu", "gpus", "tracking", "tracking_uri", "tracking_experiment_name", "model_filename"):
            options.pop(key, None)
        options.update(max_epochs=10, val_split=0.2, seed=0)
        return options

    def _fetch_datalist(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        pairs = [{"image": d["image"], "label": d["label"]} for d in datastore.datalist() if d]
        if not pairs:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                "no labelled image in the datastore: save final labels marking nodules (1 benign, 2 malignant)",
            )
        entries = nodule_cubes_from_labels(pairs, bundle_nodule_input(self.bundle_path), self._run_dir / "cubes")
        counts = {c: sum(1 for e in entries if e["label"] == c) for c in (0, 1)}
        logger.info("fine-tuning data: %d nodules (%d benign, %d malignant)", len(entries), counts[0], counts[1])
        if not entries:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "the final labels mark no nodule (values 1, 2)")
        return entries

    def _partition_datalist(self, datalist, request, shuffle=False):
        use_bundle_scripts(self.bundle_path)
        from scripts.naslung_bundle.runtime.nodule_inputs import split_train_val

        fraction = float(request.get("val_split", 0.2))
        split = split_train_val(datalist, val_fraction=fraction, seed=int(request.get("seed", 0)))
        logger.info("train %d / validation %d nodules", len(split["train"]), len(split["val"]))
        return split["train"], split["val"]

    def _load_checkpoint(self, model_pytorch, pretrained, train_handlers) -> None:
        """Nothing to add: the bundle's ``train.json`` loads ``pretrained_ckpt`` itself (cleared when not pretrained;
        the base method fails on ``pretrained=False`` and loads non-strictly)."""

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        overrides["device"] = torch.device(overrides["device"])
        overrides["max_epochs"] = overrides["train#trainer#max_epochs"]
        overrides["output_dir"] = str(self._run_dir / "output")
        if self.ensemble:
            overrides["member_index"] = self._member_index
        if not self._pretrained:
            overrides["pretrained_ckpt"] = ""
        return overrides

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        name = str(request.get("model", Path(self.bundle_path).name))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self._pretrained = bool(request.get("pretrained", True))
        n_members = len(bundle_parser(self.bundle_path).get("member_defs")) if self.ensemble else 1
        states = []
        for index in range(n_members):
            self._member_index = index
            self._run_dir = self.work_dir / "train" / name / stamp / (f"member_{index}" if self.ensemble else "")
            if self._run_dir.exists():
                shutil.rmtree(self._run_dir)
            super().__call__(request, datastore)
            best = self._run_dir / "output" / "checkpoints" / "best_model.pt"
            if not best.is_file():
                raise MONAILabelException(MONAILabelError.SERVER_ERROR, f"training wrote no {best}")
            states.append(torch.load(best, map_location="cpu", weights_only=True))
        written = install_weights(self.bundle_path, states)
        logger.info("installed fine-tuned weights into %s: %s", self.bundle_path, written)
        return {"model": name, "members": n_members, "run_dir": str(self.work_dir / "train" / name / stamp)}
