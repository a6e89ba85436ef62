"""After training: the presence gate's calibration on held-out slices and the M2IB saliency check."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medclipsam.evaluation import roc_auc

from .card import M2IB_LAYER
from .forward import _device_of, _encode_texts
from .losses import contrastive_loss
from .prompts import Slice, StructurePrompt

# M2IB check after training: prompt → the structure whose mask it should land on
SALIENCY_CHECKS = {"tumor": "tumor", "breast tumor": "lesion", "left lung": "left lung", "liver": "liver",
                   "brain": "brain"}


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold t (present: score ≥ t) that maximises balanced accuracy, and that accuracy.

    Candidates are midpoints between consecutive distinct scores; ties go to the middle candidate.
    """
    s, y = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    u = np.unique(s)
    cands = np.concatenate([[u[0] - 1e-3], (u[1:] + u[:-1]) / 2.0, [u[-1] + 1e-3]])
    pos, neg = s[y], s[~y]
    tpr = (pos[None, :] >= cands[:, None]).mean(axis=1) if pos.size else np.zeros(cands.size)
    tnr = (neg[None, :] < cands[:, None]).mean(axis=1) if neg.size else np.zeros(cands.size)
    bacc = 0.5 * (tpr + tnr)
    best = np.flatnonzero(bacc >= bacc.max() - 1e-12)
    i = int(best[len(best) // 2])
    return float(cands[i]), float(bacc[i])


@torch.no_grad()
def similarities(model, tokenizer, pixels: torch.Tensor, texts: Sequence[str], batch: int = 64) -> np.ndarray:
    """cos(image, text) for every image × text (N × P)."""
    model.eval()
    txt = _encode_texts(model, tokenizer, texts)
    dev = _device_of(model)
    out = [F.normalize(model.encode_image(pixels[i:i + batch].to(dev)), dim=-1) @ txt.T
           for i in range(0, len(pixels), batch)]
    return torch.cat(out).float().cpu().numpy() if out else np.zeros((0, len(texts)), np.float32)


def calibrate_presence(sims: np.ndarray, labels: np.ndarray, prompts: Sequence[StructurePrompt]) -> dict[str, Any]:
    """Pooled AUC and balanced-accuracy threshold of the presence gate from held-out similarities."""
    known = labels >= 0
    s, y = sims[known], labels[known] == 1
    if y.all() or (~y).all():
        raise ValueError("the held-out slices need both present and absent structure prompts to calibrate the gate")
    t, bacc = best_threshold(s, y)
    per_prompt = {}
    for j, p in enumerate(prompts):
        k = labels[:, j] >= 0
        a = roc_auc(sims[k, j], labels[k, j] == 1)
        if not math.isnan(a):
            per_prompt[p.text] = round(a, 4)
    return {"presence_threshold": round(t, 6), "auc": round(roc_auc(s, y), 4), "balanced_accuracy": round(bacc, 4),
            "pairs": int(known.sum()), "present_pairs": int(y.sum()), "per_prompt_auc": per_prompt}


def heldout_contrastive_loss(model, tokenizer, val, eval_idx: np.ndarray) -> float:
    """The contrastive loss on a fixed held-out batch (``val``: prepared held-out slices), for before /
    after training."""
    dev = _device_of(model)
    model.eval()
    with torch.no_grad():
        caps = [val.captions[i] for i in eval_idx]
        uniq = list(dict.fromkeys(caps))
        idx = torch.tensor([uniq.index(c) for c in caps], device=dev)
        img = F.normalize(model.encode_image(val.pixels[eval_idx].to(dev)), dim=-1)
        txt = _encode_texts(model, tokenizer, uniq)
        scale = model.logit_scale.exp().clamp(max=100.0)
        return float(contrastive_loss(img, txt, idx, scale))


def heldout_scores(model, tokenizer, val, prompts: Sequence[StructurePrompt]) -> tuple[dict[str, Any], float, int]:
    """The presence calibration (:func:`calibrate_presence`) on the prepared held-out slices ``val``, and
    caption retrieval among their distinct captions (image → caption top-1): ``(calibration, top-1,
    distinct captions)``."""
    model.eval()
    sims = similarities(model, tokenizer, val.pixels, [p.text for p in prompts])
    calib = calibrate_presence(sims, val.labels.numpy(), prompts)
    uniq_val = list(dict.fromkeys(val.captions))
    cap_sims = similarities(model, tokenizer, val.pixels, uniq_val)
    truth = np.array([uniq_val.index(c) for c in val.captions])
    caption_top1 = float((cap_sims.argmax(axis=1) == truth).mean())
    return calib, caption_top1, len(uniq_val)


def saliency_check(folder: Path, data: Sequence[Slice], checks: Mapping[str, str], limit: int,
                   layer: int = M2IB_LAYER) -> dict[str, Any]:
    """Load the folder with ``load_clip`` and run M2IB (``compute_saliency``) for each prompt of
    ``checks`` (prompt → structure) on up to ``limit`` held-out slices where the structure is present
    (at least 32 px, at most half the image): the median ratio of the mean saliency inside / outside
    the structure, the fraction of slices where inside > outside, and the pointing game (the
    saliency peak lies on the structure)."""
    from medclipsam.models import load_clip
    from medclipsam.saliency import M2IBConfig, compute_saliency, text_target

    clip = load_clip(f"local-dir:{folder}")
    cfg = M2IBConfig(layer=layer)
    out: dict[str, Any] = {}
    for name, structure in checks.items():
        target = text_target(clip, name)
        ratios, hits = [], []
        for s in data:
            if len(ratios) >= limit:
                break
            mask = np.asarray(s.masks.get(structure, np.zeros(1, bool)), bool)
            if mask.sum() < 32 or mask.mean() > 0.5 or structure in (getattr(s, "hidden", ()) or ()):
                continue
            sal = compute_saliency(clip, np.asarray(s.rgb), target, "m2ib", cfg).saliency_map
            ratios.append(float(sal[mask].mean()) / max(float(sal[~mask].mean()), 1e-6))
            hits.append(bool(mask.flat[int(np.argmax(sal))]))
        if ratios:
            out[name] = {"structure": structure, "slices": len(ratios),
                         "inside_outside_ratio_median": round(float(np.median(ratios)), 3),
                         "inside_gt_outside": round(float(np.mean(np.asarray(ratios) > 1.0)), 3),
                         "pointing_game": round(float(np.mean(hits)), 3)}
    return out
