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

    def check_request(self, request) -> tuple[dict, str]:
        """The request with the defaults under it, and its device, after every check of
        :func:`medclipsam.weak.service.check_train_request` (ranges, unknown keys, memory of a step).
        The app's train route calls it when the request arrives (400 with the fix); ``__call__`` again."""
        req = {**self.config(), **(request or {})}
        device = str(resolve_device(str(service.first(req.get("device")) or "")))
        service.check_train_request(req, device, num_classes=self.vocabulary.prompted_value + 1)
        return req, device

    def __call__(self, request, datastore):
        req, device = self.check_request(request)
        return service.train_from_datastore(datastore, self.vocabulary, req, self._model_dir, device=device,
                                            log=logger.info)

    # BasicTrainTask's abstract pieces. The network, optimiser and loss are the engine's (what
    # __call__ trains); MONAI Label's ignite loop, which alone would use transforms and an inferer,
    # is replaced by __call__, so those three say so if anything calls them.
    def network(self, context):
        from medclipsam.weak.train import build_network

        return build_network(self.vocabulary.prompted_value + 1)

    def optimizer(self, context):
        from medclipsam.weak.train import TrainConfig, build_optimizer

        return build_optimizer(context.network.parameters(), TrainConfig().optimizer,
                               service.train_defaults()["lr_max"])

    def loss_function(self, context):
        from medclipsam.weak.train import loss_function

        return loss_function()

    def _ignite_only(self, context):
        raise NotImplementedError("medclipsam_weak trains with medclipsam.weak.train (see __call__), not with "
                                  "MONAI Label's ignite loop; it has no ignite transforms or inferer")

    train_pre_transforms = train_post_transforms = val_inferer = _ignite_only
