"""Train the demo CLIP model: a small BiomedCLIP-shaped model on synthetic phantom slices.

The result is an ordinary ``local-dir:`` folder (the layout of the real BiomedCLIP folder, written
by :func:`medclipsam.models.clip.write_clip_folder`) that ``load_clip("local-dir:FOLDER")`` loads
through the normal path, plus a model card saying it is a demo model and a presence calibration
(``medclipsam_presence.json``) that the slice engine's presence gate reads.

Architecture: ``configs/clip/demo.json`` — timm ViT ``vit_medclipsam_demo_patch8_128`` (128 px,
patch 8 → 16×16 tokens, 4 blocks, width 128, 4 heads; timm's average pooling of the normed patch
tokens, so the image embedding is the mean of the patch tokens' embeddings; linear projection) and
a 2-layer BERT (width 64, CLS pooling, MLP projection), 64-d joint space; the vocabulary is written
by the project (:func:`medclipsam.models.vocab.build_wordpiece_vocab`) from the default medical
words, the captions and the structure prompts.

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
  as the volume engine shows it. Measured (RESULTS.md, fifth round): held-out pointing for "left
  lung" 0.31 → 1.00, end-to-end Dice for "left lung" 0.40 → 0.95 (phantom_eval seed 0); tumour
  Dice over two runs each 0.57 → 0.48 (runs of one recipe differ by ±0.1 there). Its weight is 0.3
  since the sixth round (CLIP 15): tumour 0.544 / 0.586 / 0.607 → 0.617 / 0.675 / 0.653 on seeds
  0 / 1 / 7 against weight 1.0 (CLIP 13), left / right lung 0.96 / 0.89 (seed 0).

Data: ``phantoms.training_slices(seed, 16000)`` by default — 3000 steps × 32 images see each slice
about six times. With 4000 slices (24 passes; the recipe's earlier default) the pointing game for
"tumor" (M2IB's peak within 2 px of a CT tumour) was 0.73 on held-out slices against 0.85 on
training slices; 16 000 slices (≈ 3.5 GB of CLIP input in memory, generated in about a minute)
raised it to 0.85 (0.95 on training slices) and the gate's AUC from 0.73 / 0.87 to 0.97 / 0.99
(RESULTS.md, fourth round). About 18 minutes on 2 idle cores. The shipped model, CLIP 16
(twelfth round), is two runs, each with ``--threads 1`` beside other work (a seed gives the same
weights at a given thread count):

1. CLIP 15, the defaults run (1699 s): ``--out CLIP15 --threads 1`` (weights SHA-256 204b19f6…,
   the demo model committed before the twelfth round);
2. CLIP 16, CLIP 15 fine-tuned with the pointing term on the tumour prompts (1259 s):
   ``--out CLIP16 --threads 1 --init CLIP15 --steps 1600 --lr 2e-4 --loss-weight mass=0.3
   --mass-structure tumor``. Its card records the init folder and its weights' SHA-256.

Deterministic: fixed data order from ``seed``, seeded initialisation and noise,
``torch.use_deterministic_algorithms(True)`` during training, 2 threads by default (``--threads``).

After training, the presence gate is calibrated on held-out slices: cosine similarities of
every (slice, structure prompt) pair with a present/absent label, AUC, and the threshold that
maximises balanced accuracy → ``medclipsam_presence.json``. The saved folder is then loaded with
``load_clip`` and M2IB saliency is checked on held-out slices (mass inside vs outside the target).

Options tried in the third round (benchmarks/RESULTS.md), off by default so that the defaults
reproduce the shipped model bit for bit: ``--hidden-targets unknown`` (a target the slice's
rendering window hides — a hepatic tumour in the lung window — is neither present nor absent, and
the caption names only what shows), ``--tune-beta N`` (M2IB's β for the card chosen on N held-out
slices per target), ``--ct-share`` / ``--tumour-slices`` (the training mix), ``--device cuda``,
``--architecture NAME|FILE.json`` (e.g. the 4 px-token ViT tried on an H100, fifth round),
``--loss-weight TERM=W`` (a term of :data:`LOSS_WEIGHTS`; ``mass``, the pointing term of
:func:`mass_loss`, is 0 by default — from scratch it lost whole tumour series, RESULTS.md, tenth
round; the shipped model adds it in a fine-tune; ``peak``, :func:`peak_loss`, is 0 and was not
scored), ``--mass-structure NAME`` (the two pointing terms only for the prompts naming it),
``--init FOLDER`` (fine-tune a written demo CLIP folder instead of starting from random weights:
the training heads are fitted alone for ``--head-steps`` steps, then the model follows the usual
schedule at ``--lr``; RESULTS.md, eleventh round).

Library: :func:`train_demo_clip`. CLI::

    python training/clip_demo.py --out models/demo-clip [--steps N] [--seed S] [--n-train N]
        [--hidden-targets present|unknown] [--tune-beta N] [--ct-share K] [--tumour-slices K] [--device cpu|cuda]
        [--architecture NAME|FILE.json] [--loss-weight TERM=W ...] [--mass-structure NAME ...]
        [--init FOLDER --head-steps N]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medclipsam.evaluation import roc_auc

log = logging.getLogger("medclipsam.training.clip_demo")

ARCHITECTURE = "demo"
MODEL_NAME = "medclipsam-demo-clip"
M2IB_LAYER = 3                 # the demo ViT has 4 blocks; M2IB's bottleneck after the last (--set m2ib.layer=3)
CALIBRATION_FILE = "medclipsam_presence.json"   # = medclipsam.volume.presence.CALIBRATION_FILE
NOTICE = "demo model, synthetic training data, not for clinical use"
# M2IB check after training: prompt → the structure whose mask it should land on
SALIENCY_CHECKS = {"tumor": "tumor", "breast tumor": "lesion", "left lung": "left lung", "liver": "liver",
                   "brain": "brain"}


class Slice(Protocol):
    """What the recipe needs of a training slice (``medclipsam.phantoms.PhantomSlice`` has it)."""

    rgb: np.ndarray                      # uint8 H×W×3
    caption: str                         # names what is visible
    masks: Mapping[str, np.ndarray]      # structure → bool H×W


# ---------------------------------------------------------------------------------------------
# structure prompts: text, the structures it names (any of them) and what must also be there


@dataclass(frozen=True)
class StructurePrompt:
    text: str
    targets: tuple[str, ...]             # present when any of these has enough pixels
    context: tuple[str, ...] = ()        # structures that must also be present ("brain" for "brain tumor")
    kinds: tuple[str, ...] = ()          # slice kinds it applies to (empty: any), e.g. "us-breast"


def _p(text: str, *targets: str, context: tuple[str, ...] = (), kinds: tuple[str, ...] = ()) -> StructurePrompt:
    return StructurePrompt(text, tuple(targets) or (text,), context, kinds)


# Each structure's own name is a prompt; the others are what users type for the same targets. In the
# phantom world "tumor" and "lesion" are the same kind of thing (the breast-ultrasound target is a
# "lesion"; captions call any of them tumour, mass, lesion, nodule or cyst).
STRUCTURE_PROMPTS: tuple[StructurePrompt, ...] = (
    _p("body"),
    _p("left lung"),
    _p("right lung"),
    _p("lungs", "left lung", "right lung"),
    _p("both lungs", "left lung", "right lung"),
    _p("lung", "left lung", "right lung"),
    _p("liver"),
    _p("spine"),
    _p("vertebra", "spine"),
    _p("brain"),
    _p("tumor", "tumor", "lesion"),
    _p("tumour", "tumor", "lesion"),
    _p("a tumor", "tumor", "lesion"),
    _p("mass", "tumor", "lesion"),
    _p("lesion", "lesion", "tumor"),
    _p("brain tumor", "tumor", context=("brain",)),
    _p("lung tumor", "tumor", context=("lungs",)),
    _p("liver tumor", "tumor", context=("liver",)),
    _p("breast lesion", "lesion", kinds=("us-breast",)),
    _p("breast tumor", "lesion", kinds=("us-breast",)),
)
GROUPS = {"lungs": ("left lung", "right lung")}     # context names standing for several structures
# Structures an image of a kind shows without a label for them: prompts naming only these are
# "unknown" there, not "absent" (elsewhere a structure the slice has no mask for is absent).
UNLABELLED = {"xray-chest": ("spine", "liver"), "us-breast": ("body",)}
MIN_PRESENT_TOKENS = 0.5     # "present": the target covers at least half a token (32 px at 128 px); 0 px: absent


def prompts_for(structures: Iterable[str]) -> list[StructurePrompt]:
    """The prompts trained and calibrated for data with these structures: those of
    :data:`STRUCTURE_PROMPTS` naming any of them, then each other structure by its own name."""
    names = sorted(set(structures))
    prompts = [p for p in STRUCTURE_PROMPTS if any(t in names for t in p.targets)]
    return prompts + [_p(k) for k in names if k not in {p.text for p in prompts}]


def presence_label(cover_sums: Mapping[str, float], prompt: StructurePrompt, kind: str | None) -> int:
    """1 present, 0 absent, -1 unknown (a sliver of the target, an unlabelled structure, or a
    kind-specific prompt on a slice of unknown kind). ``cover_sums``: structure → token coverage."""
    if prompt.kinds and kind is not None and kind not in prompt.kinds:
        return 0
    target = sum(cover_sums.get(t, 0.0) for t in prompt.targets)
    if target <= 0.0:
        unlabelled = UNLABELLED.get(kind or "", ())
        if all(t in unlabelled and t not in cover_sums for t in prompt.targets):
            return -1
        return 0
    for c in prompt.context:
        if sum(cover_sums.get(m, 0.0) for m in GROUPS.get(c, (c,))) <= 0.0:
            return 0
    if target < MIN_PRESENT_TOKENS or (prompt.kinds and kind is None):
        return -1
    return 1


# ---------------------------------------------------------------------------------------------
# data preparation


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


# ---------------------------------------------------------------------------------------------
# losses


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
    return 0.5 * (pos[has_pos].mean() if has_pos.any() else zero) + 0.5 * (neg[has_neg].mean() if has_neg.any() else zero)


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


# ---------------------------------------------------------------------------------------------
# the model's forward pieces


class Heads(torch.nn.Module):
    """Training-only scales and biases (not saved with the model): presence and dense logits."""

    def __init__(self) -> None:
        super().__init__()
        self.presence_log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
        self.presence_bias = torch.nn.Parameter(torch.tensor(0.0))
        self.dense_log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
        self.dense_bias = torch.nn.Parameter(torch.tensor(0.0))
        self.token_log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
        self.token_bias = torch.nn.Parameter(torch.tensor(0.0))

    def presence(self, cos: torch.Tensor) -> torch.Tensor:
        return self.presence_log_scale.exp() * cos + self.presence_bias

    def dense(self, cos: torch.Tensor) -> torch.Tensor:
        return self.dense_log_scale.exp() * cos + self.dense_bias

    def token(self, cos: torch.Tensor) -> torch.Tensor:
        return self.token_log_scale.exp() * cos + self.token_bias


def _run_tail(visual, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    trunk = visual.trunk
    x = tokens
    for blk in trunk.blocks[layer + 1:]:
        x = blk(x)
    return trunk.norm(x)


def _pooled(visual, normed: torch.Tensor) -> torch.Tensor:
    """The image embedding from the normed last-block tokens (timm's pooling, then the projection)."""
    return visual.head(visual.trunk.forward_head(normed))


def token_contributions(visual, normed: torch.Tensor, npre: int) -> torch.Tensor:
    """What each patch token does to the image embedding, as M2IB sees it (B×T×D).

    The demo ViT pools first and normalises after (timm ``fc_norm``): e = P·LN(m), m the mean of the
    patch tokens. M2IB's bottleneck replaces a token x_t by zero-mean noise, which moves m by
    −x_t/T, so to first order e moves by −P·J·x_t/T with J the Jacobian of the pooled LayerNorm at
    m. Returns P·J·x_t. (A per-token LayerNorm before pooling would make this zero up to noise:
    a normalised token does not change when it is scaled, so a bottleneck on it sees no signal.)"""
    ln = visual.trunk.fc_norm
    if getattr(visual.trunk, "global_pool", None) != "avg" or not isinstance(ln, torch.nn.LayerNorm):
        raise ValueError("the demo CLIP recipe needs an image tower that averages its patch tokens and normalises "
                         "the mean (timm global_pool='avg', fc_norm=True), as configs/clip/demo.json's ViT does")
    x = normed[:, npre:].float()                                              # B × T × C
    m = x.mean(dim=1, keepdim=True)                                           # B × 1 × C
    sigma = (m.var(dim=-1, unbiased=False, keepdim=True) + ln.eps).sqrt()     # B × 1 × 1
    n = (m - m.mean(dim=-1, keepdim=True)) / sigma
    d = x - x.mean(dim=-1, keepdim=True)
    d = d - n * (d * n).mean(dim=-1, keepdim=True)
    jx = d * ln.weight.float() / sigma
    return visual.head(jx) - visual.head(torch.zeros_like(jx[:, :1]))         # the projection's linear part


def token_features(visual, normed: torch.Tensor, npre: int) -> torch.Tensor:
    """Each patch token on its own in the joint space (B×T×D): normalised and projected as the
    pooled mean is (the pooled LayerNorm applied to the token)."""
    return visual.head(visual.trunk.fc_norm(normed[:, npre:]))


def dense_scores(contrib: torch.Tensor, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    """B×T×P: for each token and prompt, how much the token raises cos(image, prompt) — the
    derivative of the cosine along the token's contribution (``img`` the unnormalised image
    embeddings B×D, ``txt`` normalised prompt embeddings P×D). Kept target tokens raise the
    similarity, the others do not: what M2IB's bottleneck looks for."""
    norm = img.norm(dim=-1, keepdim=True).clamp(min=1e-6)                     # B × 1
    unit = img / norm
    cos = unit @ txt.T                                                        # B × P
    along_text = contrib @ txt.T                                              # B × T × P
    along_img = (contrib * unit[:, None, :]).sum(dim=-1, keepdim=True)       # B × T × 1
    return (along_text - along_img * cos[:, None, :]) / norm[:, None, :]


def _tokens_after(visual, pixels: torch.Tensor, layer: int) -> torch.Tensor:
    trunk = visual.trunk
    x = trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(pixels))))
    for blk in trunk.blocks[: layer + 1]:
        x = blk(x)
    return x


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _encode_texts(model, tokenizer, texts: Sequence[str]) -> torch.Tensor:
    return F.normalize(model.encode_text(tokenizer(list(texts)).to(_device_of(model))), dim=-1)


