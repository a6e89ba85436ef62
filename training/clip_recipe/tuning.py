"""M2IB's β for the model card, chosen on held-out slices (``--tune-beta``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .prompts import GROUPS, Slice

# β values tried by :func:`tune_beta` (algorithms.md §13: tune β on labelled validation images; the
# papers used 0.1–2 for BiomedCLIP, whose saliency maps are not those of a 4-block model)
BETA_CANDIDATES = (1.0, 2.0, 3.0)
# prompt → structure whose coarse-mask Dice chooses β (the targets the demo is measured on)
BETA_TARGETS = {"tumor": "tumor", "lungs": "lungs", "breast tumor": "lesion"}


def tune_beta(folder: Path, data: Sequence[Slice], targets: Mapping[str, str], limit: int, layer: int,
              settings: Mapping[str, str], betas: Sequence[float] = BETA_CANDIDATES) -> dict[str, Any]:
    """Choose M2IB's β for this model on held-out slices: for each β, the Dice of the coarse mask
    (M2IB, then the card's post-processing ``settings``) against the truth on up to ``limit`` slices
    per prompt of ``targets`` (prompt → structure or ``lungs``; slices where the structure covers
    32 px to half the image, rendered in the window the engine picks for it, as the pipeline sees
    them). Returns ``beta`` (the best mean
    over the prompts; ties to the smaller β) and ``dice`` (β → prompt → mean Dice)."""
    from medclipsam.config import PipelineConfig
    from medclipsam.models import load_clip
    from medclipsam.postprocess import make_coarse_mask
    from medclipsam.saliency import compute_saliency, text_target

    clip = load_clip(f"local-dir:{folder}")
    chosen: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for prompt, structure in targets.items():
        parts = GROUPS.get(structure, (structure,))
        items = []
        for s in data:
            if len(items) >= limit:
                break
            hidden = set(getattr(s, "hidden", ()) or ())
            if any(p in hidden for p in parts) or not any(p in s.masks for p in parts):
                continue
            rendered_for = getattr(s, "target", None)       # the window was chosen for another target
            if rendered_for is not None and rendered_for not in (prompt, structure, *parts):
                continue
            mask = np.zeros(np.asarray(s.rgb).shape[:2], bool)
            for p in parts:
                mask |= np.asarray(s.masks.get(p, mask), bool)
            if mask.sum() >= 32 and mask.mean() <= 0.5:
                items.append((np.asarray(s.rgb), mask))
        if items:
            chosen[prompt] = items
    dice: dict[str, dict[str, float]] = {}
    for beta in betas:
        cfg = PipelineConfig.from_preset("v2", {**dict(settings), "m2ib.layer": str(layer), "m2ib.beta": str(beta)})
        row = {}
        for prompt, items in chosen.items():
            target = text_target(clip, prompt)
            vals = []
            for rgb, mask in items:
                sal = compute_saliency(clip, rgb, target, "m2ib", cfg.m2ib).saliency_map
                coarse = make_coarse_mask(sal, rgb, cfg.postprocess)
                vals.append(2.0 * float((coarse & mask).sum()) / max(float(coarse.sum() + mask.sum()), 1.0))
            row[prompt] = round(float(np.mean(vals)), 4)
        dice[f"{beta:g}"] = row
    if not chosen:
        return {"beta": None, "dice": {}, "slices": {}}
    means = {b: float(np.mean(list(r.values()))) for b, r in dice.items()}
    best = max(means, key=lambda b: (round(means[b], 4), -float(b)))
    return {"beta": float(best), "dice": dice, "mean_dice": {b: round(m, 4) for b, m in means.items()},
            "slices": {p: len(v) for p, v in chosen.items()}}
