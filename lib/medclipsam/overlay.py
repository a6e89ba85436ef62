"""Overlay panels a person can look at: what each stage of the pipeline saw and produced.

One PNG per image, three panels side by side:
1. the image with the saliency map as a heat overlay;
2. the coarse mask (cyan) with the visual prompts (yellow boxes, green/red points);
3. the final mask (red fill, outlined) over the image.
A caption bar states the prompt, whether the target was found, and — with random or demo
weights — that the result is not meaningful / not for clinical use.
"""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage


def _heat(values: np.ndarray) -> np.ndarray:
    """[0,1] → RGB heat colours (black-red-yellow-white), monotonic in luminance."""
    v = np.clip(values, 0, 1)[..., None]
    r = np.clip(3 * v, 0, 1)
    g = np.clip(3 * v - 1, 0, 1)
    b = np.clip(3 * v - 2, 0, 1)
    return (np.concatenate([r, g, b], axis=-1) * 255).astype(np.uint8)


def _blend(rgb: np.ndarray, colour: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    a = alpha[..., None] if isinstance(alpha, np.ndarray) else alpha
    return (rgb.astype(np.float32) * (1 - a) + colour.astype(np.float32) * a).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, iterations=max(1, min(mask.shape) // 256))


def render_overlay(rgb: np.ndarray, saliency: np.ndarray, coarse: np.ndarray, mask: np.ndarray,
                   boxes: np.ndarray, points: np.ndarray, point_labels: np.ndarray, caption: str) -> np.ndarray:
    h, w = rgb.shape[:2]
    p1 = _blend(rgb, _heat(saliency), 0.5)

    p2 = rgb.copy()
    p2[coarse] = _blend(rgb[coarse], np.array([0, 200, 255]), 0.45)
    img2 = Image.fromarray(p2)
    d2 = ImageDraw.Draw(img2)
    lw = max(1, min(h, w) // 160)
    for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4):
        d2.rectangle([float(x0), float(y0), float(x1), float(y1)], outline=(255, 230, 0), width=lw)
    r = max(2, min(h, w) // 100)
    for (x, y), lab in zip(np.asarray(points).reshape(-1, 2), np.asarray(point_labels).reshape(-1)):
        d2.ellipse([x - r, y - r, x + r, y + r], fill=(0, 255, 0) if lab == 1 else (255, 0, 0))
    p2 = np.asarray(img2)

    p3 = rgb.copy()
    p3[mask] = _blend(rgb[mask], np.array([255, 40, 40]), 0.45)
    p3[_outline(mask)] = (255, 255, 0)

    gap = np.full((h, max(2, w // 100), 3), 255, np.uint8)
    body = np.concatenate([p1, gap, p2, gap, p3], axis=1)
    width_chars = max(20, body.shape[1] // 6)
    caption = "\n".join(textwrap.fill(line, width_chars) for line in caption.splitlines())
    bar_h = 14 * (caption.count("\n") + 1) + 6
    canvas = Image.new("RGB", (body.shape[1], body.shape[0] + bar_h), (0, 0, 0))
    canvas.paste(Image.fromarray(body), (0, bar_h))
    ImageDraw.Draw(canvas).multiline_text((4, 3), caption, fill=(255, 255, 255), spacing=2)
    return np.asarray(canvas)