# ---------------------------------------------------------------------------------------------
# calibration and checks


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


# ---------------------------------------------------------------------------------------------
# the recipe


def _build_model(folder: Path, seed: int):
    """Build the architecture of a written folder exactly as ``load_clip`` does, seeded."""
    from medclipsam.models.clip import _create_from_folder  # the loader's own builder: same modules, same keys

    torch.manual_seed(seed)
    model, tokenizer, _ = _create_from_folder(folder, f"local-dir:{folder}")
    return model, tokenizer


HEAD_LR = 3e-2       # the training heads' learning rate while they are fitted alone (``init``): six scalars


def load_init_weights(model: torch.nn.Module, staged: Path, init: Path) -> str:
    """Load the weights of the demo CLIP folder ``init`` into ``model`` (built from ``staged``, the
    folder this data gives); says what differs when the two do not match. Returns the weights
    file's SHA-256 (the card records it: a folder path alone does not say which model it held)."""
    from medclipsam.models.checkpoints import load_strict, read_state_dict
    from medclipsam.models.clip import WEIGHT_FILE_NAMES

    if not init.is_dir():
        raise ValueError(f"--init {init}: no such model folder; give a folder written by training/clip_demo.py")
    for name in ("vocab.txt", "open_clip_config.json", "config.json"):
        mine, theirs = staged / name, init / name
        if not theirs.is_file() or mine.read_bytes() != theirs.read_bytes():
            raise ValueError(f"--init {init}: its {name} differs from (or lacks) the one this data and architecture "
                             "give; fine-tune with the data (--seed, --n-train) and --architecture it was trained with")
    weights = next((init / n for n in WEIGHT_FILE_NAMES if (init / n).is_file()), None)
    if weights is None:
        raise ValueError(f"--init {init}: no weights file ({', '.join(WEIGHT_FILE_NAMES)}) in the folder")
    hint = "Give a folder written by training/clip_demo.py with the same --architecture."
    state = read_state_dict(weights, what="--init demo CLIP weights", expected=f"the {weights.name} of a demo CLIP",
                            where=hint)
    load_strict(model, state, what="--init demo CLIP weights", path=weights, hint=hint)
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


