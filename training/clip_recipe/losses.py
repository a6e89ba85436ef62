"""The loss terms and their default weights.

What the model must do, and the loss term for each (all on L2-normalised embeddings):

* **caption retrieval** — ``contrastive``: symmetric InfoNCE between images and the *distinct*
  captions of the batch with the model's own learnable ``logit_scale``; images sharing a caption
  are all positives of it (multi-positive text→image term), so duplicate captions are never
  pushed apart.
* **presence** (the slice presence gate compares cos(image, prompt) with one absolute threshold)
  — ``presence``: a binary loss σ(s·cos(image, prompt) + b) against present / absent labels for
  every (slice, structure prompt) pair, with one scale s and one bias b shared by all prompts, so
  that one cosine threshold (≈ −b/s) separates present from absent for every prompt.
* **localisation** (M2IB keeps the tokens that carry the similarity) — ``dense``: the demo ViT
  averages its patch tokens and normalises the mean (timm ``fc_norm``), so every token moves the
  image embedding by its own amount; M2IB's bottleneck (the last block here, ``m2ib_layer``)
  replaces tokens by zero-mean N(0, 1) noise and keeps those whose removal would lower the
  similarity. Each token's first-order effect on cos(image, prompt) (:func:`dense_scores`) is
  classified against the masks' coverage of the token with a balanced, focal (γ = ``dense_focal``)
  binary loss: the target's tokens raise the similarity, every other token does not. That alone
  finds only the edges of a structure whose inside looks like its surroundings (the air inside a
  lung is the air outside the body), so ``token_dense`` also classifies each token on its own
  (the pooled LayerNorm and projection applied to the token, :func:`token_features`), which makes
  the tokens carry what they are part of. ``token_scale`` keeps the bottleneck tokens at the scale
  of M2IB's noise (mean square 1).
* **laterality** ("left lung" is one side of the picture) — ``laterality``: both lungs are on
  almost every chest slice, so presence and captions never tell "left lung" from "right lung",
  and the dense term alone left their maps identical (text cosine 0.996). On the tokens either
  lung covers, the dense logit of the prompt naming the token's side must exceed the other side's
  (binary cross-entropy on the difference, :func:`laterality_loss`). It only means something because
  every slice is shown in the radiological display orientation (``medclipsam.volume.display``),
  as the volume engine shows it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .prompts import GROUPS


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, cap_idx: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE: images vs the distinct captions of the batch (txt rows)."""
    logits = scale * img @ txt.T                                       # B × U
    i2t = F.cross_entropy(logits, cap_idx)
    pos = F.one_hot(cap_idx, txt.shape[0]).T.bool()                    # U × B
    lt = logits.T
    t2i = (torch.logsumexp(lt, dim=1) - torch.logsumexp(lt.masked_fill(~pos, float("-inf")), dim=1)).mean()
    return 0.5 * (i2t + t2i)


def presence_loss(logits: torch.Tensor, labels: torch.Tensor, focal: float = 0.0) -> torch.Tensor:
    """Binary presence loss over labelled pairs, present and absent pairs weighted equally;
    ``focal`` > 0 weights each pair by its error (1 − p)^γ / p^γ, so that the few hard pairs (a
    small tumour in a CT slice) are not drowned by the many easy ones."""
    known = labels >= 0
    y = labels.clamp(min=0).float()
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    if focal > 0:
        p = torch.sigmoid(logits).detach()
        bce = bce * torch.where(y > 0, 1.0 - p, p).pow(focal) * 2.0 ** focal
    pos, neg = known & (labels == 1), known & (labels == 0)
    out = logits.new_zeros(())
    if pos.any():
        out = out + 0.5 * bce[pos].mean()
    if neg.any():
        out = out + 0.5 * bce[neg].mean()
    return out


def dense_loss(logits: torch.Tensor, cover: torch.Tensor, known: torch.Tensor, focal: float = 0.0) -> torch.Tensor:
    """Token–prompt alignment: logits and coverage targets B×T×P, ``known`` B×P (False: no target
    known for that slice and prompt). Balanced binary loss per prompt, averaged over prompts;
    ``focal`` > 0 weights each token by its error (1 − p)^γ / p^γ, so that the few hard negatives
    (soft tissue next to a tumour) are not drowned by the many easy ones (air, fat)."""
    wk = known[:, None, :].float()
    pos_w, neg_w = cover * wk, (1.0 - cover) * wk
    pos_mass, neg_mass = pos_w.sum(dim=(0, 1)), neg_w.sum(dim=(0, 1))
    if focal > 0:
        p = torch.sigmoid(logits).detach()
        pos_w, neg_w = pos_w * (1.0 - p) ** focal * 2.0 ** focal, neg_w * p ** focal * 2.0 ** focal
    pos = (pos_w * F.softplus(-logits)).sum(dim=(0, 1)) / pos_mass.clamp(min=1e-6)   # −log σ(x)
    neg = (neg_w * F.softplus(logits)).sum(dim=(0, 1)) / neg_mass.clamp(min=1e-6)    # −log (1 − σ(x))
    has_pos, has_neg = pos_mass > 0, neg_mass > 0
    zero = logits.new_zeros(())
    return (0.5 * (pos[has_pos].mean() if has_pos.any() else zero)
            + 0.5 * (neg[has_neg].mean() if has_neg.any() else zero))


def _pointing_pairs(cover: torch.Tensor, known: torch.Tensor, max_share: float,
                    prompts: torch.Tensor | None) -> torch.Tensor:
    """B × P: the (slice, prompt) pairs the pointing terms count — target known and present (at
    least half a token), covering at most ``max_share`` of the tokens, prompt among ``prompts``."""
    present = known & (cover.sum(dim=1) >= 0.5) & (cover.mean(dim=1) <= max_share)
    return present & prompts[None, :] if prompts is not None else present


