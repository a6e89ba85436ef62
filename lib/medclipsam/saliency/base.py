"""What every saliency method returns, and the registry that names them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

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


class BatchSaliencyFn(Protocol):
    """Several (image, text) pairs at once: ``pixels`` B×3×S×S, ``text_embeddings`` B×D, one config
    per pair (a seeded method gets each pair's own seed); one output per pair, equal to what the
    per-image form gives for that pair."""

    def __call__(self, clip: Any, pixels: torch.Tensor, text_embeddings: torch.Tensor,
                 cfgs: Sequence[Any]) -> list[MethodOutput]: ...


@dataclass(frozen=True)
class SaliencyMethod:
    name: str
    fn: Callable[..., MethodOutput]
    config_cls: type
    description: str
    batch_fn: Callable[..., list[MethodOutput]] | None = None     # optional :class:`BatchSaliencyFn`

    @property
    def batched(self) -> bool:
        return self.batch_fn is not None

    def run_batch(self, clip: Any, pixels: torch.Tensor, text_embeddings: torch.Tensor,
                  cfgs: Sequence[Any]) -> list[MethodOutput]:
        """One output per (pixels[b], text_embeddings[b], cfgs[b]): the batch form where the method
        has one, else the per-image form called pair by pair with that pair's own config."""
        if not len(pixels) == len(text_embeddings) == len(cfgs):
            raise ValueError(f"{len(pixels)} images, {len(text_embeddings)} text embeddings and {len(cfgs)} "
                             "configs given; give one of each per pair")
        if self.batch_fn is not None:
            return list(self.batch_fn(clip, pixels, text_embeddings, list(cfgs)))
        return [self.fn(clip, pixels[b:b + 1], text_embeddings[b:b + 1], cfg) for b, cfg in enumerate(cfgs)]


SALIENCY_METHODS: Registry[SaliencyMethod] = Registry("saliency method")


def register_saliency(name: str, config_cls: type, description: str,
                      batch: Callable[..., list[MethodOutput]] | None = None):
    """Register the decorated per-image function under ``name``; ``batch`` is its optional batch
    form (:class:`BatchSaliencyFn`), used by callers that have several images or prompts at once."""

    def decorator(fn: Callable[..., MethodOutput]) -> Callable[..., MethodOutput]:
        SALIENCY_METHODS.register(name)(SaliencyMethod(name, fn, config_cls, description, batch))
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
