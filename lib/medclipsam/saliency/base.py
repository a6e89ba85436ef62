"""What every saliency method returns, and the registry that names them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import torch

from ..registry import Registry


@dataclass
class MethodOutput:
    """A method's raw result on the token grid of the CLIP image tower."""

    raw_grid: torch.Tensor          # gh × gw, not min-max normalised (M2IB: capacity sums; CAMs: ReLU'd CAM)
    extras: dict[str, Any] = field(default_factory=dict)


class SaliencyFn(Protocol):
    def __call__(self, clip: Any, pixels: torch.Tensor, text_embedding: torch.Tensor, cfg: Any) -> MethodOutput: ...


@dataclass(frozen=True)
class SaliencyMethod:
    name: str
    fn: Callable[..., MethodOutput]
    config_cls: type
    description: str


SALIENCY_METHODS: Registry[SaliencyMethod] = Registry("saliency method")


def register_saliency(name: str, config_cls: type, description: str):
    def decorator(fn: Callable[..., MethodOutput]) -> Callable[..., MethodOutput]:
        SALIENCY_METHODS.register(name)(SaliencyMethod(name, fn, config_cls, description))
        return fn

    return decorator


@dataclass
class SaliencyResult:
    """The saliency map of one image for one text target.

    ``saliency_map`` is min-max normalised to [0, 1] and aligned with the image's own pixels (H×W);
    ``raw_grid`` is the method's un-normalised map on the token grid, whose magnitude can be
    compared between images and slices (min-max normalisation makes every map span [0, 1]);
    ``similarity`` is the cosine between the clean image embedding and the text embedding.
    """

    saliency_map: np.ndarray
    raw_grid: np.ndarray
    similarity: float
    method: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def raw_max(self) -> float:
        return float(self.raw_grid.max()) if self.raw_grid.size else 0.0

    @property
    def raw_mean(self) -> float:
        return float(self.raw_grid.mean()) if self.raw_grid.size else 0.0

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "similarity": self.similarity, "raw_max": self.raw_max,
                "raw_mean": self.raw_mean, **{k: v for k, v in self.extras.items() if np.isscalar(v)}}
