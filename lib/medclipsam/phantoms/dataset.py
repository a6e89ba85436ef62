"""A balanced, deterministic mix of phantom examples for training and evaluation.

:func:`training_slices` interleaves the four kinds (CT, MR, US, X-ray in turn, so every run of four
examples is balanced). CT and MR examples are slices of several phantom series — 8 slices from
each, stratified so that tumour-present and tumour-absent slices both occur (CT: up to 3 with the
tumour, up to 2 with no lung at all — the thoracic inlet above the lungs and the abdomen below them
— and the rest from the remaining slices; MR: up to 3 with the tumour). Each example carries the
``target`` its rendering was chosen for (CT: mostly the tumour, else a lung, the lungs, the liver or
the spine — the window follows :func:`~medclipsam.volume.render.choose_window`; MR: tumour or
brain; US: lesion; X-ray: lungs). The series and images use sub-seeds derived from ``seed``, so
orientation variants (oblique, feet-first, coronal) and both MR contrasts occur in the mix.
"""

from __future__ import annotations

import numpy as np

from .base import PhantomSlice
from .ct import ct_chest_series
from .mr import mr_brain_series
from .ultrasound import us_breast_image
from .xray import xray_chest_image

KINDS = ("ct-chest", "mr-brain", "us-breast", "xray-chest")
SLICES_PER_SERIES = 8
CT_SLICES, MR_SLICES = 32, 24
US_SIZE, XRAY_SIZE = (160, 200), (192, 192)
CT_TARGETS = ("tumor", "tumor", "tumor", "tumor", "left lung", "right lung", "lungs", "liver", "liver", "spine")
MR_TARGETS = ("tumor", "tumor", "tumor", "brain")
XRAY_TARGETS = ("lungs", "left lung", "right lung")


def sub_seed(seed: int, kind: str, j: int) -> int:
    """The seed of the ``j``-th phantom of ``kind`` in the mix of ``seed`` (a 31-bit integer)."""
    state = np.random.SeedSequence([int(seed), KINDS.index(kind), int(j)]).generate_state(1)[0]
    return int(state) & 0x7FFFFFFF


def fit(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """``shape`` scaled down (never up) to fit inside size×size, keeping its aspect ratio."""
    h, w = shape
    f = min(1.0, size / max(h, w))
    return max(1, int(round(h * f))), max(1, int(round(w * f)))


def _pick(rng: np.random.Generator, pool: list[int], k: int, taken: set[int]) -> list[int]:
    free = [i for i in pool if i not in taken]
    if k <= 0 or not free:
        return []
    chosen = rng.choice(len(free), size=min(k, len(free)), replace=False)
    return [free[int(i)] for i in chosen]


def _stratified(rng: np.random.Generator, series, count: int, with_lungs: bool) -> list[int]:
    n = len(series)
    tumour = set(series.present_slices("tumor").tolist())
    taken: set[int] = set()
    picked = _pick(rng, sorted(tumour), min(3, count), taken)
    taken.update(picked)
    if with_lungs:
        lungs = set(series.present_slices("lungs").tolist())
        outside = [k for k in range(n) if k not in lungs and k not in tumour]
        more = _pick(rng, outside, min(2, count - len(taken)), taken)
        taken.update(more)
    absent = [k for k in range(n) if k not in tumour]
    taken.update(_pick(rng, absent, count - len(taken), taken))
    taken.update(_pick(rng, list(range(n)), count - len(taken), taken))
    return sorted(taken)


def _series_examples(seed: int, kind: str, count: int, size: int) -> list[PhantomSlice]:
    out: list[PhantomSlice] = []
    j = 0
    while len(out) < count:
        s = sub_seed(seed, kind, j)
        if kind == "ct-chest":
            series, targets = ct_chest_series(s, CT_SLICES, size), CT_TARGETS
        else:
            series, targets = mr_brain_series(s, MR_SLICES, size), MR_TARGETS
        rng = np.random.default_rng([s, 0x5E1EC7])
        for k in _stratified(rng, series, min(SLICES_PER_SERIES, count - len(out)), kind == "ct-chest"):
            out.append(series.slice(k, targets[int(rng.integers(len(targets)))]))
        j += 1
    return out


def training_slices(seed: int, n: int, size: int = 128) -> list[PhantomSlice]:
    """``n`` examples, CT/MR/US/X-ray in turn, each at most size×size; deterministic in ``seed``."""
    if n < 0:
        raise ValueError(f"n must be ≥ 0, got {n}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    counts = [n // 4 + (1 if i < n % 4 else 0) for i in range(4)]
    ct = _series_examples(seed, "ct-chest", counts[0], size)
    mr = _series_examples(seed, "mr-brain", counts[1], size)
    us = [us_breast_image(sub_seed(seed, "us-breast", j), fit(US_SIZE, size)) for j in range(counts[2])]
    xr = []
    for j in range(counts[3]):
        s = sub_seed(seed, "xray-chest", j)
        ex = xray_chest_image(s, fit(XRAY_SIZE, size))
        ex.target = XRAY_TARGETS[s % len(XRAY_TARGETS)]
        xr.append(ex)
    groups = [ct, mr, us, xr]
    return [groups[i % 4][i // 4] for i in range(n)]


__all__ = ["training_slices", "KINDS", "sub_seed", "fit"]
