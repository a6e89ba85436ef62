"""What the MONAI Label app (``apps/medclipsam/main.py``) is made of, from its ``--conf`` pairs, and
the known traps of MONAI Label 0.8.5 handled once here (``docs/monailabel.md`` §Traps):

* **dcmqi download** — the DICOMweb datastore downloads dcmqi from GitHub at start-up unless
  ``itkimage2segimage`` is on ``PATH``; the ``dcmqi`` wheel installs it beside the Python that runs
  the server, so that folder is put on ``PATH``;
* **PYTHONPATH** — async training/scoring subprocesses read ``os.environ["PYTHONPATH"]`` unguarded
  (a KeyError leaves the task SUBMITTED for ever): set to the app folder when missing;
* **MLflow tracking** — the default file-store tracking fails with mlflow 3 and MONAI 1.6: off
  unless ``MONAI_LABEL_TRACKING_ENABLED`` is set;
* **trusting routes and blocking inference** — :meth:`AppSetup.install_routes` puts checked routes
  (ids, tags, uploads, options; inference in a worker thread) in front of MONAI Label's
  (:mod:`.routes`), with upload limits read before a body (:mod:`.upload_limit`), and the datastores
  are guarded (:mod:`.store_guard`).
* **login and exposure** — MONAI Label's token check refuses every token under PyJWT 2; replaced,
  and a non-loopback server without login is warned about in the log (:mod:`.auth`).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..errors import ConfigError
from .background import tie_to_server
from .infer import ZeroShotSegmenter
from .models import ModelCache
from .vocabulary import Vocabulary, load_vocabulary

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
DATASTORE_KINDS = ("auto", "nifti", "dicom")
NIFTI_PATTERNS = ("*.nii.gz", "*.nii", "*.nrrd")


def version() -> str:
    from .. import __version__

    return __version__


def handle_environment_traps(app_dir: str | Path) -> list[str]:
    """Fix the process environment for MONAI Label (module docstring); returns what was changed."""
    changed = []
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = bin_dir + (os.pathsep + path if path else "")
        changed.append(f"PATH += {bin_dir} (dcmqi's itkimage2segimage)")
    if not os.environ.get("PYTHONPATH"):
        os.environ["PYTHONPATH"] = str(Path(app_dir).resolve())
        changed.append(f"PYTHONPATH = {os.environ['PYTHONPATH']}")
    if "MONAI_LABEL_TRACKING_ENABLED" not in os.environ:
        os.environ["MONAI_LABEL_TRACKING_ENABLED"] = "false"
        try:
            from monailabel.config import settings

            settings.MONAI_LABEL_TRACKING_ENABLED = False
        except ImportError:
            pass
        changed.append("MONAI_LABEL_TRACKING_ENABLED = false")
    from .auth import secure_server_start

    secure_server_start()
    for c in changed:
        logger.info("medclipsam: %s", c)
    return changed


def datastore_kind(studies: str, requested: str = "auto") -> str:
    """``dicomweb`` for a URL; for a folder ``nifti`` when it holds NIfTI/NRRD files at its top
    level, else ``dicom``; ``requested`` (nifti | dicom) overrides for folders."""
    if studies.startswith(("http://", "https://")):
        return "dicomweb"
    if requested not in DATASTORE_KINDS:
        raise ConfigError(f"--conf datastore {requested!r}; use one of {', '.join(DATASTORE_KINDS)}")
    if requested != "auto":
        return requested
    folder = Path(studies)
    if any(next(folder.glob(p), None) for p in NIFTI_PATTERNS):
        return "nifti"
    return "dicom"


@dataclass
class AppSetup:
    app_dir: Path
    studies: str
    segmenter: ZeroShotSegmenter
    vocabulary: Vocabulary
    preset: str = "v2"
    datastore_kind: str = "nifti"
    dicom_cache: str | None = None
    device: str = ""                      # default device of requests ("" : CUDA when present, else CPU)
    auto_train_after: int = 5             # retrain medclipsam_weak after this many new final labels (0: never)
    model_dir: str | None = None          # where medclipsam_weak's ensembles go (default <app>/model)
    notes: list[str] = field(default_factory=list)
    allow_delete: bool = False            # DELETE /datastore/image (a source study) allowed
    max_upload_mb: int = 2048             # images, sessions, infer uploads
    max_label_mb: int = 512               # label uploads

    @property
    def policy(self):
        """What the guarded datastores accept (:class:`.store_guard.StorePolicy`)."""
        if getattr(self, "_policy", None) is None:
            from .label_check import LabelLimits
            from .store_guard import StorePolicy

            self._policy = StorePolicy(vocabulary=self.vocabulary, allow_delete=self.allow_delete,
                                       label_limits=LabelLimits(max_bytes=self.max_label_mb * MIB))
        return self._policy

    def install_routes(self, our_models: Callable[[], Iterable[str]]) -> bool:
        """The checked routes and the upload limits on MONAI Label's FastAPI app (once)."""
        from monailabel.app import app
        from monailabel.config import settings

        from .routes import install_routes
        from .upload_limit import UploadLimits, install_upload_limit

        api = settings.MONAI_LABEL_API_STR
        install_upload_limit(app, UploadLimits(default_bytes=self.max_upload_mb * MIB,
                                               by_path={f"{api}/datastore/label": self.max_label_mb * MIB}))
        return install_routes(app, our_models)

    @property
    def weak_model_dir(self) -> Path:
        return Path(self.model_dir or self.app_dir / "model") / "medclipsam_weak"

    @property
    def weak_predictor(self):
        """The published ensemble of the weakly supervised model (loaded on first use)."""
        if getattr(self, "_weak", None) is None:
            from ..weak.ensemble import EnsemblePredictor
            from ..weak.service import ensemble_dir

            self._weak = EnsemblePredictor(ensemble_dir(self.weak_model_dir))
        return self._weak

    def after_label_saved(self, datastore, start_training: Callable[..., Any]) -> dict[str, Any]:
        """After ``PUT /datastore/label``: start training ``medclipsam_weak`` (queued) when
        ``auto_train_after`` new final labels have come since the published ensemble was trained."""
        from ..weak.service import labels_since_training

        if self.auto_train_after <= 0:
            return {}
        new = labels_since_training(datastore, self.weak_predictor)
        if new < self.auto_train_after:
            return {"medclipsam_weak": f"{new} of {self.auto_train_after} new final labels before retraining"}
        task = start_training("medclipsam_weak", params={}, enqueue=True)
        logger.info("medclipsam: %d new final labels, retraining medclipsam_weak", new)
        return {"medclipsam_weak": f"{new} new final labels: retraining started", "train_task": task}

    @classmethod
    def from_conf(cls, app_dir: str | Path, studies: str, conf: Mapping[str, Any]) -> "AppSetup":
        from ..config import PRESETS

        conf = {str(k): str(v) for k, v in (conf or {}).items()}
        notes = handle_environment_traps(app_dir)
        tie_to_server()                                  # background tasks end with the server (.background)
        vocabulary = load_vocabulary(conf.get("vocabulary") or None)
        preset = conf.get("preset", "v2")
        PRESETS.get(preset)                              # unknown: the error lists the presets
        models = ModelCache(conf.get("clip") or None, conf.get("sam") or None)
        segmenter = ZeroShotSegmenter(models, vocabulary)
        kind = datastore_kind(studies, conf.get("datastore", "auto"))
        device = conf.get("device", "").strip()
        if device:
            from .models import resolve_device

            resolve_device(device)                      # cuda where there is none fails at start-up
        logger.info("medclipsam: CLIP %s, SAM %s (loaded on first inference), vocabulary %s, %s datastore",
                    models.clip_spec, models.sam_spec, vocabulary.source, kind)
        try:
            auto_train = int(conf.get("auto_train_after", "5"))
        except ValueError:
            raise ConfigError(f"--conf auto_train_after {conf['auto_train_after']!r} is not a whole number") from None
        from .request import as_bool

        try:
            allow_delete = as_bool(conf.get("allow_delete", "false"), "allow_delete")
        except ConfigError:
            raise ConfigError(f"--conf allow_delete {conf['allow_delete']!r}: give true or false") from None
        return cls(Path(app_dir), studies, segmenter, vocabulary, preset, kind, conf.get("dicom_cache") or None,
                   device, auto_train, conf.get("model_dir") or None, notes, allow_delete,
                   _positive_int(conf, "max_upload_mb", 2048), _positive_int(conf, "max_label_mb", 512))

    def datastore(self, default: Callable[[], Any]):
        if self.datastore_kind == "dicom":
            from monailabel.config import settings

            from .dicom_datastore import DicomFolderDatastore

            return DicomFolderDatastore(self.studies, self.dicom_cache, vocabulary=self.vocabulary,
                                        auto_reload=False, read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
                                        policy=self.policy)
        if self.datastore_kind == "nifti":
            from .store_guard import guarded_local_datastore

            return guarded_local_datastore(self.studies, self.policy)
        if self.datastore_kind == "dicomweb":
            from .dicomweb_datastore import dicomweb_datastore

            return dicomweb_datastore(self.studies, self.vocabulary, self.policy) or default()   # None: XNAT/DSA
        return default()

    def strategies(self) -> dict[str, Any]:
        from monailabel.tasks.activelearning.first import First
        from monailabel.tasks.activelearning.random import Random

        return {"random": Random(), "first": First()}


def _positive_int(conf: Mapping[str, str], key: str, default: int) -> int:
    text = conf.get(key, str(default))
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"--conf {key} {text!r}: give a whole number of MiB above 0 (default {default})")
    return value
