"""A B-mode breast ultrasound phantom (linear probe, 8-bit as stored).

Depth runs down the rows. An echogenicity map of the breast layers — bright skin line,
hypoechoic subcutaneous fat with bright Cooper's ligaments, heterogeneous echogenic
fibroglandular tissue, retromammary fat, striated pectoralis muscle — holds one lesion: dark
(anechoic cyst-like, or hypoechoic), either oval and circumscribed with posterior acoustic
**enhancement** or irregular/taller-than-wide with posterior acoustic **shadowing**, softly
edged laterally. The map is multiplied by fully developed speckle (the magnitude of smoothed
complex Gaussian noise: Rayleigh statistics, coarser laterally than axially), attenuated with
depth and partly compensated (time-gain), log-compressed over a 40–50 dB dynamic range and
stored as uint8. The truth is ``{"lesion": mask}``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .base import PhantomSlice
from .captions import us_caption
from .shapes import to_gray_rgb

KIND = "us-breast"
KIND_CODE = 3


def us_breast_image(seed: int, size: tuple[int, int] = (160, 200)) -> PhantomSlice:
    """The breast ultrasound phantom of ``seed`` (rows × cols = ``size``); deterministic."""
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"an ultrasound phantom needs at least 32×32 pixels, got {h}×{w}")
    rng = np.random.default_rng([int(seed), KIND_CODE])
    d = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h             # depth 0…1
    x = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w             # lateral 0…1
    d2, x2 = np.broadcast_arrays(d, x)
    scale = h / 160.0                                                    # pixel sizes relative to the default

    def wave(base: float, amp: float, freq: float) -> np.ndarray:
        return base + amp * np.sin(2 * np.pi * (freq * x + rng.random())) + 0.5 * amp * np.sin(
            2 * np.pi * (2.3 * freq * x + rng.random()))

    skin = rng.uniform(0.025, 0.04)
    fat_end = wave(rng.uniform(0.18, 0.26), 0.03, rng.uniform(0.8, 1.6))
    gland_end = wave(rng.uniform(0.66, 0.74), 0.03, rng.uniform(0.6, 1.2))
    muscle = wave(rng.uniform(0.8, 0.86), 0.015, rng.uniform(0.3, 0.7))
    e = np.full((h, w), 0.3, dtype=np.float32)                          # fat
    gland = (d > fat_end) & (d < gland_end)
    hetero = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), (3 * scale, 6 * scale))
    hetero /= float(np.abs(hetero).max()) + 1e-6
    e[gland] = (0.75 + 0.25 * hetero)[gland]
    for _ in range(int(rng.integers(2, 5))):                             # Cooper's ligaments
        arc = wave(rng.uniform(0.07, 0.2), 0.04, rng.uniform(0.5, 1.5))
        e[(np.abs(d - arc) < 0.006) & (d < fat_end)] = 0.95
    pect = d > muscle
    fibres = 0.5 + 0.15 * np.sin(2 * np.pi * (d * 35.0 + x * rng.uniform(4, 10)))
    e[pect] = fibres[pect]
    e[d2 < skin] = 1.0
    e[(d2 >= skin) & (d2 < skin + 0.008)] = 0.15

    # the lesion
    malignant = bool(rng.random() < 0.5)
    anechoic = (not malignant) and bool(rng.random() < 0.5)
    cx, cd = rng.uniform(0.3, 0.7), rng.uniform(0.38, 0.55)
    if malignant:                                  # taller than wide, irregular margin
        rx, rd = rng.uniform(0.07, 0.12), rng.uniform(0.08, 0.13)
    else:                                          # wider than tall, smooth
        rx, rd = rng.uniform(0.09, 0.16), rng.uniform(0.05, 0.09)
    rx *= h / w                                    # rx was drawn in depth units: keep the lesion's aspect
    ang = np.arctan2((d2 - cd) / rd, (x2 - cx) / rx)
    radius = np.ones_like(ang)
    if malignant:
        for k in (3, 5, 7, 11):
            radius += rng.uniform(0.03, 0.09) * np.sin(k * ang + rng.uniform(0, 2 * np.pi))
    q = np.sqrt(((x2 - cx) / rx) ** 2 + ((d2 - cd) / rd) ** 2)
    lesion = q <= radius
    inner = 0.04 if anechoic else rng.uniform(0.1, 0.18)
    e[lesion] = inner
    if malignant and rng.random() < 0.5:          # echogenic halo
        halo = (q > radius) & (q <= radius + 0.15)
        e[halo] = np.maximum(e[halo], 0.9)

    # posterior acoustic shadowing (malignant) or enhancement (cyst-like, benign)
    below = np.maximum.accumulate(lesion, axis=0) & ~lesion
    column = ndimage.gaussian_filter(below.astype(np.float32), (0.5, 2.5 * scale))
    gain = rng.uniform(0.3, 0.45) if malignant else rng.uniform(1.5, 1.9)
    e *= 1.0 + (gain - 1.0) * column

    # speckle, attenuation with partial time-gain compensation, log compression
    n = rng.standard_normal((2, h, w)).astype(np.float32)
    n = ndimage.gaussian_filter(n, (0, 0.8 * scale, 1.8 * scale))
    speckle = np.hypot(n[0], n[1])
    speckle /= float(speckle.mean())
    alpha = rng.uniform(1.0, 1.8)
    intensity = e * speckle * np.exp(-alpha * 0.5 * d)
    intensity /= float(np.percentile(intensity, 99.5))
    dynamic_range = rng.uniform(40.0, 50.0)
    db = 20.0 * np.log10(np.maximum(intensity, 1e-6))
    gray = np.clip(255.0 * (1.0 + db / dynamic_range), 0, 255)
    gray = np.round(gray).astype(np.uint8)

    caption = us_caption(np.random.default_rng([int(seed), KIND_CODE, 0]), shadowing=malignant,
                         irregular=malignant, anechoic=anechoic)
    return PhantomSlice(rgb=to_gray_rgb(gray), masks={"lesion": lesion}, caption=caption, modality="US",
                        kind=KIND, target="lesion", window="as-stored")


__all__ = ["us_breast_image", "KIND"]
