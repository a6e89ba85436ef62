"""Held-out Dice through the pipeline's own SAM stage (``SamSegmenter``)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .sampling import PromptSampling, Slice, _pick_pixels, bounding_box, components, jitter_box, with_unions


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def evaluate_sam(sam, data: Sequence[Slice], *, seed: int = 0, sampling: PromptSampling | None = None,
                 num_points: int = 10, unions: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Held-out Dice of a loaded :class:`medclipsam.models.SamModel` through ``SamSegmenter``.

    For every (image, structure) pair: one jittered box around the structure (``box_dice``), one
    jittered box per connected component (``component_box_dice``), and ``num_points`` positive points
    drawn inside the structure (``point_dice``, the pipeline's points default), each with
    ``num_components`` = the structure's component count (the pipeline keeps that many components).
    Jitter and points come from ``np.random.default_rng(seed)``, so the numbers are reproducible.
    ``unions``: as in :func:`with_unions` (evaluated as structures of their own).
    """
    from medclipsam.prompts import VisualPrompts
    from medclipsam.sam_stage import SamSegmenter

    cfg = sampling or PromptSampling()
    rng = np.random.default_rng(seed)
    seg = SamSegmenter(sam)
    scores: dict[str, list[float]] = {"box": [], "component_box": [], "point": []}
    per_structure: dict[str, dict[str, list[float]]] = {}
    for item in data:
        seg.set_image(np.ascontiguousarray(item.rgb))
        masks = with_unions(item.masks, unions)
        for name in sorted(masks):
            m = masks[name]
            if int(m.sum()) < cfg.min_pixels:
                continue
            comps = components(m, cfg.min_pixels) or [m]
            k = len(comps)
            runs = {
                "box": VisualPrompts(boxes=[jitter_box(bounding_box(m), m.shape, rng, cfg)], num_components=k),
                "component_box": VisualPrompts(boxes=[jitter_box(bounding_box(c), m.shape, rng, cfg) for c in comps],
                                               num_components=k),
                "point": VisualPrompts(points=_pick_pixels(m, num_points, rng),
                                       point_labels=np.ones(num_points, np.int64), num_components=k),
            }
            for key, vp in runs.items():
                d = dice(seg.segment(vp).mask, m)
                scores[key].append(d)
                per_structure.setdefault(name, {}).setdefault(key, []).append(d)

    def mean(v: list[float]) -> float:
        return float(np.mean(v)) if v else float("nan")

    return {
        "box_dice": mean(scores["box"]),
        "component_box_dice": mean(scores["component_box"]),
        "point_dice": mean(scores["point"]),
        "pairs": len(scores["box"]),
        "per_structure": {n: {f"{k}_dice": round(mean(v), 4) for k, v in d.items()} | {"pairs": len(d["box"])}
                          for n, d in sorted(per_structure.items())},
    }
