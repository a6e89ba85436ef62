"""Augmentation and SAM's own input transform (what ``SamPredictor.set_image`` does)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch


def augment(rgb: np.ndarray, masks: Mapping[str, np.ndarray], rng: np.random.Generator
            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Random crop (sometimes non-square, so SAM's padding is exercised), left-right flip, contrast."""
    h, w = rgb.shape[:2]
    out = {k: np.asarray(v, dtype=bool) for k, v in masks.items()}
    if rng.random() < 0.5:
        ch, cw = int(round(h * rng.uniform(0.7, 1.0))), int(round(w * rng.uniform(0.7, 1.0)))
        r0, c0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        rgb = rgb[r0:r0 + ch, c0:c0 + cw]
        out = {k: v[r0:r0 + ch, c0:c0 + cw] for k, v in out.items()}
    if rng.random() < 0.5:
        rgb = rgb[:, ::-1]
        out = {k: v[:, ::-1] for k, v in out.items()}
    gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
    rgb = np.clip(rgb.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb), {k: np.ascontiguousarray(v) for k, v in out.items()}


def model_input(model, transform, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """What ``SamPredictor.set_image`` feeds the image encoder: resized, normalised, padded (1×3×S×S)."""
    resized = transform.apply_image(rgb)
    t = torch.as_tensor(resized, device=model.device).permute(2, 0, 1).contiguous()[None]
    return model.preprocess(t), (int(t.shape[-2]), int(t.shape[-1]))
