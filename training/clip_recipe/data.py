"""Data preparation: CLIP input pixels, per-prompt token coverage and presence labels of every slice,
and the vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .prompts import Slice, StructurePrompt, presence_label


def _all_hidden(cover_sums: Mapping[str, float], prompt: StructurePrompt, hidden: set[str]) -> bool:
    """The prompt's targets present on the slice are all hidden by its rendering (and there is one)."""
    shown = [t for t in prompt.targets if cover_sums.get(t, 0.0) > 0.0]
    return bool(shown) and all(t in hidden for t in shown)


@dataclass
class Prepared:
    pixels: torch.Tensor        # N×3×S×S, normalised CLIP input
    cover: torch.Tensor         # N×P×G×G: how much of each token the prompt's target covers (0 where absent)
    known: torch.Tensor         # N×P bool: the token targets are known (False: unlabelled structure)
    labels: torch.Tensor        # N×P presence label per prompt (1, 0, -1)
    captions: list[str]


def _square_pad(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    side = max(h, w)
    out = np.zeros((side, side), np.float32)
    top, left = (side - h) // 2, (side - w) // 2       # as medclipsam.image.SquarePad
    out[top:top + h, left:left + w] = mask
    return out


HIDDEN_TARGETS = ("present", "unknown")


def prepare(data: Sequence[Slice], prompts: Sequence[StructurePrompt], image_size: int, grid: int,
            mean, std, hidden_targets: str = "present") -> Prepared:
    """CLIP input pixels, per-prompt token coverage and presence labels of every slice.

    ``hidden_targets``: what a target the slice's window hides (``slice.hidden``) is — ``present``
    (as labelled: the shipped demo model) or ``unknown`` (no presence label, no token targets, and
    the slice's ``visible_caption``)."""
    if hidden_targets not in HIDDEN_TARGETS:
        raise ValueError(f"hidden_targets must be one of {HIDDEN_TARGETS}, got {hidden_targets!r}")
    from medclipsam.image import clip_input

    n = len(data)
    names = sorted({t for p in prompts for t in p.targets})
    col = {k: i for i, k in enumerate(names)}
    member = torch.zeros((len(prompts), len(names)))                  # prompt × structure: is a target
    for j, p in enumerate(prompts):
        for t in p.targets:
            member[j, col[t]] = 1.0
    pixels = torch.empty((n, 3, image_size, image_size), dtype=torch.float32)
    cover = torch.zeros((n, len(prompts), grid, grid), dtype=torch.float32)
    known = torch.ones((n, len(prompts)), dtype=torch.bool)
    labels = torch.empty((n, len(prompts)), dtype=torch.int8)
    captions = []
    for i, s in enumerate(data):
        pixels[i] = clip_input(np.asarray(s.rgb), image_size, mean, std)[0][0]
        grids = torch.zeros((len(names), grid, grid))
        sums = {}
        for name, m in s.masks.items():
            if name in col and np.any(m):
                sq = torch.from_numpy(_square_pad(np.asarray(m, dtype=np.float32)))
                grids[col[name]] = F.interpolate(sq[None, None], size=(grid, grid), mode="area")[0, 0]
            sums[name] = float(grids[col[name]].sum()) if name in col else float(np.count_nonzero(m))
        kind = getattr(s, "kind", None)
        lab = torch.tensor([presence_label(sums, p, kind) for p in prompts], dtype=torch.int8)
        # hidden_targets="unknown": a target the rendering's window hides (a hepatic tumour in the lung
        # window) is neither present nor absent there: no presence label, no token targets
        hidden = set(getattr(s, "hidden", ()) or ()) if hidden_targets == "unknown" else set()
        unseen = torch.tensor([bool(hidden) and _all_hidden(sums, p, hidden) for p in prompts])
        lab[unseen] = -1
        union = torch.einsum("pk,khw->phw", member, grids).clamp(max=1.0)
        union[lab == 0] = 0.0                          # absent here (wrong kind or missing context)
        labels[i], cover[i] = lab, union
        known[i] = ~((lab == -1) & (union.flatten(1).sum(dim=1) == 0)) & ~unseen
        caption = (getattr(s, "visible_caption", "") or s.caption) if hidden else s.caption
        captions.append(str(caption).strip())
    return Prepared(pixels, cover, known, labels, captions)


def vocabulary_words(captions: Iterable[str], prompts: Sequence[StructurePrompt]) -> list[str]:
    """Default medical words, then every word of the prompts and captions (first-seen order)."""
    import re

    from medclipsam.models.clip import DEFAULT_VOCAB_WORDS

    words = list(DEFAULT_VOCAB_WORDS)
    for text in [p.text for p in prompts] + list(captions):
        words.extend(w for w in re.findall(r"[a-z0-9]+", text.lower()))
    seen, out = set(), []
    for w in words:
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out