# Pipeline settings the model card recommends besides the bottleneck layer (``--set`` wins over them).
# Chosen with ``benchmarks/phantom_eval.py --seed 1`` (seed 1 for choosing, seed 0 for reporting); the
# CRF's 10 mean-field iterations (the papers run 1) with ``--seed 7`` (sixth round): this model's maps
# are blurred by its 8 px tokens, and more iterations pull the coarse mask onto the image's edges
# (tumour coarse-mask Dice 0.55 → 0.72 there, lungs unchanged). The bilateral (appearance) kernel's
# weight 30 (the papers 5) with ``--seed 100`` and ``--seed 101`` (eighth round): it holds the coarse
# mask to the tumour's edges where the blurred map spills over into the lung (tumour 0.822 / 0.856 →
# 0.853 / 0.844, lungs 0.926 / 0.927 → 0.938 / 0.935).
RECOMMENDED_SETTINGS: dict[str, str] = {"postprocess.method": "crf", "postprocess.crf.iterations": "10",
                                        "postprocess.crf.bilateral_compat": "30",
                                        "postprocess.num_components": "1", "postprocess.num_components_paired": "2"}


def pipeline_recommendations(layer: int, beta: float | None = None) -> dict[str, str]:
    """The card's ``pipeline_overrides``: M2IB's layer (and β, when tuned) for this model, then
    :data:`RECOMMENDED_SETTINGS`."""
    out = {"m2ib.layer": str(layer)}
    if beta is not None:
        out["m2ib.beta"] = f"{beta:g}"
    return {**out, **RECOMMENDED_SETTINGS}


