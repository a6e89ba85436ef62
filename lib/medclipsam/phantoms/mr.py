"""A brain MR phantom (arbitrary units, 16-bit unsigned range).

Drawn in patient space in "head units" (the head ellipsoid has radius 1): scalp, a dark skull
ring, a thin CSF layer and the brain — grey matter around white matter with a noisy
(gyral) boundary, the interhemispheric fissure, two lateral ventricles — and one tumour in one
hemisphere on a few slices only, with surrounding oedema in the white matter. The seed picks the
contrast:

==========  =====  =====  =====  ====  ====  ======================  =======
contrast    scalp  skull  CSF    GM    WM    tumour                  oedema
==========  =====  =====  =====  ====  ====  ======================  =======
T2          450    40     1500   950   700   1300 (bright)           1050
T1C         1050   40     220    560   820   rim 1350 / core 380     600
==========  =====  =====  =====  ====  ====  ======================  =======

with a smooth multiplicative bias field (±12 %), in-plane partial-volume blur (σ 0.6 px) and
Rician noise (σ 10–20); values are rounded to whole numbers ≥ 0. Geometry: 0.85–1.15 mm pixels,
4–6 mm slices; seed % 6 == 2 is an oblique axial stack (tilted 10–20° about x, like an AC–PC
aligned acquisition, and spun 2–6° about z), seed % 6 == 5 a coronal stack; others are axial.
Labels: ``body`` (the head), ``brain`` (everything inside the CSF layer: parenchyma,
ventricles, tumour) and ``tumor``.
"""

from __future__ import annotations

import numpy as np

from .base import PhantomSeries
from .captions import mr_caption
from .shapes import (
    axial,
    blur_in_plane,
    coronal,
    half_extents,
    make_geometry,
    oblique,
    patient_grid,
    rotate2d,
    smooth_noise,
)

KIND = "mr-brain"
KIND_CODE = 2
MR_VALUES = {
    "T2": {"background": 0.0, "scalp": 450.0, "skull": 40.0, "csf": 1500.0, "grey matter": 950.0,
           "white matter": 700.0, "tumor": 1300.0, "oedema": 1050.0},
    "T1C": {"background": 0.0, "scalp": 1050.0, "skull": 40.0, "csf": 220.0, "grey matter": 560.0,
            "white matter": 820.0, "tumor": 1350.0, "tumour core": 380.0, "oedema": 600.0},
}
BRAIN_RADIUS, CSF_RADIUS, SKULL_RADIUS = 0.83, 0.86, 0.93


def _orientation(seed: int, rng: np.random.Generator):
    variant = seed % 6
    if variant == 2:
        return oblique(rng, spin=(2.0, 6.0), tilt=(10.0, 20.0))
    if variant == 5:
        return coronal()
    return axial()


