"""Train a small SAM-architecture *demo* model on synthetic slices with box and point prompts.

The result is an ordinary SAM ``.pth`` state dict (segment-anything's own classes, built from a
JSON architecture, by default ``configs/sam/demo.json``) that the pipeline loads with
``load_sam("demo:PATH")``, plus a model card ``<out>.json`` next to it. It is a demo model trained on
synthetic data: it shows the pipeline working end to end without the multi-GB official weights,
and is **not for clinical use**.

Training follows the way the zero-shot pipeline prompts SAM (``sam_stage.SamSegmenter``):

* images go through exactly what ``SamPredictor.set_image`` does: ``ResizeLongestSide`` to the
  architecture's image size (PIL resize of the uint8 RGB image), ``Sam.preprocess`` (normalise
  with SAM's pixel mean/std, pad to a square);
* prompts are sampled as the pipeline derives them from a coarse, saliency-based mask, which is
  often loose or shifted: a jittered (sometimes enlarged) box around the structure, one jittered
  box per connected component (lungs: two), ~1-10 positive points inside (some of them, sometimes,
  just outside the structure, as a coarse mask that spills over gives), optional negative points
  outside, or a box with points; coordinates in original image pixels, mapped to the model's input
  frame with ``ResizeLongestSide.apply_boxes_torch`` / ``apply_coords_torch``;
* image_encoder -> prompt_encoder(points, boxes) -> mask_decoder -> ``Sam.postprocess_masks``
  (the path of ``SamPredictor.predict_torch``); the single-mask output (``multimask_output=False``,
  the pipeline's default) is trained with BCE + Dice against the structure mask at the original
  resolution, the three multimask outputs with the minimum BCE + Dice over the three (as SAM's
  paper does, so ``SamStageConfig(multimask=True)`` also works), and the IoU head with an MSE to
  the IoU each mask actually reaches.

Data: any ``Sequence`` of objects with ``.rgb`` (uint8 H×W×3) and ``.masks`` (``dict`` structure
name -> bool H×W). The CLI uses ``medclipsam.phantoms.training_slices``.

Everything is seeded (numpy ``Generator`` for data and prompts, ``torch.manual_seed`` for the
weights) and nothing is cached across steps, so the same seed gives the same weights.

CLI::

    python training/sam_demo.py --out models/demo-sam.pth [--steps N] [--seed S] [--n-train N]
        [--device cpu|cuda] [--ct-share K] [--tumour-slices K] [--sampling KEY=VALUE ...]

``--ct-share`` / ``--tumour-slices`` change the training mix (``phantoms.training_slices``),
``--sampling`` any :class:`PromptSampling` field (e.g. ``--sampling p_favoured=0.8``). ``--device
cuda`` trains on a GPU, but the step is bound by the CPU work around the small model (augmentation,
prompt sampling, one decoder call per image): on an H100 machine with one thread per run and four
to eight runs sharing the card it took 0.2–0.3 s a step against 1.15 s on the 2-core reference CPU.

Cost (2-core CPU, defaults: ``demo`` architecture, 1.86 M parameters at 128 px with 4 px patches —
a 32×32 embedding grid, as fine as the phantoms' small lesions need —, 3000 steps × 8 images, 3200
phantom slices): about 1.15 s a step with 2 threads on an idle machine (≈ 1 h in all); other
processes competing for the cores slow it down. A seed gives the same weights at a given thread
count; 1 and 2 threads sum floats in another order, so their runs drift apart. Held-out Dice
through ``SamSegmenter`` (40 phantom slices, jittered boxes / 10 points): 0.92 / 0.92; tumours
are the weak spot (0.81 with one jittered box, now often a loose one).

The shipped model (SAM 16, seventh round) is two runs of this recipe: SAM 14 = the defaults with
``--threads 1`` (95 min beside other work), then a fine-tune on a CT- and tumour-heavy mix,
``--init SAM14.pth --ct-share 3 --tumour-slices 5 --steps 2000 --lr 3e-4 --seed 1 --threads 1``
(58 min). The fine-tune took tumour Dice (phantom_eval seeds 0 / 1 / 7, cards' settings, CLIP 15)
from 0.684 / 0.726 / 0.743 to 0.758 / 0.828 / 0.842 together with ``sam.coarse_clip``, lungs from
0.904 / 0.885 / 0.914 to 0.933 / 0.939 / 0.930; it was chosen over a 1000-step fine-tune on held-out
seeds 100 / 101 (0.803 / 0.846 against 0.782 / 0.815). SAM 14's loose training boxes (``p_enlarge`` 0.6, ``enlarge_max`` 1.0: the boxes the
pipeline derives from the demo CLIP's coarse masks put a tumour's sides a median 0.22–0.35 of its
size outside it) took end-to-end tumour Dice from 0.492 / 0.495 / 0.599 to 0.544 / 0.586 / 0.607
at 2000 steps (SAM 13; phantom_eval seeds 0 / 1 / 7 with CLIP 13), lungs from 0.944 / 0.940 / 0.947
to 0.916 / 0.914 / 0.919; SAM 11, trained on tight boxes (``p_enlarge`` 0.25, ``enlarge_max`` 0.25),
traced the box. 3000 steps (SAM 14, with CLIP 15): tumour 0.617 / 0.675 / 0.653 → 0.662 / 0.709 /
0.706, lungs 0.920 / 0.906 / 0.929 → 0.901 / 0.885 / 0.915. The card recommends ``sam.box_clip=0.1``
(:data:`RECOMMENDED_SETTINGS`).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medclipsam.models.cards import DEMO_NOTICE, demo_card, sam_card_path

DISCLAIMER = DEMO_NOTICE  # "demo model, synthetic training data, not for clinical use"

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, as the pipeline's default


class Slice(Protocol):
    """What the recipe needs of a training example."""

    rgb: np.ndarray                   # uint8 H×W×3
    masks: Mapping[str, np.ndarray]   # structure name -> bool H×W


@dataclass
class PromptSampling:
    """How training prompts are drawn for an (image, structure mask) pair.

    Probabilities of the four prompt kinds (per image, all its prompts are of one kind so that they
    decode in one batched call, as in the pipeline): a box around the whole structure, one box per
    connected component, points, a box with points. Box sides move by N(0, ``box_jitter``) of the box
    size, clipped to ± ``box_jitter_max``; with ``p_enlarge`` each side also moves out by up to
    ``enlarge_max`` of the size (a coarse mask that over-segments). Points: the positive count is
    drawn from ``point_counts``; with ``p_negatives`` 1..``max_negatives`` negative points are added
    outside the structure; with ``p_spill`` up to ``spill_fraction`` of the positives are moved just
    outside the structure (within ``spill_px`` pixels). With ``p_favoured`` the ``favoured``
    structures present on the image (small lesions, the pipeline's hardest targets) are prompted
    first, so they are not crowded out by the large organs.
    """

    p_box: float = 0.40
    p_component_boxes: float = 0.20
    p_points: float = 0.25
    p_box_points: float = 0.15
    box_jitter: float = 0.08
    box_jitter_max: float = 0.20
    # The pipeline's boxes are loose: around held-out tumours the demo CLIP's coarse masks put each
    # side a median 0.22–0.35 (90th percentile 0.5–1.35) of the tumour's size outside it (sixth
    # round); trained on tighter boxes, SAM traced the box. (SAM 11: 0.25 / 0.25.)
    p_enlarge: float = 0.6
    enlarge_max: float = 1.0
    point_counts: tuple[int, ...] = (1, 2, 3, 5, 10, 10)
    p_negatives: float = 0.3
    max_negatives: int = 5
    p_spill: float = 0.2
    spill_fraction: float = 0.2
    spill_px: int = 4
    max_prompts_per_image: int = 4
    min_pixels: int = 9
    favoured: tuple[str, ...] = ("tumor", "lesion")
    p_favoured: float = 0.6

    def kinds(self) -> tuple[list[str], np.ndarray]:
        names = ["box", "component_boxes", "points", "box+points"]
        p = np.array([self.p_box, self.p_component_boxes, self.p_points, self.p_box_points], dtype=float)
        return names, p / p.sum()


# --------------------------------------------------------------------------------------------------
# prompt sampling (original image pixels, SAM conventions: box [x0, y0, x1, y1], point (x, y))


def bounding_box(mask: np.ndarray) -> np.ndarray:
    """``[x0, y0, x1, y1]`` of a mask as ``medclipsam.prompts`` computes it (x1 / y1 clipped to W-1 / H-1)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return np.array([cols[0], rows[0], min(cols[-1] + 1, w - 1), min(rows[-1] + 1, h - 1)], dtype=np.float32)


def jitter_box(box: np.ndarray, shape: tuple[int, int], rng: np.random.Generator, cfg: PromptSampling) -> np.ndarray:
    """A loose / shifted version of ``box`` (see :class:`PromptSampling`), clipped to the image."""
    h, w = shape
    x0, y0, x1, y1 = (float(v) for v in box)
    size = np.array([max(x1 - x0, 1.0), max(y1 - y0, 1.0)] * 2)
    b = np.array([x0, y0, x1, y1])
    if rng.random() < cfg.p_enlarge:
        b += np.array([-1, -1, 1, 1]) * rng.uniform(0.0, cfg.enlarge_max, 4) * size
    b += np.clip(rng.normal(0.0, cfg.box_jitter, 4), -cfg.box_jitter_max, cfg.box_jitter_max) * size
    b[[0, 2]] = np.clip(b[[0, 2]], 0, w - 1)
    b[[1, 3]] = np.clip(b[[1, 3]], 0, h - 1)
    if b[2] - b[0] < 2:
        b[0], b[2] = max(0.0, min(b[0], w - 3.0)), min(w - 1.0, max(b[0], 0.0) + 2)
    if b[3] - b[1] < 2:
        b[1], b[3] = max(0.0, min(b[1], h - 3.0)), min(h - 1.0, max(b[1], 0.0) + 2)
    return b.astype(np.float32)


def _pick_pixels(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` pixels of ``mask`` as (x, y) rows (distinct when there are enough)."""
    flat = np.flatnonzero(mask)
    if n <= 0 or flat.size == 0:
        return np.zeros((0, 2), dtype=np.float32)
    chosen = rng.choice(flat, size=n, replace=flat.size < n)
    rows, cols = np.unravel_index(chosen, mask.shape)
    return np.stack([cols, rows], axis=1).astype(np.float32)


def sample_points(mask: np.ndarray, n_pos: int, n_neg: int, rng: np.random.Generator,
                  cfg: PromptSampling) -> tuple[np.ndarray, np.ndarray]:
    """``n_pos`` positive points (mostly inside ``mask``) then ``n_neg`` negative points outside it."""
    pos = _pick_pixels(mask, n_pos, rng)
    if n_pos >= 2 and rng.random() < cfg.p_spill:
        ring = ndimage.binary_dilation(mask, _EIGHT, iterations=cfg.spill_px) & ~mask
        k = int(rng.integers(1, max(1, int(round(cfg.spill_fraction * n_pos))) + 1))
        spilled = _pick_pixels(ring, k, rng)
        pos[:len(spilled)] = spilled
    outside = ~ndimage.binary_dilation(mask, _EIGHT, iterations=2)
    if not outside.any():
        outside = ~mask
    neg = _pick_pixels(outside, n_neg, rng)
    if len(neg) < n_neg:  # nothing outside: repeat a positive as a (harmless) padding point
        neg = np.concatenate([neg, np.repeat(pos[:1], n_neg - len(neg), axis=0)])
    points = np.concatenate([pos, neg]).astype(np.float32)
    labels = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
    return points, labels


def with_unions(masks: Mapping[str, np.ndarray], unions: Mapping[str, Sequence[str]] | None
                ) -> dict[str, np.ndarray]:
    """``masks`` plus, for each ``name -> parts`` of ``unions`` with at least two parts present and
    non-empty, the union of the parts under ``name`` (e.g. ``lungs`` = left ∪ right lung: a
    two-component target, as a text prompt "lungs" gives the pipeline)."""
    out = {k: np.asarray(v, dtype=bool) for k, v in masks.items()}
    for name, parts in (unions or {}).items():
        present = [out[p] for p in parts if p in out and out[p].any()]
        if len(present) >= 2 and name not in out:
            out[name] = np.logical_or.reduce(present)
    return out


def components(mask: np.ndarray, min_pixels: int) -> list[np.ndarray]:
    """The 8-connected components of ``mask`` with at least ``min_pixels`` pixels, in raster order."""
    labels, count = ndimage.label(mask, structure=_EIGHT)
    comps = [labels == i for i in range(1, count + 1)]
    return [c for c in comps if int(c.sum()) >= min_pixels]


@dataclass
class ImagePrompts:
    """The prompts for one image: n prompts with their target masks (original resolution)."""

    kind: str
    boxes: np.ndarray | None          # n × 4 or None
    points: np.ndarray | None         # n × k × 2 or None
    labels: np.ndarray | None         # n × k or None
    targets: np.ndarray               # n × H × W bool


def sample_image_prompts(masks: Mapping[str, np.ndarray], rng: np.random.Generator,
                         cfg: PromptSampling) -> ImagePrompts | None:
    """Prompts of one kind for up to ``cfg.max_prompts_per_image`` structures of one image."""
    names = [n for n in sorted(masks) if int(np.asarray(masks[n]).sum()) >= cfg.min_pixels]
    if not names:
        return None
    kinds, p = cfg.kinds()
    kind = kinds[int(rng.choice(len(kinds), p=p))]
    order = rng.permutation(len(names))
    if cfg.favoured and rng.random() < cfg.p_favoured:
        order = np.array(sorted(order, key=lambda i: names[i] not in cfg.favoured))   # stable: favoured first
    chosen = [np.asarray(masks[names[i]], dtype=bool) for i in order[:cfg.max_prompts_per_image]]
    shape = chosen[0].shape
    targets: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    if kind == "component_boxes":
        for m in chosen:
            for c in components(m, cfg.min_pixels) or [m]:
                if len(targets) < cfg.max_prompts_per_image:
                    targets.append(c)
                    boxes.append(jitter_box(bounding_box(c), shape, rng, cfg))
        return ImagePrompts(kind, np.stack(boxes), None, None, np.stack(targets))
    if kind == "box":
        boxes = [jitter_box(bounding_box(m), shape, rng, cfg) for m in chosen]
        return ImagePrompts(kind, np.stack(boxes), None, None, np.stack(chosen))
    n_pos = int(rng.choice(cfg.point_counts))
    n_neg = int(rng.integers(1, cfg.max_negatives + 1)) if rng.random() < cfg.p_negatives else 0
    pts, lab = zip(*(sample_points(m, n_pos, n_neg, rng, cfg) for m in chosen))
    box_arr = np.stack([jitter_box(bounding_box(m), shape, rng, cfg) for m in chosen]) if kind == "box+points" else None
    return ImagePrompts(kind, box_arr, np.stack(pts), np.stack(lab), np.stack(chosen))


# --------------------------------------------------------------------------------------------------
# augmentation and SAM's input transform


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


# --------------------------------------------------------------------------------------------------
# losses


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss per mask (over the last two dims)."""
    p = logits.sigmoid()
    inter = (p * target).sum(dim=(-2, -1))
    return 1 - (2 * inter + 1) / (p.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1)) + 1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = logits > 0
    t = target > 0.5
    inter = (pred & t).sum(dim=(-2, -1)).float()
    union = (pred | t).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def prompt_losses(model, transform, embedding: torch.Tensor, input_size: tuple[int, int], prompts: ImagePrompts,
                  multimask_weight: float, iou_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Decode the prompts of one image (the ``SamPredictor.predict_torch`` path) and score them."""
    original = prompts.targets.shape[1:]
    dev = model.device
    boxes = coords = labels = None
    if prompts.boxes is not None:
        boxes = transform.apply_boxes_torch(torch.as_tensor(prompts.boxes, device=dev), original)
    if prompts.points is not None:
        coords = transform.apply_coords_torch(torch.as_tensor(prompts.points, device=dev), original)
        labels = torch.as_tensor(prompts.labels, device=dev)
    sparse, dense = model.prompt_encoder(points=None if coords is None else (coords, labels), boxes=boxes, masks=None)
    # MaskDecoder.forward computes all four masks and slices [0:1] (multimask_output=False) or [1:]
    # (True); we take both slices of one decode so that the multimask tokens are trained as well.
    low_res, iou_pred = model.mask_decoder.predict_masks(
        image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
    logits = model.postprocess_masks(low_res, input_size, original)          # n × 4 × H × W
    target = torch.as_tensor(prompts.targets, device=dev, dtype=torch.float32)[:, None].expand_as(logits)
    per_mask = (F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(-2, -1))
                + dice_loss(logits, target))                                   # n × 4
    single = per_mask[:, 0].mean()
    multi = per_mask[:, 1:].min(dim=1).values.mean()
    with torch.no_grad():
        iou_true = mask_iou(logits, target)
    iou_loss = F.mse_loss(iou_pred, iou_true)
    loss = single + multimask_weight * multi + iou_weight * iou_loss
    return loss, {"single": single.item(), "multi": multi.item(), "iou_mse": iou_loss.item(),
                  "iou": float(iou_true[:, 0].mean())}


# --------------------------------------------------------------------------------------------------
# evaluation through the pipeline's own SAM stage


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
    mean = (lambda v: float(np.mean(v)) if v else float("nan"))
    return {
        "box_dice": mean(scores["box"]),
        "component_box_dice": mean(scores["component_box"]),
        "point_dice": mean(scores["point"]),
        "pairs": len(scores["box"]),
        "per_structure": {n: {f"{k}_dice": round(mean(v), 4) for k, v in d.items()} | {"pairs": len(d["box"])}
                          for n, d in sorted(per_structure.items())},
    }


# --------------------------------------------------------------------------------------------------
# the recipe


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def train_demo_sam(data: Sequence[Slice], out_path: str | Path, *, steps: int, batch_size: int = 8, seed: int = 0,
                   lr: float = 1e-3, log_every: int = 50, architecture: str = "demo",
                   val_data: Sequence[Slice] | None = None, sampling: PromptSampling | None = None,
                   weight_decay: float = 0.01, warmup_steps: int | None = None, multimask_weight: float = 0.5,
                   iou_weight: float = 1.0, unions: Mapping[str, Sequence[str]] | None = None,
                   threads: int | None = 2, device: str = "cpu", data_description: str = "",
                   init: str | Path | None = None,
                   log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train a SAM of ``architecture`` (a bundled name or a JSON file) on ``data`` and save it.

    ``data``: a sequence of slices with ``.rgb`` (uint8 H×W×3) and ``.masks`` (structure -> bool
    H×W). ``val_data``: held-out slices for the reported Dice; by default the last
    ``max(1, len(data) // 10)`` slices of ``data`` are held out (and not trained on). ``unions``:
    extra targets made of several structures (:func:`with_unions`, e.g. ``{"lungs": ("left lung",
    "right lung")}``), trained and evaluated like the others.

    Writes ``out_path`` (a SAM state dict, atomically, with :func:`save_sam_checkpoint`) and the
    model card ``out_path.with_suffix(".json")`` (``intended_use: demo``, read by ``load_sam``); reloads the checkpoint with
    ``load_sam(f"{architecture}:{out_path}")`` and measures held-out Dice through ``SamSegmenter``
    (:func:`evaluate_sam`). Returns the metrics: ``box_dice``, ``component_box_dice``,
    ``point_dice``, ``per_structure``, ``loss_history`` (one value per step), ``loss_first`` /
    ``loss_last`` (mean of the first / last ``min(20, steps)`` steps), ``steps``, ``seconds``.
    ``threads``: torch CPU threads while training (the previous setting is restored afterwards).
    ``device``: where the model trains (``"cpu"``, ``"cuda"``); the held-out evaluation reloads the
    checkpoint and runs on the CPU either way. ``init``: a checkpoint of the same architecture to
    start from (fine-tuning) instead of random weights; the card records its name and SHA-256.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(data, Path(out_path), steps=steps, batch_size=batch_size, seed=seed, lr=lr, log_every=log_every,
                      architecture=architecture, val_data=val_data, sampling=sampling, weight_decay=weight_decay,
                      warmup_steps=warmup_steps, multimask_weight=multimask_weight, iou_weight=iou_weight,
                      unions=unions, device=device, data_description=data_description, init=init, log=log)
    finally:
        torch.set_num_threads(previous)


def _train(data: Sequence[Slice], out_path: Path, *, steps: int, batch_size: int, seed: int, lr: float, log_every: int,
           architecture: str, val_data: Sequence[Slice] | None, sampling: PromptSampling | None,
           weight_decay: float, warmup_steps: int | None, multimask_weight: float, iou_weight: float,
           unions: Mapping[str, Sequence[str]] | None, device: str, data_description: str,
           init: str | Path | None, log: Callable[[str], None] | None) -> dict[str, Any]:
    from segment_anything.utils.transforms import ResizeLongestSide

    from medclipsam.models.sam import build_sam, load_sam, sam_architecture, save_sam_checkpoint

    t_start = time.perf_counter()
    out_path = Path(out_path)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps} and {batch_size}")
    if val_data is None:
        if len(data) < 2:
            raise ValueError("need at least 2 slices (one is held out) or an explicit val_data")
        n_val = max(1, len(data) // 10)
        train, val_data = list(data[:len(data) - n_val]), list(data[len(data) - n_val:])
    else:
        train = list(data)
    if not train:
        raise ValueError("no training slices")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but CUDA is not available here; use device='cpu'")
    cfg = sampling or PromptSampling()
    arch = sam_architecture(architecture)
    say = log or (lambda _msg: None)

    init_record: dict[str, Any] | None = None
    if init is not None:
        # load_sam checks the file and its architecture and says what is wrong; its fresh model is trained on
        start = load_sam(f"{architecture}:{init}")
        model = start.model
        init_record = {"checkpoint": Path(init).name, "sha256": _sha256(Path(init))}
        if start.card.get("training"):           # the starting model's own history, so the card tells it all
            init_record["training"] = start.card["training"]
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_sam(arch)
    model.to(device)
    model.train()
    transform = ResizeLongestSide(arch.image_size)
    rng = np.random.default_rng(seed)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "pos_embed" in name or "rel_pos" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999))
    warm = warmup_steps if warmup_steps is not None else min(100, max(1, steps // 10))

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 5 %
        if step < warm:
            return lr * (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

    say(f"training SAM '{arch.name}' ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters"
        f"{', from ' + init_record['checkpoint'] if init_record else ''}) "
        f"on {len(train)} slices, {len(val_data)} held out; {steps} steps × {batch_size} images, seed {seed}, "
        f"{torch.get_num_threads()} threads, {device}")
    history: list[float] = []
    window: list[dict[str, float]] = []
    t_train = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        images, sizes, batch_prompts = [], [], []
        while len(images) < batch_size:
            item = train[int(rng.integers(len(train)))]
            rgb, masks = augment(np.asarray(item.rgb), with_unions(item.masks, unions), rng)
            prompts = sample_image_prompts(masks, rng, cfg)
            if prompts is None:
                continue
            x, size = model_input(model, transform, rgb)
            images.append(x)
            sizes.append(size)
            batch_prompts.append(prompts)
        embeddings = model.image_encoder(torch.cat(images))
        losses, parts = [], []
        for i, prompts in enumerate(batch_prompts):
            loss_i, part = prompt_losses(model, transform, embeddings[i:i + 1], sizes[i], prompts,
                                         multimask_weight, iou_weight)
            losses.append(loss_i)
            parts.append(part)
        loss = torch.stack(losses).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append(loss.item())
        window.append({k: float(np.mean([p[k] for p in parts])) for k in parts[0]} | {"loss": history[-1]})
        if log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
            avg = {k: np.mean([w[k] for w in window]) for k in window[0]}
            el = time.perf_counter() - t_train
            say(f"step {step + 1}/{steps}  loss {avg['loss']:.4f}  (single {avg['single']:.4f}, multi "
                f"{avg['multi']:.4f}, iou-mse {avg['iou_mse']:.4f})  train IoU {avg['iou']:.3f}  "
                f"lr {lr_at(step):.2e}  {el:.0f} s")
            window = []
    train_seconds = time.perf_counter() - t_train

    model.eval()
    save_sam_checkpoint(model.to("cpu"), out_path)
    spec = f"{architecture}:{out_path}"
    sam = load_sam(spec)
    if sam.random_weights:  # pragma: no cover - load_sam with a path never says random
        raise RuntimeError(f"{spec} loaded as random weights")
    say(f"saved {out_path} ({out_path.stat().st_size / 1e6:.1f} MB); evaluating {len(val_data)} held-out slices "
        f"through SamSegmenter")
    # one thread for the evaluation: many small decoder calls, which a second thread does not speed up
    # and which slow down badly when other processes compete for the cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ev = evaluate_sam(sam, val_data, seed=seed + 1, sampling=cfg, unions=unions)
    finally:
        torch.set_num_threads(threads)
    k = min(20, steps)
    metrics: dict[str, Any] = {
        **ev,
        "loss_first": float(np.mean(history[:k])),
        "loss_last": float(np.mean(history[-k:])),
        "steps": steps,
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    card = demo_card(
        f"demo SAM ({arch.name} architecture)",
        description=(f"A SAM-architecture model ({arch.name}) "
                     + (f"fine-tuned from {init_record['checkpoint']} (see training.init) " if init_record else
                        "trained from scratch ")
                     + f"by training/sam_demo.py on synthetic slices with jittered box and point prompts; {DISCLAIMER}."),
        load=f"load_sam(\"{spec}\")",
        checkpoint=out_path.name,
        architecture=arch.to_dict(),
        pipeline_overrides=dict(RECOMMENDED_SETTINGS),
        training={
            "recipe": "training/sam_demo.py (train_demo_sam)",
            "data": data_description or f"{len(train)} synthetic slices",
            "train_slices": len(train), "held_out_slices": len(val_data),
            "steps": steps, "batch_size": batch_size, "seed": seed, "lr": lr, "weight_decay": weight_decay,
            "warmup_steps": warm, "schedule": "linear warm-up, cosine decay to 5 %", "optimizer": "AdamW",
            "loss": f"BCE + Dice (single mask) + {multimask_weight} × min over 3 of BCE + Dice (multimask) "
                    f"+ {iou_weight} × IoU-prediction MSE, on masks at the original resolution",
            "prompt_sampling": asdict(cfg),
            "union_targets": {k: list(v) for k, v in (unions or {}).items()},
            "init": init_record or "random (torch.manual_seed(seed))",
            "threads": torch.get_num_threads(), "device": str(device), "torch": torch.__version__,
            "python": platform.python_version(),
        },
        metrics={k: v for k, v in metrics.items() if k != "per_structure"} | {
            "per_structure": ev["per_structure"],
            "evaluation": "held-out slices through medclipsam.sam_stage.SamSegmenter: one jittered box per "
                          "structure (box_dice), one jittered box per component (component_box_dice), 10 positive "
                          "points (point_dice); default SamStageConfig"},
    )
    tmp = sam_card_path(out_path).with_name(sam_card_path(out_path).name + ".partial")
    tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, sam_card_path(out_path))
    say(f"model card {sam_card_path(out_path)}")
    return metrics | {"loss_history": history, "card": str(sam_card_path(out_path)), "checkpoint": str(out_path)}


# --------------------------------------------------------------------------------------------------
# CLI


# Pipeline settings the card recommends for this SAM (``--set`` wins over them). ``sam.box_clip`` 0.1
# (sixth round, SAM 14 with CLIP 15): tumour Dice 0.662 / 0.709 / 0.706 → 0.684 / 0.726 / 0.743 on
# phantom_eval seeds 0 / 1 / 7, lungs ± 0.003; a small SAM spills out of a box into low-contrast
# neighbours (liver around a hepatic lesion) that the prompt excludes.
# ``sam.coarse_clip`` 0.008 (1 px at 128 px; seventh round, with the fine-tuned SAM 16): tumour
# +0.013 to +0.034 on seeds 0 / 1 / 7, lungs within 0.002: SAM may refine the outline but not grow
# past where the saliency map put the target.
RECOMMENDED_SETTINGS: dict[str, str] = {"sam.box_clip": "0.1", "sam.coarse_clip": "0.008"}


def sampling_from_overrides(items: Sequence[str]) -> PromptSampling:
    """A :class:`PromptSampling` with ``KEY=VALUE`` overrides (tuples as comma-separated values)."""
    base = PromptSampling()
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not hasattr(base, key):
            raise ValueError(f"--sampling {item!r}: expected KEY=VALUE with KEY one of "
                             f"{', '.join(asdict(base))}")
        current = getattr(base, key)
        try:
            if isinstance(current, tuple):
                kind = type(current[0]) if current else str
                changes[key] = tuple(kind(v) for v in value.split(",") if v.strip())
            else:
                changes[key] = type(current)(value)
        except ValueError as e:
            raise ValueError(f"--sampling {item!r}: {key} takes a {type(current).__name__} ({e})") from None
    return replace(base, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="checkpoint to write (e.g. models/demo-sam.pth)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=3200, help="synthetic training slices")
    ap.add_argument("--n-val", type=int, default=40, help="held-out synthetic slices (another seed)")
    ap.add_argument("--size", type=int, default=128, help="phantom slice size in pixels")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--architecture", default="demo", help="bundled SAM architecture name or JSON file")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch CPU threads (2 on the reference 2-core machine; 1 is faster when other processes "
                         "compete for the cores)")
    ap.add_argument("--device", default="cpu", help="cpu (the reference) or cuda")
    ap.add_argument("--ct-share", type=int, default=1, help="CT slices per MR/US/X-ray slice in the mix (default 1)")
    ap.add_argument("--tumour-slices", type=int, default=3,
                    help="at most this many of each CT/MR series' 8 slices show its tumour (default 3)")
    ap.add_argument("--sampling", action="append", default=[], metavar="KEY=VALUE",
                    help="override a PromptSampling field, e.g. --sampling p_enlarge=0.5 (repeatable)")
    ap.add_argument("--init", type=Path, default=None, metavar="CHECKPOINT",
                    help="start from this checkpoint of the same architecture (fine-tuning) instead of random weights")
    args = ap.parse_args(argv)
    if args.init is not None and not args.init.is_file():
        ap.error(f"--init {args.init}: no such checkpoint file; give a .pth written by this recipe")
    try:
        sampling = sampling_from_overrides(args.sampling)
    except ValueError as e:
        ap.error(str(e))

    if importlib.util.find_spec("medclipsam.phantoms") is None:
        print("error: medclipsam.phantoms is missing, so there are no synthetic training slices to train on "
              "(the recipe needs medclipsam.phantoms.training_slices(seed, n, size)). Nothing was written.",
              file=sys.stderr)
        return 2
    from medclipsam import phantoms

    unions: dict[str, tuple[str, ...]] = {}
    for alias, parts in getattr(phantoms, "ALIASES", {}).items():  # "lungs" = left ∪ right lung
        if len(parts) > 1 and tuple(parts) not in unions.values():
            unions[alias] = tuple(parts)
    t0 = time.perf_counter()
    shares = (args.ct_share, 1, 1, 1)
    train = phantoms.training_slices(args.seed, args.n_train, size=args.size, shares=shares,
                                     tumour_slices=args.tumour_slices)
    val = phantoms.training_slices(args.seed + 1_000_003, args.n_val, size=args.size)
    print(f"generated {len(train)} training and {len(val)} held-out phantom slices ({args.size} px) in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    m = train_demo_sam(train, args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr,
                       log_every=args.log_every, architecture=args.architecture, val_data=val, unions=unions,
                       threads=args.threads, device=args.device, sampling=sampling, init=args.init,
                       data_description=(f"medclipsam.phantoms.training_slices(seed={args.seed}, n={args.n_train}, "
                                         f"size={args.size}, shares={shares}, tumour_slices={args.tumour_slices})"
                                         f"; held out: training_slices(seed={args.seed + 1_000_003},"
                                         f" n={args.n_val})"),
                       log=lambda s: print(s, flush=True))
    for name, d in m["per_structure"].items():
        print(f"  {name:12s} box {d.get('box_dice', float('nan')):.3f}  components "
              f"{d.get('component_box_dice', float('nan')):.3f}  points {d.get('point_dice', float('nan')):.3f}"
              f"  ({d['pairs']} slices)")
    seconds = time.perf_counter() - t0
    print(f"box_dice={m['box_dice']:.4f} point_dice={m['point_dice']:.4f} steps={m['steps']} seconds={seconds:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
