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


def _stratified(rng: np.random.Generator, series, count: int, with_lungs: bool, tumour_slices: int = 3) -> list[int]:
    n = len(series)
    tumour = set(series.present_slices("tumor").tolist())
    taken: set[int] = set()
    picked = _pick(rng, sorted(tumour), min(tumour_slices, count), taken)
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


def _series_examples(seed: int, kind: str, count: int, size: int, tumour_slices: int = 3) -> list[PhantomSlice]:
    out: list[PhantomSlice] = []
    j = 0
    while len(out) < count:
        s = sub_seed(seed, kind, j)
        if kind == "ct-chest":
            series, targets = ct_chest_series(s, CT_SLICES, size), CT_TARGETS
        else:
            series, targets = mr_brain_series(s, MR_SLICES, size), MR_TARGETS
        rng = np.random.default_rng([s, 0x5E1EC7])
        for k in _stratified(rng, series, min(SLICES_PER_SERIES, count - len(out)), kind == "ct-chest",
                             tumour_slices):
            out.append(series.slice(k, targets[int(rng.integers(len(targets)))]))
        j += 1
    return out


def training_slices(seed: int, n: int, size: int = 128, *, shares: tuple[int, int, int, int] = (1, 1, 1, 1),
                    tumour_slices: int = 3) -> list[PhantomSlice]:
    """``n`` examples, CT/MR/US/X-ray in turn, each at most size×size; deterministic in ``seed``.

    ``shares``: how many of each kind (CT, MR, US, X-ray) in every run of ``sum(shares)`` examples
    (default one each); ``tumour_slices``: at most this many of the 8 slices taken from each CT or
    MR series show its tumour (default 3). The defaults give the balanced mix the tests and the SAM
    recipe use; the CLIP recipe asks for more CT and more tumour slices (the hardest targets).
    """
    if n < 0:
        raise ValueError(f"n must be ≥ 0, got {n}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    if len(shares) != 4 or any(int(w) < 0 for w in shares) or sum(shares) < 1:
        raise ValueError(f"shares must be 4 non-negative counts (CT, MR, US, X-ray), not all 0; got {shares}")
    if not 0 <= tumour_slices <= SLICES_PER_SERIES:
        raise ValueError(f"tumour_slices must be 0..{SLICES_PER_SERIES}, got {tumour_slices}")
    pattern = [i for r in range(max(shares)) for i in range(4) if shares[i] > r]
    order = [pattern[j % len(pattern)] for j in range(n)]
    counts = [order.count(i) for i in range(4)]
    ct = _series_examples(seed, "ct-chest", counts[0], size, tumour_slices)
    mr = _series_examples(seed, "mr-brain", counts[1], size, tumour_slices)
    us = [us_breast_image(sub_seed(seed, "us-breast", j), fit(US_SIZE, size)) for j in range(counts[2])]
    xr = []
    for j in range(counts[3]):
        s = sub_seed(seed, "xray-chest", j)
        ex = xray_chest_image(s, fit(XRAY_SIZE, size))
        ex.target = XRAY_TARGETS[s % len(XRAY_TARGETS)]
        xr.append(ex)
    groups = [iter(ct), iter(mr), iter(us), iter(xr)]
    return [next(groups[i]) for i in order]


__all__ = ["training_slices", "KINDS", "sub_seed", "fit"]
