"""medclipsam's MONAI Label app: ``monailabel start_server --app apps/medclipsam --studies STUDIES``.

Studies: a folder of NIfTI/NRRD volumes (MONAI Label's local datastore), a folder of DICOM series
(ours: :class:`medclipsam.serving.dicom_datastore.DicomFolderDatastore`) or a DICOMweb URL (e.g.
Orthanc's ``http://host:8042/dicom-web``). ``--conf`` keys (all optional; the demo models by default):

    clip        CLIP model spec, e.g. local-dir:/models/biomedclip or hf-hub:microsoft/BiomedCLIP-...
    sam         SAM spec, e.g. litemedsam (a real medical SAM, installed with medclipsam) or
                vit_h:/models/sam_vit_h_4b8939.pth
    vocabulary  label vocabulary JSON (default: medclipsam's configs/vocabulary/default.json)
    preset      v2 (default) or v1
    device      default device of requests: cpu, cuda, cuda:1 (default: CUDA when present, else cpu)
    datastore   auto (default) | nifti | dicom  — how a studies folder is read
    dicom_cache where the DICOM-folder datastore keeps its NIfTI cache and labels (default <studies>/.medclipsam)
    auto_train_after  retrain medclipsam_weak after this many new final labels (default 5; 0: never)
    model_dir   where the retrained ensembles are kept (default apps/medclipsam/model)
    allow_delete      true: DELETE /datastore/image may remove an uploaded image (default false)
    max_upload_mb     largest image / session upload in MiB (default 2048)
    max_label_mb      largest label upload in MiB (default 512)

Models load on the first inference, once per device. The wiring is thin; the work is in the
``medclipsam`` package (``medclipsam.serving``).
"""

from __future__ import annotations

import logging

from lib.activelearning import Uncertainty, UncertaintyScoring
from lib.infers import MedClipSamInfer
from lib.infers.medclipsam_weak import MedClipSamWeakInfer
from lib.trainers import MedClipSamWeakTrain
from monailabel.interfaces.app import MONAILabelApp

from medclipsam.serving import app_setup

logger = logging.getLogger(__name__)


class MedClipSamApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.setup = app_setup.AppSetup.from_conf(app_dir, studies, conf)
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="medclipsam",
                         description="Text-prompted zero-shot segmentation of DICOM series (MedCLIP-SAM)",
                         version=app_setup.version())
        self.setup.install_routes(lambda: list(self._infers))

    def init_datastore(self):
        return self.setup.datastore(default=super().init_datastore)

    def init_infers(self):
        return {"medclipsam": MedClipSamInfer(self.setup.segmenter, preset=self.setup.preset,
                                              device=self.setup.device),
                "medclipsam_weak": MedClipSamWeakInfer(self.setup.weak_predictor, self.setup.vocabulary,
                                                       self.datastore)}

    def init_trainers(self):
        return {"medclipsam_weak": MedClipSamWeakTrain(str(self.setup.weak_model_dir), self.setup.vocabulary)}

    def init_strategies(self):
        return {**self.setup.strategies(), "uncertainty": Uncertainty(self.setup.weak_predictor)}

    def init_scoring_methods(self):
        return {"medclipsam_uncertainty": UncertaintyScoring(self.setup.weak_predictor)}

    def on_save_label(self, image_id, label_id):
        result = super().on_save_label(image_id, label_id) or {}
        return {**result, **self.setup.after_label_saved(self.datastore(), self.async_training)}
