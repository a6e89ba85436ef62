"""A PNG montage of a series result for a person to look at: one row per inspected slice.

Each row is the 2D overlay panel (:func:`medclipsam.overlay.render_overlay`): saliency map, coarse
mask with the visual prompts (boxes, points), SAM's mask — captioned with the slice index, the
prompt, the image–text similarity and the gate's decision. A slice judged target-absent shows the
image alone with that decision: the engine never computed saliency there.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..overlay import render_overlay
from .engine import SliceDetail, VolumeResult


def detail_panel(detail: SliceDetail, prompt: str, threshold: float | None, banner: Sequence[str] = ()) -> np.ndarray:
    rgb = detail.rgb
    h, w = rgb.shape[:2]
    gate = f"threshold {threshold:.3f}" if threshold is not None else "no absolute threshold"
    if detail.saliency_map is None:
        state = "judged target-absent: skipped (no saliency, no SAM)"
        saliency, coarse, mask = np.zeros((h, w), np.float32), np.zeros((h, w), bool), np.zeros((h, w), bool)
        boxes, points, labels = np.zeros((0, 4)), np.zeros((0, 2)), np.zeros((0,))
    else:
        vp = detail.visual_prompts
        found = detail.mask is not None and bool(detail.mask.any())
        state = "target present: " + ("segmented" if found else "no mask (empty coarse mask)")
        saliency, coarse = detail.saliency_map, detail.coarse_mask
        mask = detail.mask if detail.mask is not None else np.zeros((h, w), bool)
        boxes, points, labels = vp.boxes, vp.points, vp.point_labels
    caption = (f"slice {detail.index}  prompt: {prompt}  similarity {detail.similarity:.3f} ({gate})  {state}"
               "  [saliency | coarse mask + visual prompts | SAM mask]")
    if banner:
        caption += "\n" + "; ".join(banner)
    return render_overlay(rgb, saliency, coarse, mask, boxes, points, labels, caption)


def render_montage(result: VolumeResult, banner: Sequence[str] = (), width: int = 900) -> np.ndarray:
    """All inspected slices of ``result`` stacked vertically (uint8 RGB), each row ``width`` wide."""
    from PIL import Image

    if not result.details:
        raise ValueError("the result has no inspected slices; run the engine with VolumeConfig(inspect=N)")
    rows = []
    for d in result.details:
        pr = result.prompts[d.prompt]
        panel = detail_panel(d, pr.name, pr.gate.threshold, banner)
        scale = width / panel.shape[1]
        rows.append(np.asarray(Image.fromarray(panel).resize((width, max(1, round(panel.shape[0] * scale))),
                                                              Image.BILINEAR)))
        rows.append(np.full((6, width, 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)
