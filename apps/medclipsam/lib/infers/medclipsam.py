"""Infer task ``medclipsam``: text-prompted zero-shot segmentation (BiomedCLIP saliency → coarse
mask → visual prompts → SAM), slice by slice, label in the source grid. Thin: the work is done by
:class:`medclipsam.serving.infer.ZeroShotSegmenter`."""

from __future__ import annotations

from typing import Any, Dict, Tuple, Union

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.utils.others.generic import device_list

from medclipsam.serving.infer import ZeroShotSegmenter
from medclipsam.serving.request import default_config


class MedClipSamInfer(InferTask):
    def __init__(self, segmenter: ZeroShotSegmenter, preset: str = "v2", device: str = "",
                 description: str | None = None) -> None:
        config = default_config()
        config["preset"] = [preset] + [p for p in config["preset"] if p != preset]
        devices = device_list()
        config["device"] = [device] + [d for d in devices if d != device] if device else devices
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=segmenter.vocabulary.labels(),
            dimension=3,
            description=description or ("Text-prompted zero-shot segmentation (MedCLIP-SAM): type the target in "
                                        "'prompt' (several separated by ';') or pick Class Prompts; a request "
                                        "without a 'prompt' option (OHIF's Auto-Segmentation as shown) segments "
                                        "every vocabulary label the presence gate finds"),
            config=config,
        )
        self.segmenter = segmenter

    def is_valid(self) -> bool:
        return True                      # zero-shot: no checkpoint of ours to wait for

    def __call__(self, request) -> Tuple[Union[str, None], Dict[str, Any]]:
        return self.segmenter(request["image"], request, output=request.get("medclipsam_output"))