def _write_card(folder: Path, extra: dict[str, Any]) -> None:
    try:
        from medclipsam.models.cards import MODEL_CARD, demo_card
        card = demo_card(MODEL_NAME, **extra)
    except ImportError:                          # older tree without model cards
        MODEL_CARD, card = "model_card.json", {"name": MODEL_NAME, "intended_use": "demo", "notice": NOTICE, **extra}
    (folder / MODEL_CARD).write_text(json.dumps(card, indent=2), encoding="utf-8")
    metrics = extra.get("metrics", {})
    how = (f"fine-tuned from the demo CLIP in {metrics['init']} (weights SHA-256 {metrics['init_weights_sha256'][:16]}…)"
           if metrics.get("init") else "trained from scratch")
    (folder / "README.txt").write_text(
        f"{MODEL_NAME}: {NOTICE}.\n\n"
        "A small BiomedCLIP-shaped CLIP model (architecture 'demo': ViT 128 px / patch 8 / 4 blocks, average "
        "pooling then LayerNorm + 2-layer BERT) "
        f"{how} by training/clip_demo.py on synthetic phantom slices. It knows only the phantom "
        "world's structures and says nothing about real images.\n\n"
        "Load with: load_clip('local-dir:PATH') or --clip local-dir:PATH, PATH this folder; M2IB saliency needs "
        f"--set m2ib.layer={extra.get('pipeline_overrides', {}).get('m2ib.layer', M2IB_LAYER)} (the model has 4 image "
        "blocks; model_card.json recommends it as a pipeline override).\n"
        f"{CALIBRATION_FILE} holds the presence-gate threshold calibrated on held-out synthetic slices.\n",
        encoding="utf-8")


