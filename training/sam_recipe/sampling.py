"""Training prompts drawn as the pipeline derives them from a coarse mask: loose, jittered boxes, one box
per component, points (some spilling over), negatives."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
from scipy import ndimage

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


# --------------------------------------------------------------------------------------------------
# prompt sampling (original image pixels, SAM conventions: box [x0, y0, x1, y1], point (x, y))


def bounding_box(mask: np.ndarray) -> np.ndarray:
    """``[x0, y0, x1, y1]`` of a mask as ``medclipsam.prompts`` computed it when the shipped demo SAM
    was trained: x1 / y1 one past the last pixel, clipped to W-1 / H-1. The pipeline's boxes are now
    inclusive (``medclipsam.prompts.mask_box``), at most one pixel smaller — well inside the jitter;
    kept here so that the recipe still reproduces the shipped weights."""
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
