"""Saliency maps from a CLIP model for a text target, by registered method.

Methods: ``m2ib`` (MedCLIP-SAMv2), ``gscorecam`` (MedCLIP-SAM v1), ``gradcam`` (baseline).
:func:`saliency_grids` runs several (image, text) pairs at once through a method's batch form
where it has one (M2IB), else pair by pair.
:func:`compute_saliency` pads the image to a square, runs the method on the CLIP input, upsamples
the token-grid map bilinearly to the input size, min-max normalises it and maps it back onto the
image's own pixels; it also returns the raw map and the image–text similarity.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..image import clip_input
from .base import SALIENCY_METHODS, MethodOutput, SaliencyMethod, SaliencyResult, register_saliency
from .cam import GradCAMConfig, GScoreCAMConfig, gradcam, gscorecam
from .m2ib import M2IBConfig, m2ib, m2ib_batch, m2ib_naive
from .text import load_prompt_file, prompts_for_task, text_target


def upsample_grid(raw_grid: torch.Tensor, size: int) -> torch.Tensor:
    """Token grid → size×size map (bilinear), NaN as 0."""
    g = torch.nan_to_num(raw_grid.float(), nan=0.0)
    return F.interpolate(g[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]


def min_max(values: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1]; a constant map becomes all zeros (nothing is salient)."""
    lo, hi = float(values.min()), float(values.max())
    return ((values - lo) / (hi - lo)).astype(np.float32) if hi > lo else np.zeros_like(values, dtype=np.float32)


def saliency_map_from_grid(raw_grid: torch.Tensor | np.ndarray, pad, image_size: int) -> np.ndarray:
    """The [0, 1] saliency map on the image's own pixels from a method's raw token grid.

    Min-max runs over the image's own pixels, after removing the square padding, so that padding
    cannot take up the map's dynamic range.
    """
    raw_image = pad.to_image(upsample_grid(torch.as_tensor(np.asarray(raw_grid, dtype=np.float32)), image_size))
    return np.clip(min_max(raw_image), 0.0, 1.0)


def _checked_params(entry: SaliencyMethod, params: Any | None) -> Any:
    cfg = params if params is not None else entry.config_cls()
    if not isinstance(cfg, entry.config_cls):
        raise TypeError(f"{entry.name} takes {entry.config_cls.__name__}, got {type(cfg).__name__}")
    return cfg


def saliency_grid(clip, pixels: torch.Tensor, text_embedding: torch.Tensor, method: str = "m2ib",
                  params: Any | None = None) -> MethodOutput:
    """Run a registered method on CLIP input pixels (1×3×S×S): its raw token-grid output."""
    entry = SALIENCY_METHODS.get(method)
    return entry.fn(clip, pixels.to(clip.device), text_embedding, _checked_params(entry, params))


def saliency_grids(clip, pixels: torch.Tensor, text_embeddings: torch.Tensor, method: str = "m2ib",
                   params: Sequence[Any | None] | None = None) -> list[MethodOutput]:
    """Run a registered method on B (image, text) pairs: ``pixels`` B×3×S×S, ``text_embeddings`` B×D,
    ``params`` one config per pair (None: the method's defaults). Methods with a batch form (M2IB)
    run the pairs together; the others are called pair by pair with each pair's own config, exactly
    as :func:`saliency_grid` would. One raw token-grid output per pair, in order."""
    entry = SALIENCY_METHODS.get(method)
    cfgs = [_checked_params(entry, p) for p in (params if params is not None else [None] * len(pixels))]
    return entry.run_batch(clip, pixels.to(clip.device), text_embeddings, cfgs)


def compute_saliency(clip, rgb: np.ndarray, text_embedding: torch.Tensor, method: str = "m2ib",
                     params: Any | None = None) -> SaliencyResult:
    """Saliency map of ``rgb`` (uint8 H×W×3) for a 1×D normalised text embedding."""
    entry = SALIENCY_METHODS.get(method)
    pixels, pad = clip_input(rgb, clip.image_size, clip.mean, clip.std)
    pixels = pixels.to(clip.device)
    with torch.no_grad():
        image_emb = clip.encode_image(pixels)
        similarity = float((image_emb * text_embedding.to(image_emb.device)).sum())
    out = saliency_grid(clip, pixels, text_embedding, method, params)
    saliency_map = saliency_map_from_grid(out.raw_grid, pad, clip.image_size)
    return SaliencyResult(saliency_map=saliency_map, raw_grid=out.raw_grid.numpy().astype(np.float32),
                          similarity=similarity, method=entry.name, extras=dict(out.extras))


__all__ = [
    "SALIENCY_METHODS", "SaliencyMethod", "SaliencyResult", "MethodOutput", "register_saliency",
    "M2IBConfig", "GScoreCAMConfig", "GradCAMConfig", "m2ib", "m2ib_batch", "m2ib_naive", "gscorecam", "gradcam",
    "compute_saliency", "saliency_grid", "saliency_grids", "saliency_map_from_grid", "upsample_grid", "min_max",
    "text_target", "load_prompt_file", "prompts_for_task",
]
