"""A contrast-enhanced CT phantom of the lower chest and upper abdomen (Hounsfield units), portal
venous phase: the liver and the blood pool enhance, so a hepatic lesion shows against the liver as
it does in the oncological CT a clinical researcher segments (on a non-contrast scan a 20–30 HU
liver lesion under 10–20 HU noise is hard to see for readers and models alike).

Drawn in patient space, normalised to the scanned box (x: patient left +, y: posterior +, z:
superior +; −1…1 across the field of view and the slice stack):

* air −1000 outside an elliptic body: a subcutaneous fat ring (−100) around soft tissue (40);
* two lungs (−800 ± texture: correlated noise and small vessels) on the upper slices: tapered at
  the apices (below the top slices, which show the thoracic inlet only) and resting on
  diaphragm domes, the right one higher; a heart (blood pool 150, cardiac notch in the left lung);
* the liver (105) under the right dome — its top overlaps the lung bases in z — and a stomach
  (fluid 10, gas −950) on the left, on the lower slices;
* the spine on every slice: vertebral body, neural arch and spinous process (450–650 by seed)
  around the spinal canal (15), posterior midline;
* one tumour: an ellipsoid in one lung (30–60 HU) or in the liver (45–70 hypodense or 150–165
  hyperdense: 35–60 HU of contrast), radius varying with the seed, on a few slices only.

Partial-volume blur (Gaussian, σ = 0.7 px in-plane) precedes Gaussian noise (σ 10–20 HU);
values are rounded to whole HU and clipped to the 12-bit range (−1024…3071) that
:meth:`~.base.PhantomSeries.write_dicom` stores. Geometry: 0.6–0.9 mm pixels, 2–5 mm slices;
seed % 6 == 2 is oblique (spun 10–20° about z and tilted 3–6°), seed % 6 == 5 is feet first
(ImageOrientationPatient −1,0,0,0,1,0: slices run superior → inferior, patient left on image
left); the other seeds are standard head-first axial (patient left = image right).
"""

from __future__ import annotations

import numpy as np

from .base import PhantomSeries
from .captions import ct_caption
from .shapes import (
    axial,
    axial_feet_first,
    blur_in_plane,
    ellipse_q,
    half_extents,
    make_geometry,
    oblique,
    patient_grid,
    rotate2d,
    smooth_noise,
)

KIND = "ct-chest"
KIND_CODE = 1
CT_HU = {"air": -1000.0, "fat": -100.0, "soft tissue": 40.0, "lung": -800.0, "liver": 105.0, "heart": 150.0,
         "canal": 15.0, "stomach": 10.0, "gas": -950.0}
BLUR_PX = 0.7
HU_RANGE = (-1024.0, 3071.0)


def _orientation(seed: int, rng: np.random.Generator):
    variant = seed % 6
    if variant == 2:
        return oblique(rng)
    if variant == 5:
        return axial_feet_first()
    return axial()


