"""8-bit RGB renderings of 2D arrays: the one primitive every renderer (2D images, DICOM, volume
slices) ends in. It lives apart from :mod:`medclipsam.image` so that the window policy
(:mod:`medclipsam.volume.render`), which the image reader uses for DICOM files, does not import the
reader back."""

from __future__ import annotations

import numpy as np

from .errors import InputError


def to_rgb8(array: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Render a 2D gray or RGB(A) array as uint8 H×W×3."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise InputError(f"expected a 2D gray or RGB image, got an array of shape {a.shape}")
    if a.size == 0:
        raise InputError("the image is empty (0 pixels)")
    if a.dtype == np.uint8 and window is None:
        out = a
    else:
        f = a.astype(np.float64)
        if not np.isfinite(f).all():
            raise InputError("the image has NaN or infinite pixel values")
        lo, hi = window if window is not None else (np.percentile(f, 0.5), np.percentile(f, 99.5))
        if hi <= lo:
            lo, hi = float(f.min()), float(f.max())
        out = np.zeros(f.shape, np.uint8) if hi <= lo else (
            np.clip((f - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return np.ascontiguousarray(out)
