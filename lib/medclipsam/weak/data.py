"""Training data of the weakly supervised stage: accepted (``final``) labels and their volumes, as
2D slices at one in-plane size, with nnU-Net-like sampling and augmentation.

* **Classes** are the label vocabulary's values (0 background, 1..N entries, N+1 ``prompted``), the
  same for training and inference. A submitted label whose ``label_info`` names its segments
  (``[{"name": "left lung", "idx": 1}, ...]``, as 3D Slicer submits) is mapped name → vocabulary value;
  without it the values are taken as vocabulary values. Unknown names become ``prompted``.
* **Intensity**: volumes whose values look like Hounsfield units are clipped to [−1024, 1024] and
  scaled to [−1, 1] (one scale for every CT); others are scaled from their 0.5–99.5th percentiles.
* **Sampling**: each batch draws a third of its slices from slices that hold a label (nnU-Net's
  foreground oversampling, 0.33), the rest uniformly.
* **Augmentation** (per slice, on the fly): rotation ±15°, scaling 0.85–1.25 (p 0.3 each), brightness
  and contrast ±15 %, gamma 0.8–1.25, Gaussian noise (p 0.15–0.3). No mirroring: the vocabulary has
  lateral classes ("left lung"), which a left-right flip would swap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..serving.vocabulary import Vocabulary

CT_CLIP = 1024.0


def normalise_volume(array: np.ndarray) -> np.ndarray:
    """float32 (slices, rows, cols) → roughly [−1, 1] (module docstring)."""
    a = np.asarray(array, dtype=np.float32)
    sample = a[:: max(1, a.shape[0] // 8), ::4, ::4]
    lo, hi = np.percentile(sample, [1, 99])
    if lo < -500 and hi > -200:                          # Hounsfield units
        return np.clip(a, -CT_CLIP, CT_CLIP) / CT_CLIP
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0) * 2.0 - 1.0


def remap_label(label: np.ndarray, label_info: Any, vocabulary: Vocabulary) -> np.ndarray:
    """Submitted label values → vocabulary values (module docstring)."""
    lab = np.asarray(label)
    if np.any(lab < 0) or np.any(lab != np.round(lab)):
        raise InputError("a label volume holds negative or fractional values; labels are whole numbers 0-255")
    lab = lab.astype(np.int64)
    items = [i for i in (label_info or []) if isinstance(i, dict) and "name" in i]
    n_classes = vocabulary.prompted_value + 1
    if not items:
        return np.where(lab >= n_classes, vocabulary.prompted_value, lab).astype(np.uint8)
    lut = np.zeros(max(256, int(lab.max()) + 1), dtype=np.uint8)
    for pos, item in enumerate(items):
        idx = next((item[k] for k in ("idx", "labelID", "label") if k in item), pos + 1)
        entry = vocabulary.find(str(item["name"]))
        lut[int(idx)] = entry.value if entry else vocabulary.prompted_value
    return lut[lab]


def resize_slices(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(N, C, H, W) → (N, C, size, size); ``mode`` bilinear for images and probabilities, nearest for labels."""
    if x.shape[-2:] == (size, size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=(size, size), mode="nearest")
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False)


@dataclass
class SliceSet:
    """All training slices in memory at ``size``: images (N, 1, S, S) float16, labels (N, S, S) uint8."""

    images: torch.Tensor
    labels: torch.Tensor
    study: np.ndarray                    # study index of each slice

    @property
    def foreground(self) -> np.ndarray:
        return np.flatnonzero(self.labels.flatten(1).amax(dim=1).numpy() > 0)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def slice_set(pairs: Sequence[tuple[np.ndarray, np.ndarray]], size: int) -> SliceSet:
    """(normalised volume, vocabulary-valued label) pairs → a :class:`SliceSet`."""
    images, labels, study = [], [], []
    for i, (vol, lab) in enumerate(pairs):
        if vol.shape != lab.shape:
            raise InputError(f"study {i}: label {lab.shape} and image {vol.shape} differ in shape; the label "
                             "must be on the image's grid")
        v = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[:, None]
        l_ = torch.from_numpy(np.ascontiguousarray(lab, dtype=np.uint8))[:, None].float()
        images.append(resize_slices(v, size, "bilinear").half())
        labels.append(resize_slices(l_, size, "nearest")[:, 0].to(torch.uint8))
        study.append(np.full(vol.shape[0], i))
    if not images:
        raise InputError("no training data: no study has a final label yet; submit labels first")
    return SliceSet(torch.cat(images), torch.cat(labels), np.concatenate(study))


def sample_batch(data: SliceSet, batch: int, rng: np.random.Generator,
                 foreground_fraction: float = 0.33) -> np.ndarray:
    fg = data.foreground
    n_fg = int(round(batch * foreground_fraction)) if fg.size else 0
    return np.concatenate([rng.choice(fg, n_fg), rng.integers(0, len(data), batch - n_fg)])


def augment(images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B, 1, S, S) float, labels (B, S, S) long → augmented copies (module docstring)."""
    b = images.shape[0]

    def u(lo: float, hi: float, n: int = b) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    def p(prob: float) -> torch.Tensor:
        return torch.rand(b, generator=gen) < prob

    angle = torch.where(p(0.3), u(-math.pi / 12, math.pi / 12), torch.zeros(b))
    scale = torch.where(p(0.3), u(0.85, 1.25), torch.ones(b))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros(b)], 1), torch.stack([sin, cos, torch.zeros(b)], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    x = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
    mult = torch.where(p(0.15), u(0.85, 1.15), torch.ones(b)).view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = torch.where(p(0.15), u(0.85, 1.15), torch.ones(b)).view(b, 1, 1, 1)
    x = (x - mean) * contrast + mean
    x = x * mult
    gamma = torch.where(p(0.3), u(0.8, 1.25), torch.ones(b)).view(b, 1, 1, 1)
    x01 = ((x + 1) / 2).clamp(0, 1)
    x = x01.pow(gamma) * 2 - 1
    noise = torch.where(p(0.15), u(0.0, 0.05), torch.zeros(b)).view(b, 1, 1, 1)
    x = x + noise * torch.randn(x.shape, generator=gen)
    return x, y.long()
