"""Write the small 2D sample set under sample-data/ (deterministic; re-run to regenerate).

Three synthetic images a newcomer can segment right after installing: an ultrasound-like image
with a dark lesion in speckle, an X-ray-like image with two lungs, and a non-square MR-like slice
with a bright tumour; each with its ground-truth mask (0/255 PNG, same file name) in masks/.
Synthetic data, not from any patient. The phantom world of the later issue replaces this set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

HERE = Path(__file__).resolve().parent


def _ellipse(shape, cy, cx, ry, rx):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1


def ultrasound(rng):
    shape = (256, 320)
    img = ndimage.gaussian_filter(rng.gamma(2.0, 45.0, shape), 1.2) + 40
    lesion = _ellipse(shape, 130, 170, 38, 55)
    img[lesion] *= 0.25
    img = ndimage.gaussian_filter(img, 1.0)
    return np.clip(img, 0, 255).astype(np.uint8), lesion


def xray(rng):
    shape = (288, 288)
    img = 170 + ndimage.gaussian_filter(rng.normal(0, 12, shape), 3)
    lungs = _ellipse(shape, 140, 92, 95, 52) | _ellipse(shape, 140, 196, 95, 52)
    img[lungs] -= 110
    img = ndimage.gaussian_filter(img, 2.0)
    return np.clip(img, 0, 255).astype(np.uint8), lungs


def mr_slice(rng):
    shape = (240, 200)
    brain = _ellipse(shape, 120, 100, 105, 85)
    img = np.where(brain, 600.0, 20.0) + rng.normal(0, 25, shape)
    tumour = _ellipse(shape, 90, 130, 22, 26)
    img[tumour] = 1500 + rng.normal(0, 40, tumour.sum())
    return np.clip(ndimage.gaussian_filter(img, 1.0), 0, 4095).astype(np.uint16), tumour


def main() -> None:
    rng = np.random.default_rng(2024)
    (HERE / "images").mkdir(exist_ok=True)
    (HERE / "masks").mkdir(exist_ok=True)
    for name, (img, mask) in {"us_breast_lesion": ultrasound(rng), "xray_lungs": xray(rng),
                              "mr_brain_tumour": mr_slice(rng)}.items():
        Image.fromarray(img).save(HERE / "images" / f"{name}.png", optimize=True)
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(HERE / "masks" / f"{name}.png", optimize=True)
        print(f"{name}: {img.shape} {img.dtype}")


if __name__ == "__main__":
    main()
