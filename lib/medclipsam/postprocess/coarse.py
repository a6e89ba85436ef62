"""Saliency map -> coarse mask: binarization followed by a connected-component filter."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .binarize import BINARIZATION_METHODS
from .components import COMPONENT_FILTERS
from .config import PostprocessConfig

_RANGE_TOLERANCE = 1e-6


def _check_inputs(saliency: object, image_rgb: object) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(saliency, np.ndarray):
        raise InputError(f"saliency map must be a numpy array, got {type(saliency).__name__}")
    if not isinstance(image_rgb, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image_rgb).__name__}")
    if saliency.ndim != 2:
        raise InputError(f"saliency map must be 2-D (H, W), got shape {saliency.shape}")
    if saliency.size == 0:
        raise InputError(f"saliency map is empty (shape {saliency.shape}); expected H, W >= 1")
    if not (np.issubdtype(saliency.dtype, np.floating) or np.issubdtype(saliency.dtype, np.integer)):
        raise InputError(f"saliency map must hold real numbers in [0, 1], got dtype {saliency.dtype}")
    values = saliency.astype(np.float64)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise InputError(f"saliency map has {bad} NaN/inf values; expected finite values in [0, 1]")
    lo, hi = float(values.min()), float(values.max())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise InputError(
            f"saliency map values span [{lo:.4g}, {hi:.4g}]; expected a map normalised to [0, 1]"
        )
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise InputError(
            f"image must be an RGB uint8 array of shape (H, W, 3), got dtype {image_rgb.dtype} shape {image_rgb.shape}"
        )
    if image_rgb.shape[:2] != saliency.shape:
        raise InputError(
            f"image is {image_rgb.shape[0]}x{image_rgb.shape[1]} but the saliency map is "
            f"{saliency.shape[0]}x{saliency.shape[1]}; both must have the same H x W"
        )
    return np.clip(values, 0.0, 1.0), image_rgb


def make_coarse_mask(saliency: np.ndarray, image_rgb: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Turn a saliency map into the coarse mask used to derive SAM's visual prompts.

    Binarizes with ``cfg.method`` (see :data:`BINARIZATION_METHODS`), then keeps the connected
    components chosen by ``cfg.components`` (see :data:`COMPONENT_FILTERS`). Returns a bool HxW
    mask; it may be empty (target not found).
    """
    binarize = BINARIZATION_METHODS.get(cfg.method)
    keep = COMPONENT_FILTERS.get(cfg.components)
    s, image = _check_inputs(saliency, image_rgb)
    mask = np.asarray(binarize(s, image, cfg), dtype=bool)
    return np.asarray(keep(mask, s, cfg), dtype=bool)