def train_demo_clip(data: Sequence[Slice], out_dir: str | os.PathLike, *, steps: int, batch_size: int = 32,
                    seed: int = 0, lr: float = 1e-3, log_every: int = 50, val_data: Sequence[Slice] | None = None,
                    val_fraction: float = 0.15, architecture: str | dict[str, Any] = ARCHITECTURE,
                    m2ib_layer: int | None = None, weights: Mapping[str, float] | None = None,
                    dense_focal: float = 1.0, presence_focal: float = 0.0, threads: int | None = 2,
                    bf16: bool | None = None, check_saliency: int = 24, tune_slices: int = 0,
                    hidden_targets: str = "present", data_note: str = "", device: str = "cpu",
                    mass_structures: Sequence[str] = (),
                    init: str | os.PathLike | None = None, head_steps: int = 100,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a demo CLIP model on ``data`` and write a complete ``local-dir:`` folder to ``out_dir``.

    ``data``: a sequence of slices with ``.rgb`` (uint8 H×W×3), ``.caption`` and ``.masks``
    (structure → bool H×W); optional ``.kind``. ``val_data``: held-out slices for the presence
    calibration and checks (default: the last ``val_fraction`` of ``data``, not trained on).
    ``weights``: loss weights (``contrastive``, ``presence``, ``dense``, ``token_dense``, ``token_scale``,
    ``laterality``, ``mass``, ``peak``).
    ``presence_focal``: focal γ of the presence loss (0: plain balanced BCE).
    ``bf16``: bfloat16 autocast for the training forward passes (weights, losses and the saved
    model stay float32); None: where the CPU has native bfloat16 matrix units (always on CUDA).
    ``hidden_targets``: see :func:`prepare` (``unknown`` was tried and did not help; RESULTS.md).
    ``tune_slices``: > 0 chooses M2IB's β for the card on up to that many held-out slices per target
    (:func:`tune_beta`); 0 keeps the preset's β.
    ``device``: where to train (``cpu`` or ``cuda``); the recipe is deterministic on a given device,
    but a CUDA run does not reproduce a CPU run bit for bit. The committed demo model is a CPU run.
    ``mass_structures``: the ``mass`` and ``peak`` terms only for the prompts naming one of these structures
    (e.g. ``("tumor",)``); empty: every prompt.
    ``init``: a demo CLIP folder written by this recipe to fine-tune (its architecture and vocabulary
    must be the ones this data gives: same data seed and size); its weights replace the random
    initialisation. The training heads (scales and biases, not saved with a model) start afresh, so
    for the first ``head_steps`` steps only they learn; the model's learning rate then follows the
    usual warm-up and cosine schedule over the remaining steps.
    Returns the metrics (also stored in the model card).
    """
    from medclipsam.models.clip import clip_architecture, write_clip_folder

    say = progress or log.info
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if steps < 1 or batch_size < 2:
        raise ValueError("steps must be >= 1 and batch_size >= 2")
    head_steps = int(head_steps) if init is not None else 0
    if not 0 <= head_steps <= steps:
        raise ValueError(f"head_steps must be between 0 and steps ({steps}); got {head_steps}")
    data = list(data)
    if val_data is None:
        n_val = max(1, int(round(len(data) * val_fraction)))
        if len(data) - n_val < 2:
            raise ValueError(f"{len(data)} slices are too few to hold out {n_val} for calibration")
        data, val_data = data[:-n_val], data[-n_val:]
    val_data = list(val_data)
    w = {**LOSS_WEIGHTS, **dict(weights or {})}
    unknown = set(w) - set(LOSS_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {', '.join(LOSS_WEIGHTS)}")

    arch = clip_architecture(architecture) if isinstance(architecture, str) else dict(architecture)
    structures = sorted({k for s in data for k in s.masks})
    prompts = prompts_for(structures)
    vocab = vocabulary_words([s.caption for s in data] + [s.caption for s in val_data], prompts)

    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device cuda was asked for but CUDA is not available here; use device='cpu'")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")      # deterministic cuBLAS
    if bf16 is None:
        bf16 = dev.type == "cuda" or _cpu_has_bf16()
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory(prefix="medclipsam-demo-clip-") as tmp:
            staged = write_clip_folder(Path(tmp) / "model", arch, None, vocab_words=vocab)
            model, tokenizer = _build_model(staged, seed)
            if init is not None:
                init_sha256 = load_init_weights(model, staged, Path(init))
                say(f"fine-tuning {init} (heads alone for {head_steps} steps)")
            model.to(dev)
            visual = model.visual
            vt_layers = len(visual.trunk.blocks)
            layer = (vt_layers - 1 if m2ib_layer is None else m2ib_layer) % vt_layers
            size = int(arch["open_clip_config"]["model_cfg"]["vision_cfg"]["image_size"])
            grid = int(visual.trunk.patch_embed.grid_size[0])
            npre = int(getattr(visual.trunk, "num_prefix_tokens", 1))
            mean = tuple(arch["open_clip_config"]["preprocess_cfg"]["mean"])
            std = tuple(arch["open_clip_config"]["preprocess_cfg"]["std"])
            train = prepare(data, prompts, size, grid, mean, std, hidden_targets)
            val = prepare(val_data, prompts, size, grid, mean, std, hidden_targets)
            say(f"data: {len(data)} training and {len(val_data)} held-out slices, structures {structures}, "
                f"{len(prompts)} prompts, {len(set(train.captions))} distinct captions, vocabulary {len(vocab)} words "
                f"({time.perf_counter() - t0:.1f} s)")

            heads = Heads().to(dev)
            decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
            no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "logit_scale" not in n)]
            groups = [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}]
            if init is None:       # the shipped recipe: heads in the no-decay group, on the same schedule
                groups[1]["params"] = no_decay + list(heads.parameters())
            else:
                groups.append({"params": list(heads.parameters()), "weight_decay": 0.0})
            opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
            warmup = max(1, min(50, (steps - head_steps) // 10))
            order_rng = np.random.default_rng(seed)
            prompt_texts = [p.text for p in prompts]
            pairs = lateral_pairs(prompt_texts)
            unknown_mass = set(mass_structures) - set(structures)
            if unknown_mass:
                raise ValueError(f"mass_structures {sorted(unknown_mass)} are not structures of this data: {structures}")
            mass_prompts = (torch.tensor([any(t in mass_structures for t in p.targets) for p in prompts], device=dev)
                            if mass_structures else None)

            # fixed held-out batch for the contrastive loss before / after training
            eval_idx = np.arange(min(len(val_data), 64))

            def eval_contrastive() -> float:
                model.eval()
                with torch.no_grad():
                    caps = [val.captions[i] for i in eval_idx]
                    uniq = list(dict.fromkeys(caps))
                    idx = torch.tensor([uniq.index(c) for c in caps], device=dev)
                    img = F.normalize(model.encode_image(val.pixels[eval_idx].to(dev)), dim=-1)
                    txt = _encode_texts(model, tokenizer, uniq)
                    scale = model.logit_scale.exp().clamp(max=100.0)
                    return float(contrastive_loss(img, txt, idx, scale))

            loss0 = eval_contrastive()
            say(f"step 0: held-out contrastive loss {loss0:.4f}")
            history: list[dict[str, float]] = []
            perm = np.empty(0, dtype=np.int64)
            n = len(data)
            bs = min(batch_size, n)
            running: dict[str, float] = {}
            t_train = time.perf_counter()
            for step in range(steps):
                if perm.size < bs:
                    perm = np.concatenate([perm, order_rng.permutation(n)])
                idx, perm = perm[:bs], perm[bs:]
                ids = torch.from_numpy(idx)
                model.train()
                model_lr = 0.0 if step < head_steps else _lr_at(step - head_steps, steps - head_steps, lr, warmup)
                for i, g in enumerate(opt.param_groups):
                    g["lr"] = HEAD_LR if (i == 2 and step < head_steps) else model_lr

                pixels, cover = train.pixels[ids].to(dev), train.cover[ids].to(dev)
                labels, known = train.labels[ids].to(dev), train.known[ids].to(dev)
                caps = [train.captions[i] for i in idx]
                uniq = list(dict.fromkeys(caps))
                cap_idx = torch.tensor([uniq.index(c) for c in caps], device=dev)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    txt = model.encode_text(tokenizer(uniq + prompt_texts).to(dev))
                    mid = _tokens_after(visual, pixels, layer)
                    normed = _run_tail(visual, mid, layer)
                    img_raw = _pooled(visual, normed)
                txt = F.normalize(txt.float(), dim=-1)
                txt_cap, txt_prompt = txt[: len(uniq)], txt[len(uniq):]
                img = F.normalize(img_raw.float(), dim=-1)
                scores = dense_scores(token_contributions(visual, normed, npre), img_raw.float(), txt_prompt)
                own = F.normalize(token_features(visual, normed, npre).float(), dim=-1) @ txt_prompt.T  # B × T × P

                scale = model.logit_scale.exp().clamp(max=100.0)
                parts = {"contrastive": contrastive_loss(img, txt_cap, cap_idx, scale),
                         "presence": presence_loss(heads.presence(img @ txt_prompt.T), labels,
                                                   focal=presence_focal)}
                # keep the bottleneck block's tokens at the scale of M2IB's N(0, 1) noise (mean square 1
                # per element): else they grow with training, unit noise hides nothing and the capacity
                # read-out follows the tokens' energy instead of what is kept
                parts["token_scale"] = (mid.float().pow(2).mean(dim=-1).clamp(min=1e-6).log() ** 2).mean()
                cov = cover.flatten(2).transpose(1, 2)                                  # B × T × P
                dense_logits = heads.dense(scores)
                parts["dense"] = dense_loss(dense_logits, cov, known, focal=dense_focal)
                if w["laterality"] > 0 and pairs:
                    parts["laterality"] = laterality_loss(dense_logits, cov, pairs)
                if w["mass"] > 0:
                    parts["mass"] = mass_loss(dense_logits, cov, known, prompts=mass_prompts)
                if w["peak"] > 0:
                    parts["peak"] = peak_loss(dense_logits, cov, known, prompts=mass_prompts)
                if w["token_dense"] > 0:
                    parts["token_dense"] = dense_loss(heads.token(own), cov, known, focal=dense_focal)

                loss = sum(w[k] * v for k, v in parts.items())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(heads.parameters()), 1.0)
                opt.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0.0, math.log(100.0))

                for k, v in parts.items():
                    running[k] = running.get(k, 0.0) + float(v.detach())
                running["loss"] = running.get("loss", 0.0) + float(loss.detach())
                running["_n"] = running.get("_n", 0.0) + 1
                if (step + 1) % log_every == 0 or step + 1 == steps:
                    k_n = running.pop("_n")
                    entry = {"step": step + 1, **{k: round(v / k_n, 4) for k, v in running.items()}}
                    history.append(entry)
                    running = {}
                    el = time.perf_counter() - t_train
                    say(f"step {step + 1}/{steps}: " + " ".join(f"{k}={v:.4f}" for k, v in entry.items() if k != "step")
                        + f" lr={opt.param_groups[0]['lr']:.2e} ({el:.0f} s, {el / (step + 1):.2f} s/step)")
            train_seconds = time.perf_counter() - t_train
            loss1 = eval_contrastive()
            say(f"held-out contrastive loss {loss0:.4f} -> {loss1:.4f}")

            model.eval()
            sims = similarities(model, tokenizer, val.pixels, prompt_texts)
            calib = calibrate_presence(sims, val.labels.numpy(), prompts)
            # caption retrieval among the distinct held-out captions (image → caption top-1)
            uniq_val = list(dict.fromkeys(val.captions))
            cap_sims = similarities(model, tokenizer, val.pixels, uniq_val)
            truth = np.array([uniq_val.index(c) for c in val.captions])
            caption_top1 = float((cap_sims.argmax(axis=1) == truth).mean())
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)

    from medclipsam.models.clip import WEIGHT_FILE_NAMES

    for name in WEIGHT_FILE_NAMES:          # weights of an earlier model here would be found before ours
        if name != "open_clip_pytorch_model.bin":
            (out_dir / name).unlink(missing_ok=True)
    folder = write_clip_folder(out_dir, arch, state, vocab_words=vocab)
    calibrated_on = (f"{len(val_data)} held-out synthetic slices ({data_note or 'recipe data'}), "
                     f"{calib['pairs']} (slice, structure prompt) pairs, {calib['present_pairs']} present")
    (folder / CALIBRATION_FILE).write_text(json.dumps(
        {"presence_threshold": calib["presence_threshold"], "auc": calib["auc"],
         "balanced_accuracy": calib["balanced_accuracy"], "calibrated_on": calibrated_on,
         "per_prompt_auc": calib["per_prompt_auc"]}, indent=2), encoding="utf-8")
    metrics: dict[str, Any] = {
        "steps": steps, "batch_size": bs, "seed": seed, "lr": lr, "bf16": bool(bf16), "device": dev.type,
        "n_train": len(data), "n_val": len(val_data),
        "structures": structures, "m2ib_layer": layer, "loss_weights": w, "dense_focal": dense_focal,
        "presence_focal": presence_focal, **({"mass_structures": list(mass_structures)} if mass_structures else {}),
        **({"init": str(init), "init_weights_sha256": init_sha256, "head_steps": head_steps} if init else {}),
        "contrastive_loss_initial": round(loss0, 4), "contrastive_loss_final": round(loss1, 4),
        "retrieval_auc": calib["auc"], "presence_threshold": calib["presence_threshold"],
        "presence_balanced_accuracy": calib["balanced_accuracy"], "per_prompt_auc": calib["per_prompt_auc"],
        "caption_top1": round(caption_top1, 4), "distinct_val_captions": len(uniq_val),
        "train_seconds": round(train_seconds, 1), "history": history,
    }
    if check_saliency > 0:
        checks = {k: v for k, v in SALIENCY_CHECKS.items() if v in structures}
        metrics["m2ib"] = saliency_check(folder, val_data, checks, check_saliency, layer)
        for name, r in metrics["m2ib"].items():
            say(f"M2IB (layer {layer}) '{name}' on {r['slices']} held-out slices: inside/outside mean saliency "
                f"{r['inside_outside_ratio_median']:.2f} (median), inside > outside on {r['inside_gt_outside']:.0%}, "
                f"pointing game {r['pointing_game']:.0%}")
    beta = None
    if tune_slices > 0:
        targets = {k: v for k, v in BETA_TARGETS.items() if all(p in structures for p in GROUPS.get(v, (v,)))}
        metrics["beta_tuning"] = tuned = tune_beta(folder, val_data, targets, tune_slices, layer, RECOMMENDED_SETTINGS)
        beta = tuned["beta"]
        say(f"M2IB β chosen on held-out slices {tuned['slices']}: {beta:g} (coarse-mask Dice per β "
            f"{tuned['mean_dice']})" if beta is not None else "M2IB β: no held-out slices to tune on; default kept")
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    card_metrics = {k: v for k, v in metrics.items() if k != "history"}
    _write_card(folder, {"architecture": arch["name"], "training": "training/clip_demo.py",
                         "data": data_note or "synthetic slices given to train_demo_clip",
                         "pipeline_overrides": pipeline_recommendations(layer, beta), "metrics": card_metrics})
    say(f"wrote {folder} ({metrics['seconds']:.0f} s)")
    return metrics


# ---------------------------------------------------------------------------------------------
# CLI


# The training mix (training_slices' balanced default: the shipped model). A mix with twice the CT
# share and up to 5 tumour slices per series (--ct-share 2 --tumour-slices 5) was tried and lost
# tumour Dice (RESULTS.md).
TRAIN_MIX = {"shares": (1, 1, 1, 1), "tumour_slices": 3}


def _phantom_data(seed: int, n_train: int, n_val: int, mix: Mapping[str, Any] | None = None):
    if importlib.util.find_spec("medclipsam.phantoms") is None:
        return None
    from medclipsam import phantoms
    if not hasattr(phantoms, "training_slices"):
        return None
    return (phantoms.training_slices(seed, n_train, **dict(mix or TRAIN_MIX)),
            phantoms.training_slices(seed + 100_003, n_val))


def _architecture_arg(value: str) -> str | dict[str, Any]:
    """A bundled architecture name, or the contents of a JSON file in the bundled form."""
    path = Path(value)
    if value.endswith(".json") and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return value


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=f"Train the demo CLIP model on synthetic phantom slices ({NOTICE}).")
    ap.add_argument("--out", required=True, type=Path, help="model folder to write (load with --clip local-dir:OUT)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=16000, help="training slices (phantoms.training_slices)")
    ap.add_argument("--n-val", type=int, default=300, help="held-out slices for calibration")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu (the committed demo model) or cuda")
    ap.add_argument("--architecture", default=ARCHITECTURE,
                    help=f"bundled CLIP architecture name or a JSON file of that form (default {ARCHITECTURE})")
    ap.add_argument("--ct-share", type=int, default=1, help="CT slices per MR/US/X-ray slice in the mix (default 1)")
    ap.add_argument("--tumour-slices", type=int, default=3,
                    help="at most this many of the 8 slices taken from each CT/MR series show its tumour (default 3)")
    ap.add_argument("--hidden-targets", choices=HIDDEN_TARGETS, default="present",
                    help="targets the slice's window hides: labelled present (default, the shipped model) or unknown")
    ap.add_argument("--loss-weight", action="append", default=[], metavar="TERM=W",
                    help=f"weight of a loss term instead of its default (terms: {', '.join(LOSS_WEIGHTS)}), "
                         "e.g. --loss-weight laterality=0.3 (repeatable)")
    ap.add_argument("--tune-beta", type=int, default=0, metavar="N",
                    help="choose M2IB's β on up to N held-out slices per target (0: keep the preset's)")
    ap.add_argument("--mass-structure", action="append", default=[], metavar="NAME",
                    help="the mass and peak terms only for prompts naming this structure (repeatable; default: every prompt)")
    ap.add_argument("--init", type=Path, default=None, metavar="FOLDER",
                    help="fine-tune this demo CLIP folder (same data and architecture) instead of random weights")
    ap.add_argument("--head-steps", type=int, default=100, metavar="N",
                    help="with --init: steps in which only the training heads learn (default 100)")
    ap.add_argument("--check-saliency", type=int, default=24, metavar="N",
                    help="M2IB check on up to N held-out slices per prompt after training (0: skip)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        weights = loss_weights_from_overrides(args.loss_weight)
    except ValueError as e:
        ap.error(str(e))

    t0 = time.perf_counter()
    mix = {"shares": (args.ct_share, 1, 1, 1), "tumour_slices": args.tumour_slices}
    got = _phantom_data(args.seed, args.n_train, args.n_val, mix)
    if got is None:
        print("error: the phantom module medclipsam.phantoms (training_slices) is missing from this installation, "
              "so there is no training data; install a medclipsam that has it", file=sys.stderr)
        return 2
    train, val = got
    print(f"generated {len(train)} + {len(val)} phantom slices in {time.perf_counter() - t0:.1f} s", flush=True)
    metrics = train_demo_clip(train, args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                              lr=args.lr, log_every=args.log_every, val_data=val, threads=args.threads,
                              check_saliency=args.check_saliency, tune_slices=args.tune_beta,
                              hidden_targets=args.hidden_targets, weights=weights,
                              device=args.device, architecture=_architecture_arg(args.architecture),
                              init=args.init, head_steps=args.head_steps, mass_structures=tuple(args.mass_structure),
                              data_note=f"medclipsam.phantoms.training_slices(seed={args.seed}, n={args.n_train}"
                                        + ("" if mix == TRAIN_MIX else
                                           f", shares={mix['shares']}, tumour_slices={mix['tumour_slices']}")
                                        + f"), held out: seed {args.seed + 100_003}",
                              progress=lambda s: print(s, flush=True))
    seconds = time.perf_counter() - t0
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}), flush=True)
    print(f"retrieval_auc={metrics['retrieval_auc']:.4f} steps={metrics['steps']} seconds={seconds:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