def mr_brain_series(seed: int, slices: int = 24, size: int = 128) -> PhantomSeries:
    """The brain MR phantom of ``seed`` (slices×size×size); deterministic."""
    if slices < 4 or size < 16:
        raise ValueError(f"an MR phantom needs at least 4 slices of 16×16 pixels, got {slices} of {size}×{size}")
    rng = np.random.default_rng([int(seed), KIND_CODE])
    px = round(float(rng.uniform(0.85, 1.15)), 3)
    dz = float(rng.choice([4.0, 5.0, 5.5, 6.0]))
    orient = _orientation(seed, rng)
    centre = (round(float(rng.uniform(-5, 5)), 1), round(float(rng.uniform(-15, 5)), 1),
              round(float(rng.uniform(20, 60)), 1))
    geometry = make_geometry((slices, size, size), (px, px, dz), orient, centre)
    x, y, z = patient_grid(geometry, centre, half_extents(geometry, orient))
    weighting = "T1C" if rng.random() < 0.5 else "T2"
    values = MR_VALUES[weighting]

    # head units: the head ellipsoid has radius 1
    ah, bh = rng.uniform(0.62, 0.72), rng.uniform(0.78, 0.88)
    if orient.name == "coronal":
        bh, ch, zc = bh * 1.35, rng.uniform(0.8, 0.88), rng.uniform(-0.08, 0.0)
    else:
        ch, zc = rng.uniform(1.35, 1.5), rng.uniform(-0.4, -0.3)
    hu, hv = rotate2d(x, y, 0.0, 0.0, rng.uniform(-4, 4))
    X, Y, Z = hu / np.float32(ah), hv / np.float32(bh), (z - np.float32(zc)) / np.float32(ch)
    rho = np.sqrt(X ** 2 + Y ** 2 + Z ** 2)
    head = rho <= 1.0
    skull = (rho > CSF_RADIUS) & (rho <= SKULL_RADIUS)
    intracranial = rho <= CSF_RADIUS
    brain = rho <= BRAIN_RADIUS

    shape = (slices, size, size)
    gyri = smooth_noise(rng, shape, (0.8, 2.5, 2.5))
    white = brain & (rho < BRAIN_RADIUS * (0.8 + 0.07 * gyri))
    fissure = brain & (np.abs(X) < 0.015) & (np.abs(Y) < 0.8) & (Z > -0.3)

    # lateral ventricles: a butterfly of two tilted ellipsoids
    vs = rng.uniform(0.8, 1.3)
    ventricles = np.zeros(shape, dtype=bool)
    for sign in (-1.0, 1.0):
        vu, vv = rotate2d(X, Y, sign * 0.1, -0.05, sign * -12.0)
        ventricles |= (vu / np.float32(0.065 * vs)) ** 2 + (vv / np.float32(0.3)) ** 2 \
            + ((Z - np.float32(0.1)) / np.float32(0.16 * vs)) ** 2 <= 1.0
    ventricles &= brain

    # tumour in one hemisphere, with oedema around it
    side = "left" if rng.random() < 0.5 else "right"          # patient left = +x
    sign = 1.0 if side == "left" else -1.0
    tumour = np.zeros(shape, dtype=bool)
    for _attempt in range(50):
        r = rng.uniform(0.1, 0.2)
        rz = r * rng.uniform(0.8, 1.2)
        e = rng.uniform(0.8, 1.25)
        tx, ty, tz = sign * rng.uniform(0.2, 0.42), rng.uniform(-0.4, 0.4), rng.uniform(-0.15, 0.45)
        reach = float(np.sqrt(tx ** 2 + ty ** 2 + tz ** 2))
        if reach + r > 0.78:                       # keep it inside the brain: pull the centre inwards
            tx, ty, tz = (c * (0.78 - r) / reach for c in (tx, ty, tz))
        ell = ((X - np.float32(tx)) / np.float32(r * e)) ** 2 + ((Y - np.float32(ty)) / np.float32(r / e)) ** 2 \
            + ((Z - np.float32(tz)) / np.float32(rz)) ** 2
        tumour = (ell <= 1.0) & brain
        per_slice = tumour.reshape(slices, -1).any(axis=1)
        if per_slice.any() and not per_slice.all() and tumour.sum() >= 12:
            break
    oedema = (ell <= 1.7 ** 2) & white & ~tumour

    # values
    texture = smooth_noise(rng, shape, (0.5, 1.5, 1.5))
    v = np.zeros(shape, dtype=np.float32)
    v[head] = values["scalp"]
    v[skull] = values["skull"]
    v[intracranial] = values["csf"]
    v[brain] = values["grey matter"]
    v[white] = values["white matter"]
    v[oedema] = values["oedema"]
    v[fissure | ventricles] = values["csf"]
    v[brain] *= 1.0 + 0.03 * texture[brain]
    if weighting == "T1C":
        rim = tumour & (ell > 0.62 ** 2)
        v[tumour] = values["tumour core"] * (1.0 + 0.05 * texture[tumour])
        v[rim] = values["tumor"] * (1.0 + 0.05 * texture[rim])
    else:
        v[tumour] = values["tumor"] * (1.0 + 0.05 * texture[tumour])
    g = rng.normal(size=3)
    g /= np.linalg.norm(g)
    v *= 1.0 + 0.12 * np.clip(g[0] * X + g[1] * Y + g[2] * Z, -1.0, 1.0)
    v = blur_in_plane(v, 0.6)
    noise = np.float32(rng.uniform(10.0, 20.0))
    n1 = rng.standard_normal(shape, dtype=np.float32)
    n2 = rng.standard_normal(shape, dtype=np.float32)
    v = np.sqrt((v + noise * n1) ** 2 + (noise * n2) ** 2)
    v = np.clip(np.round(v), 0, 65535).astype(np.float32)

    labels = {"body": head, "brain": brain, "tumor": tumour}
    present_t = tumour.reshape(slices, -1).any(axis=1)
    present_v = ventricles.reshape(slices, -1).any(axis=1)
    captions = [mr_caption(np.random.default_rng([int(seed), KIND_CODE, k]), orient.plane, weighting,
                           ventricles=bool(present_v[k]), tumour=bool(present_t[k]), tumour_side=side,
                           enhancing=weighting == "T1C") for k in range(slices)]
    design = dict(values)
    design["noise"] = float(noise)
    description = {"T2": "T2-weighted", "T1C": "contrast-enhanced T1-weighted"}[weighting]
    return PhantomSeries(values=v, labels=labels, geometry=geometry, modality="MR", kind=KIND, captions=captions,
                         seed=int(seed), plane=orient.plane, patient_position=orient.patient_position,
                         design=design, description=f"{description}, tumour in the {side} hemisphere")


__all__ = ["mr_brain_series", "MR_VALUES", "KIND"]