def ct_chest_series(seed: int, slices: int = 32, size: int = 128) -> PhantomSeries:
    """The CT phantom of ``seed`` (slices×size×size, HU); deterministic."""
    if slices < 4 or size < 16:
        raise ValueError(f"a CT phantom needs at least 4 slices of 16×16 pixels, got {slices} of {size}×{size}")
    rng = np.random.default_rng([int(seed), KIND_CODE])
    px = round(float(rng.uniform(0.6, 0.9)), 3)
    dz = float(rng.choice([2.0, 2.5, 3.0, 4.0, 5.0]))
    orient = _orientation(seed, rng)
    centre = (round(float(rng.uniform(-10, 10)), 1), round(float(rng.uniform(-10, 10)), 1),
              round(float(rng.uniform(-400, -100)), 1))
    geometry = make_geometry((slices, size, size), (px, px, dz), orient, centre)
    x, y, t = patient_grid(geometry, centre, half_extents(geometry, orient))

    # body (frame of the body ellipse: slightly off-centre and turned)
    a_b, b_b = rng.uniform(0.78, 0.9), rng.uniform(0.56, 0.68)
    ub, vb = rotate2d(x, y, rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(-6, 6))
    narrow = np.float32(1.0) - np.float32(0.1) * np.clip((t - 0.5) / 0.5, 0.0, 1.0)    # thoracic inlet
    q_body = (ub / (np.float32(a_b) * narrow)) ** 2 + (vb / (np.float32(b_b) * narrow)) ** 2
    fat = rng.uniform(0.05, 0.1)
    body = q_body <= 1.0
    inner = q_body <= (1.0 - fat) ** 2

    # spine: vertebral body, neural arch around the canal, spinous process
    vc, r_v, r_c = 0.38 * b_b, 0.18 * b_b, 0.06 * b_b
    cc = vc + r_v + r_c + 0.01
    d_body = ub ** 2 + (vb - np.float32(vc)) ** 2
    d_canal = ub ** 2 + (vb - np.float32(cc)) ** 2
    canal = d_canal <= r_c ** 2
    arch = (d_canal <= (r_c + 0.05 * b_b) ** 2) & ~canal
    spinous = (np.abs(ub) < 0.03) & (vb > cc) & (vb < cc + 0.2 * b_b)
    spine = ((d_body <= r_v ** 2) | arch | spinous) & inner
    canal &= inner
    spine_block = (np.abs(ub) < r_v + 0.03) & (vb > vc - r_v - 0.03)

    # lungs on diaphragm domes (the right one higher), tapered at the apices
    base_r = rng.uniform(-0.35, -0.2)
    dome = rng.uniform(0.2, 0.3)
    lung_size = rng.uniform(0.9, 1.1)
    lung_params = {}
    lungs = {}
    for name, sign, base in (("right lung", -1.0, base_r), ("left lung", 1.0, base_r - rng.uniform(0.03, 0.1))):
        apex = rng.uniform(0.55, 0.75)
        cx, cy = sign * 0.42 * a_b * rng.uniform(0.95, 1.05), -0.04 * b_b
        ax, ay = 0.27 * a_b * lung_size * rng.uniform(0.93, 1.07), 0.58 * b_b * lung_size * rng.uniform(0.93, 1.07)
        taper = np.sqrt(np.clip((np.float32(apex) - t) / np.float32(0.35), 1e-3, 1.0))
        du, dv = ub - np.float32(cx), vb - np.float32(cy)
        q = (du / (np.float32(ax) * taper)) ** 2 + (dv / (np.float32(ay) * taper)) ** 2
        # the dome peaks antero-medially: the lowest lung (costophrenic recess) is postero-lateral
        q_dome = ((du + np.float32(sign * 0.2 * ax)) / np.float32(1.25 * ax)) ** 2 \
            + ((dv + np.float32(0.3 * ay)) / np.float32(1.25 * ay)) ** 2
        floor = np.float32(base) + np.float32(dome) * (1.0 - np.clip(q_dome, 0.0, 1.0))
        lungs[name] = (q <= 1.0) & (t > floor) & (t < apex) & inner & ~spine_block
        lung_params[name] = (cx, cy, ax, ay, base, apex, q_dome)

    # liver under the right dome (its top overlaps the lung bases in z), tapering downwards
    q_r = lung_params["right lung"][6]
    liver_top = np.float32(base_r - 0.03) + np.float32(dome) * (1.0 - np.clip(q_r, 0.0, 1.0))
    l_size = rng.uniform(0.9, 1.1)
    lcx, lcy, lax, lay, lang = -0.33 * a_b, -0.02 * b_b, 0.42 * a_b * l_size, 0.52 * b_b * l_size, rng.uniform(-15, 5)
    lscale = np.clip(0.6 + 0.4 * (t + 1.0) / 0.6, 0.6, 1.0)
    lu, lv = rotate2d(ub, vb, lcx, lcy, lang)
    liver = ((lu / (np.float32(lax) * lscale)) ** 2 + (lv / (np.float32(lay) * lscale)) ** 2 <= 1.0) \
        & (t < liver_top) & inner & ~spine_block

    # stomach under the left dome: fluid with an anterior gas cap
    base_l = lung_params["left lung"][4]
    q_l = lung_params["left lung"][6]
    q_st = ellipse_q(ub, vb, 0.38 * a_b, -0.12 * b_b, 0.2 * a_b, 0.24 * b_b)
    stomach = (q_st <= 1.0) & (t > -0.85) & (t < np.float32(base_l - 0.04) + np.float32(0.6 * dome)
                                              * (1.0 - np.clip(q_l, 0.0, 1.0))) & inner & ~liver
    gas = stomach & (vb < np.float32(-0.12 * b_b - 0.1 * b_b))

    # heart above the right dome, cutting the cardiac notch into the left lung
    hc = base_r + dome + 0.22
    hsize = np.sqrt(np.clip(1.0 - ((t - np.float32(hc)) / np.float32(0.26)) ** 2, 1e-4, 1.0))
    hu_, hv_ = rotate2d(ub, vb, 0.1 * a_b, -0.28 * b_b, 25.0)
    hs = rng.uniform(0.9, 1.1)
    heart = ((hu_ / (np.float32(0.3 * a_b * hs) * hsize)) ** 2 + (hv_ / (np.float32(0.3 * b_b * hs) * hsize)) ** 2
             <= 1.0) & (np.abs(t - np.float32(hc)) < 0.26) & inner & ~liver & ~spine_block
    for name in lungs:
        lungs[name] &= ~heart

    # tumour: an ellipsoid inside one lung or the liver
    host = str(rng.choice(["right lung", "left lung", "liver"]))
    tumour = np.zeros_like(body)
    for _attempt in range(50):
        r = rng.uniform(0.12, 0.2)          # 8–13 px at 128 px: a 1–2 cm mass at the phantoms' scale
        rt = rng.uniform(0.12, 0.25)
        e = rng.uniform(0.75, 1.25)
        ang = rng.uniform(0.0, 180.0)
        if host == "liver":
            tcx, tcy = lcx + rng.uniform(-0.35, 0.35) * lax, lcy + rng.uniform(-0.35, 0.35) * lay
            tcz = rng.uniform(-0.65, base_r - 0.05)
            host_mask = liver
        else:
            cx, cy, ax, ay, base, apex, _q = lung_params[host]
            tcx, tcy = cx + rng.uniform(-0.35, 0.35) * ax, cy + rng.uniform(-0.35, 0.35) * ay
            tcz = rng.uniform(base + dome + 0.05, apex - 0.25)
            host_mask = lungs[host]
        tu, tv = rotate2d(ub, vb, tcx, tcy, ang)
        ell = ((tu / np.float32(r * e)) ** 2 + (tv / np.float32(r / e)) ** 2
               + ((t - np.float32(tcz)) / np.float32(rt)) ** 2)
        tumour = (ell <= 1.0) & host_mask
        per_slice = tumour.reshape(slices, -1).any(axis=1)
        largest = int(tumour.reshape(slices, -1).sum(axis=1).max())
        if per_slice.any() and not per_slice.all() and largest >= 0.5 * np.pi * (r * 0.5 * size) ** 2:
            break
    if host == "liver":
        tumour_hu = rng.uniform(45.0, 70.0) if rng.random() < 0.5 else rng.uniform(150.0, 165.0)
    else:
        tumour_hu = rng.uniform(30.0, 60.0)
    spine_hu = rng.uniform(450.0, 650.0)
    noise_hu = rng.uniform(10.0, 20.0)

    # values
    texture = smooth_noise(rng, (slices, size, size), (0.5, 1.2, 1.2))
    vessels = smooth_noise(rng, (slices, size, size), (0.6, 0.9, 0.9)) > 2.1
    v = np.full((slices, size, size), CT_HU["air"], dtype=np.float32)
    v[body] = CT_HU["fat"]
    v[inner] = CT_HU["soft tissue"]
    v[heart] = CT_HU["heart"]
    v[stomach] = CT_HU["stomach"]
    v[gas] = CT_HU["gas"]
    v[liver] = CT_HU["liver"] + 5.0 * texture[liver]
    lung_any = lungs["left lung"] | lungs["right lung"]
    if lung_any.any():
        parenchyma = 22.0 * texture[lung_any] + 650.0 * vessels[lung_any]
        v[lung_any] = CT_HU["lung"] + parenchyma - parenchyma.mean()
    v[canal] = CT_HU["canal"]
    v[spine] = spine_hu + 25.0 * texture[spine]
    v[tumour] = tumour_hu
    v = blur_in_plane(v, BLUR_PX)
    v += np.float32(noise_hu) * rng.standard_normal(v.shape, dtype=np.float32)
    v = np.clip(np.round(v), *HU_RANGE).astype(np.float32)

    labels = {"body": body, "left lung": lungs["left lung"], "right lung": lungs["right lung"], "liver": liver,
              "spine": spine, "tumor": tumour}
    present = {name: m.reshape(slices, -1).any(axis=1) for name, m in labels.items()}

    def captioner(k: int, hidden: tuple[str, ...] = ()) -> str:
        return ct_caption(np.random.default_rng([int(seed), KIND_CODE, k]), orient.plane,
                          left_lung=bool(present["left lung"][k]), right_lung=bool(present["right lung"][k]),
                          liver=bool(present["liver"][k]), tumour=bool(present["tumor"][k]), tumour_host=host,
                          hidden=hidden)

    captions = [captioner(k) for k in range(slices)]
    design = dict(CT_HU)
    design.update({"left lung": CT_HU["lung"], "right lung": CT_HU["lung"], "spine": float(spine_hu),
                   "tumor": float(tumour_hu), "noise": float(noise_hu)})
    return PhantomSeries(values=v, labels=labels, geometry=geometry, modality="CT", kind=KIND, captions=captions,
                         seed=int(seed), plane=orient.plane, patient_position=orient.patient_position,
                         design=design, description=f"tumour in the {host}",
                         hosts={"tumor": host, "liver": "soft tissue"}, captioner=captioner)


__all__ = ["ct_chest_series", "CT_HU", "KIND"]
