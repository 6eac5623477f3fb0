"""naslung's MONAI Label app: classify lung nodules (benign/malignant) with exported naslung bundles.

Start (in the environment made by ``make_env.sh``)::

    monailabel start_server --app bundles/monailabel --studies STUDIES \\
        --conf bundles /path/naslung_classifier[,/path/naslung_ensemble] [--conf work_dir DIR]

Each bundle is served under its folder name (``/infer/naslung_classifier``) from a working copy in ``work_dir``
(default ``STUDIES/.naslung_monailabel``), which ``/train/<name>`` fine-tunes in place.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lib.bundle_copies import working_copy
from lib.infers.nodule_classifier import NoduleClassifierInfer
from lib.trainers.nodule_finetune import LABEL_VALUES, NoduleFinetuneTrain
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

__all__ = ["NaslungNoduleApp"]

logger = logging.getLogger(__name__)

#: Work folder inside the studies folder when ``--conf work_dir`` is not given.
DEFAULT_WORK_DIR = ".naslung_monailabel"


class NaslungNoduleApp(MONAILabelApp):
    """MONAI Label app serving naslung bundles: one infer and one train task per bundle.

    ``--conf`` keys: ``bundles`` (comma-separated bundle folders, required), ``work_dir`` (working copies, cubes
    and training runs), ``models`` (comma-separated names to serve; default all), ``skip_trainers`` (``true``
    serves inference only).

    Raises:
        MONAILabelException: no ``bundles`` given, a folder that is not a bundle, or two bundles with one name.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        sources = [Path(p.strip()).expanduser() for p in conf.get("bundles", "").split(",") if p.strip()]
        if not sources:
            raise MONAILabelException(
                MONAILabelError.APP_INIT_ERROR,
                "no bundle given: start with --conf bundles /path/to/naslung_bundle[,/path/to/another]",
            )
        names = [p.name for p in sources]
        if len(set(names)) != len(names):
            raise MONAILabelException(MONAILabelError.APP_INIT_ERROR, f"bundle folder names must differ: {names}")
        wanted = {m.strip() for m in conf.get("models", "all").split(",") if m.strip()}
        if "all" not in wanted:
            unknown = sorted(wanted - set(names))
            if unknown:
                raise MONAILabelException(MONAILabelError.APP_INIT_ERROR, f"--conf models {unknown}: not in {names}")
            sources = [p for p in sources if p.name in wanted]
        self.work_dir = Path(conf.get("work_dir") or os.path.join(studies, DEFAULT_WORK_DIR)).resolve()
        try:
            self.bundle_copies = {p.name: working_copy(p, self.work_dir, p.name) for p in sources}
        except ValueError as err:
            raise MONAILabelException(MONAILabelError.APP_INIT_ERROR, str(err)) from err
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="naslung nodule malignancy",
            description="Benign/malignant classification of clicked or outlined lung nodules (NAS-Lung bundles)",
            version="1.0",
            labels={"benign": min(LABEL_VALUES), "malignant": max(LABEL_VALUES)},
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, bundle in self.bundle_copies.items():
            task = NoduleClassifierInfer(str(bundle), self.conf)
            if not task.is_valid():
                raise MONAILabelException(MONAILabelError.APP_INIT_ERROR, f"{bundle}: not a usable bundle")
            infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        if self.conf.get("skip_trainers", "false").lower() in ("1", "true", "yes"):
            return {}
        return {
            name: NoduleFinetuneTrain(str(bundle), self.conf, self.work_dir)
            for name, bundle in self.bundle_copies.items()
            if (bundle / "configs" / "train.json").is_file()
        }
