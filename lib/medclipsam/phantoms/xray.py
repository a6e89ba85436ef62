"""A frontal (PA) chest radiograph phantom, MONOCHROME2 (dense = bright), 8-bit as stored.

Built as a projected density: the torso (thicker in the middle, with neck and shoulders) is
bright-ish; the lungs subtract density (dark, air) and carry faint branching vascular markings
that fade towards the periphery; the mediastinum, heart (bulging to the patient's left) and the
spine are bright; faint posterior ribs arc over the lungs and the clavicles cross the apices; the
abdomen below the diaphragm domes (the right one higher) is bright, with a gastric air bubble
under the left dome. Displayed as a PA film is read: the patient's right on the image left, so
the ``left lung`` is at larger column indices. Masks: ``body``, ``left lung``, ``right lung``
(:meth:`PhantomSlice.mask` gives ``"lungs"`` as their union).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .base import PhantomSlice
from .captions import xray_caption
from .shapes import rotate2d, to_gray_rgb

KIND = "xray-chest"
KIND_CODE = 4


def xray_chest_image(seed: int, size: tuple[int, int] = (192, 192)) -> PhantomSlice:
    """The chest radiograph phantom of ``seed`` (rows × cols = ``size``); deterministic."""
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"an X-ray phantom needs at least 32×32 pixels, got {h}×{w}")
    rng = np.random.default_rng([int(seed), KIND_CODE])
    yy = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h * 2 - 1      # −1 top … 1 bottom
    xx = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w * 2 - 1      # −1 image left (patient right) … 1
    xx, yy = np.broadcast_arrays(xx, yy)
    # a slight rotation and shift of the patient on the detector
    x, y = rotate2d(xx, yy, rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04), rng.uniform(-3, 3))
    x, y = x.astype(np.float32), y.astype(np.float32)

    # torso with neck and shoulders
    wt = rng.uniform(0.78, 0.9)
    half_width = np.where(y < -0.75, 0.22 + (wt - 0.22) * np.clip((y + 0.95) / 0.2, 0, 1) ** 2, wt)
    half_width = np.where(y > 0.6, wt - 0.1 * (y - 0.6), half_width)
    torso = (np.abs(x) < half_width) & (y > -0.95)
    thickness = np.sqrt(np.clip(1.0 - (x / np.maximum(half_width, 1e-3)) ** 2, 0.0, 1.0)) * torso
    density = 1.1 * thickness

    # diaphragm domes (the right one — image left — higher)
    right_top = rng.uniform(0.28, 0.4)
    left_top = right_top + rng.uniform(0.04, 0.1)
    dome = np.where(x < 0, right_top + 0.35 * ((x + 0.42) / 0.4) ** 2, left_top + 0.35 * ((x - 0.42) / 0.4) ** 2)
    abdomen = torso & (y > dome)
    density += 0.45 * abdomen

    # mediastinum and heart
    med_half = 0.1 + 0.02 * (y + 1)
    heart_c, heart_size = rng.uniform(0.1, 0.16), rng.uniform(0.9, 1.1)
    hu, hv = rotate2d(x, y, heart_c, 0.22, -20.0)
    heart = ((hu / (0.3 * heart_size)) ** 2 + (hv / (0.24 * heart_size)) ** 2 <= 1.0) & (y < dome + 0.05)
    mediastinum = ((np.abs(x) < med_half) & (y > -0.9) & (y < dome)) | heart
    density += 0.45 * mediastinum
    density += 0.15 * ((np.abs(x) < 0.07) & torso)                      # spine

    # lungs: ellipses cut by the diaphragm and the mediastinum
    masks = {}
    lung_dark = np.zeros((h, w), dtype=np.float32)
    apex = rng.uniform(-0.72, -0.62)
    for name, sign in (("right lung", -1.0), ("left lung", 1.0)):
        cx = sign * rng.uniform(0.4, 0.46)
        ax = rng.uniform(0.28, 0.33)
        ay = (1.0 - apex) / 2 * rng.uniform(0.95, 1.05)
        cy = apex + ay
        q = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2
        lung = (q <= 1.0) & (y < dome - 0.02) & ~mediastinum & torso & (np.abs(x) < half_width - 0.05)
        masks[name] = lung
        lung_dark += np.sqrt(np.clip(1.0 - q, 0.0, 1.0)) * lung
    density -= 0.75 * lung_dark
    lung_any = masks["left lung"] | masks["right lung"]

    # vascular markings: ridges of smooth noise, denser towards the hila
    field = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 2.0 * h / 192)
    field /= float(field.std()) + 1e-6
    ridges = np.exp(-(field / 0.25) ** 2)
    hilum = np.clip(1.2 - np.hypot(np.abs(x) - 0.18, y - 0.05) / 0.6, 0.0, 1.0)
    density += 0.18 * ridges * hilum * lung_any

    # posterior ribs and clavicles (faint)
    ribs = np.zeros((h, w), dtype=bool)
    spacing = rng.uniform(0.1, 0.12)
    for i in range(10):
        y0 = apex + 0.02 + i * spacing
        curve = y0 + 0.35 * (np.abs(x) - 0.1) ** 2 - 0.05 * np.abs(x)
        ribs |= (np.abs(y - curve) < 0.02) & (np.abs(x) > 0.08) & (np.abs(x) < half_width - 0.02) & (y < dome)
    density += 0.12 * ribs * torso
    clav = (np.abs(y - (-0.68 + 0.12 * (np.abs(x) - 0.1) ** 2 - 0.05 * np.abs(x))) < 0.025) \
        & (np.abs(x) > 0.06) & (np.abs(x) < 0.55)
    density += 0.2 * clav * torso

    # gastric bubble under the left dome
    bubble = ((x - 0.4) / 0.12) ** 2 + ((y - (left_top + 0.12)) / 0.06) ** 2 <= 1.0
    density -= 0.35 * (bubble & abdomen)

    density = ndimage.gaussian_filter(density.astype(np.float32), 0.8 * h / 192)
    density += rng.normal(0.0, 0.015, density.shape).astype(np.float32)
    gamma = rng.uniform(0.8, 1.1)
    img = np.clip(0.05 + 0.46 * np.clip(density, 0, None), 0, 1) ** gamma
    gray = np.round(255 * np.clip(img, 0, 1)).astype(np.uint8)
    masks = {"body": torso, "left lung": masks["left lung"], "right lung": masks["right lung"]}
    caption = xray_caption(np.random.default_rng([int(seed), KIND_CODE, 0]),
                           view=str(rng.choice(["PA", "frontal", "posteroanterior"])))
    return PhantomSlice(rgb=to_gray_rgb(gray), masks=masks, caption=caption, modality="DX", kind=KIND,
                        target="lungs", window="as-stored")


__all__ = ["xray_chest_image", "KIND"]
