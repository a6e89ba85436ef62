"""Infer task ``medclipsam_weak``: the network retrained on accepted labels, as a checkpoint ensemble
(mean probabilities → label; entropy → uncertainty). Thin: :mod:`medclipsam.weak.service`."""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple, Union

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.utils.others.generic import device_list

from medclipsam.serving.models import resolve_device
from medclipsam.serving.vocabulary import Vocabulary
from medclipsam.weak import service
from medclipsam.weak.ensemble import EnsemblePredictor


class MedClipSamWeakInfer(InferTask):
    def __init__(self, predictor: EnsemblePredictor, vocabulary: Vocabulary, datastore: Callable[[], Any]) -> None:
        super().__init__(
            type=InferType.SEGMENTATION, labels=vocabulary.labels(), dimension=3,
            description="Segmentation network retrained on the accepted labels (checkpoint ensemble); the result "
                        "JSON carries the study's uncertainty; option 'return' = entropy gives the entropy map",
            config={"return": ["label", "entropy"], "device": device_list()},
        )
        self.predictor, self.vocabulary, self.datastore = predictor, vocabulary, datastore

    def is_valid(self) -> bool:
        return self.predictor.available()       # listed in /info/ once an ensemble is published

    def __call__(self, request) -> Tuple[Union[str, None], Dict[str, Any]]:
        device = str(resolve_device(str(service.first(request.get("device")) or "")))
        path, js, result = service.infer_volume(self.predictor, request["image"], request, device, self.vocabulary)
        image_id = service.image_id_of(str(request["image"]))
        store = self.datastore()
        if image_id in store.list_images():
            service.record_score(store, image_id, result.uncertainty, service.model_stamp(self.predictor))
        return path, js