def mass_loss(logits: torch.Tensor, cover: torch.Tensor, known: torch.Tensor, max_share: float = 0.5,
              prompts: torch.Tensor | None = None) -> torch.Tensor:
    """Where the map's mass goes: ``logits`` and ``cover`` B×T×P as for :func:`dense_loss`. For each
    (slice, prompt) whose target is present (covers at least half a token) and takes at most
    ``max_share`` of the tokens, the softmax of the prompt's dense logits over the slice's tokens is
    a saliency map; the loss is its cross-entropy against the target's coverage spread evenly over
    the target (q_t = cover_t / Σ cover). The balanced per-token :func:`dense_loss` lets a token
    elsewhere (the other lung at a lung tumour's height) score nearly as high as the target's own;
    this term ranks the target's tokens above every other token of the same slice, which is what
    the pointing game asks, and — unlike −log of the map's share on the target, which was tried
    first (RESULTS.md, ninth round) — it does not let the map sit on one part of the target (one
    of the two lungs for "lungs"). ``prompts`` (P bool): only these prompts' maps count (all when None)."""
    present = _pointing_pairs(cover, known, max_share, prompts)
    if not present.any():
        return logits.new_zeros(())
    q = cover / cover.sum(dim=1, keepdim=True).clamp(min=1e-6)                          # B × T × P
    ce = torch.logsumexp(logits, dim=1) - (q * logits).sum(dim=1)                       # B × P
    return ce[present].mean()


def peak_loss(logits: torch.Tensor, cover: torch.Tensor, known: torch.Tensor, max_share: float = 0.5,
              prompts: torch.Tensor | None = None) -> torch.Tensor:
    """The pointing game itself: ``logits`` and ``cover`` B×T×P as for :func:`dense_loss`, over a
    square grid of T tokens. For each (slice, prompt) counted as in :func:`mass_loss`, the best token
    away from the target (not touching it: the game's tolerance is one token) must score below the
    best token on it — softplus(max_off − max_on). :func:`mass_loss` scores the whole map and leaves
    near-ties between a small tumour and the mirror position on the other side (RESULTS.md, twelfth
    round); this term pays only for the one token that would win the game. ``prompts`` as for
    :func:`mass_loss`."""
    present = _pointing_pairs(cover, known, max_share, prompts)
    b, t, p = logits.shape
    g = int(round(math.sqrt(t)))
    if g * g != t:
        raise ValueError(f"peak_loss needs a square token grid, got {t} tokens")
    on = cover > 0                                                                     # B × T × P
    grid = on.permute(0, 2, 1).reshape(b * p, 1, g, g).float()
    near = F.max_pool2d(grid, 3, stride=1, padding=1).reshape(b, p, t).permute(0, 2, 1) > 0
    low = torch.finfo(logits.dtype).min / 4
    on_max = logits.masked_fill(~on, low).amax(dim=1)                                  # B × P
    off_max = logits.masked_fill(near, low).amax(dim=1)
    counted = present & (~near).any(dim=1)
    if not counted.any():
        return logits.new_zeros(())
    return F.softplus(off_max - on_max)[counted].mean()


# the default weight of each loss term (train_demo_clip's ``weights`` overrides them). Laterality 0.3
# (sixth round, CLIP 15): at 1.0 (CLIP 13) the tumour maps lost (phantom_eval tumour 0.544 / 0.586 /
# 0.607 against 0.617 / 0.675 / 0.653 on seeds 0 / 1 / 7), "left lung" / "right lung" held either way.
LOSS_WEIGHTS: dict[str, float] = {"contrastive": 1.0, "presence": 1.0, "dense": 3.0, "token_dense": 1.0,
                                  "token_scale": 0.1, "laterality": 0.3, "mass": 0.0,
                                  "peak": 0.0}


def loss_weights_from_overrides(items: Sequence[str]) -> dict[str, float]:
    """``["laterality=0.3", ...]`` → loss weights over :data:`LOSS_WEIGHTS`; names the valid terms when
    one is unknown and rejects a value that is not a number ≥ 0."""
    out = dict(LOSS_WEIGHTS)
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in LOSS_WEIGHTS:
            raise ValueError(f"--loss-weight takes TERM=W with TERM one of {', '.join(LOSS_WEIGHTS)}; got {item!r}")
        try:
            w = float(value)
        except ValueError:
            w = float("nan")
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"--loss-weight {name}: the weight must be a number >= 0, got {value.strip()!r}")
        out[name] = w
    return out


def laterality_loss(logits: torch.Tensor, cover: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Left vs right: ``logits`` and ``cover`` B×T×P as for :func:`dense_loss`; for each prompt pair
    ``(a, b)`` (e.g. "left lung", "right lung"), on the tokens the two structures cover at least half
    of, binary cross-entropy of ``logits[a] − logits[b]`` against "the token is more a's than b's"."""
    terms = []
    for a, b in pairs:
        ca, cb = cover[..., a], cover[..., b]
        sel = (ca + cb) >= 0.5
        if sel.any():
            diff = (logits[..., a] - logits[..., b])[sel]
            terms.append(F.binary_cross_entropy_with_logits(diff, (ca > cb)[sel].float()))
    return torch.stack(terms).mean() if terms else logits.new_zeros(())


def lateral_pairs(prompt_texts: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs of the prompts naming the two sides of each :data:`GROUPS` entry."""
    out = []
    for parts in GROUPS.values():
        if len(parts) == 2 and all(p in prompt_texts for p in parts):
            out.append((list(prompt_texts).index(parts[0]), list(prompt_texts).index(parts[1])))
    return out
