"""Train task ``medclipsam_weak``: retrain the segmentation network on the datastore's final labels
(cyclic learning rate, checkpoint ensemble). A BasicTrainTask for MONAI Label's train endpoints,
its stats and its subprocess runner; the training is :func:`medclipsam.weak.service.train_from_datastore`."""

from __future__ import annotations

import logging

from monailabel.tasks.train.basic_train import BasicTrainTask
from monailabel.utils.others.generic import device_list

from medclipsam.serving.models import resolve_device
from medclipsam.serving.vocabulary import Vocabulary
from medclipsam.weak import service

logger = logging.getLogger(__name__)


class MedClipSamWeakTrain(BasicTrainTask):
    def __init__(self, model_dir: str, vocabulary: Vocabulary) -> None:
        super().__init__(model_dir, description="Retrain the segmentation network on accepted (final) labels",
                         config={**service.train_defaults(), "device": device_list()}, amp=False, tracking=None)
        self.vocabulary = vocabulary

    def config(self):
        return {**self._config}

    def __call__(self, request, datastore):
        req = {**self.config(), **(request or {})}
        device = str(resolve_device(str(service.first(req.get("device")) or "")))
        return service.train_from_datastore(datastore, self.vocabulary, req, self._model_dir, device=device,
                                            log=logger.info)

    # BasicTrainTask's abstract ignite pieces: unused, the training above replaces the ignite loop
    def network(self, context):
        raise NotImplementedError

    def optimizer(self, context):
        raise NotImplementedError

    def loss_function(self, context):
        raise NotImplementedError

    def train_pre_transforms(self, context):
        raise NotImplementedError

    def train_post_transforms(self, context):
        raise NotImplementedError

    def val_inferer(self, context):
        raise NotImplementedError
