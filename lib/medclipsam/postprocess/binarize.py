"""Binarization of a saliency map into a (not yet filtered) coarse mask.

Every method has the signature ``(saliency, image_rgb, cfg) -> bool mask`` where ``saliency``
is a float HxW map in [0, 1], ``image_rgb`` the uint8 HxWx3 image and ``cfg`` a
:class:`~medclipsam.postprocess.config.PostprocessConfig`. Methods are looked up by name in
:data:`BINARIZATION_METHODS`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import ConfigError
from ..registry import Registry
from .config import PostprocessConfig

BinarizationMethod = Callable[[np.ndarray, np.ndarray, PostprocessConfig], np.ndarray]

BINARIZATION_METHODS: Registry[BinarizationMethod] = Registry("post-processing method")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def crf_unary_energies(saliency: np.ndarray, tau: float, eps: float) -> np.ndarray:
    """Unary energies (2, H*W) of the dense CRF: row 0 background, row 1 foreground.

    ``E0 = -log(1 - s + eps) / (tau * sigmoid(1 - s))`` and
    ``E1 = -log(s + eps) / (tau * sigmoid(s))`` for the saliency map ``s``.
    """
    s = np.asarray(saliency, dtype=np.float64).ravel()
    background = -np.log(1.0 - s + eps) / (tau * _sigmoid(1.0 - s))
    foreground = -np.log(s + eps) / (tau * _sigmoid(s))
    return np.ascontiguousarray(np.stack([background, foreground]), dtype=np.float32)


@BINARIZATION_METHODS.register("crf")
def crf_mask(saliency: np.ndarray, image_rgb: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Dense CRF on the saliency map (unary) and the image (Gaussian + bilateral pairwise)."""
    from pydensecrf import densecrf

    height, width = saliency.shape
    params = cfg.crf
    crf = densecrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(crf_unary_energies(saliency, params.tau, params.eps))
    crf.addPairwiseGaussian(sxy=float(params.gaussian_sxy), compat=float(params.gaussian_compat))
    crf.addPairwiseBilateral(
        sxy=float(params.bilateral_sxy),
        srgb=float(params.bilateral_srgb),
        rgbim=np.ascontiguousarray(image_rgb, dtype=np.uint8),
        compat=float(params.bilateral_compat),
    )
    q = np.asarray(crf.inference(params.iterations), dtype=np.float32).reshape(2, height, width)
    return np.argmax(q, axis=0) == 1


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the histogram split over [min, max] maximising between-class variance.

    Returns the bin edge between the two classes, so ``values > threshold`` is the upper class.
    A constant input returns its value (nothing lies above it).
    """
    if bins < 2:
        raise ConfigError(f"Otsu needs at least 2 histogram bins, got {bins}")
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ConfigError("Otsu's threshold needs at least one value")
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    hist = hist.astype(np.float64)
    centers = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)[:-1]
    w1 = hist.sum() - w0
    m0 = np.cumsum(hist * centers)[:-1]
    m1 = float((hist * centers).sum()) - m0
    valid = (w0 > 0) & (w1 > 0)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=valid)
    mu1 = np.divide(m1, w1, out=np.zeros_like(m1), where=valid)
    between = np.where(valid, w0 * w1 * (mu0 - mu1) ** 2, -1.0)
    split = int(np.argmax(between))
    return float(edges[split + 1])


def two_means_threshold(values: np.ndarray, max_iterations: int = 1000) -> float:
    """Deterministic 1-D 2-means (Lloyd) initialised at min and max.

    Iterates until the assignment stops changing; returns the midpoint of the two centroids,
    so ``values > threshold`` is the upper cluster. A constant input returns its value.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ConfigError("2-means threshold needs at least one value")
    low, high = float(v.min()), float(v.max())
    if low == high:
        return low
    upper = v > 0.5 * (low + high)
    for _ in range(max_iterations):
        # Both clusters stay non-empty: min <= low < midpoint < high <= max.
        low, high = float(v[~upper].mean()), float(v[upper].mean())
        new_upper = v > 0.5 * (low + high)
        if np.array_equal(new_upper, upper):
            break
        upper = new_upper
    return 0.5 * (low + high)


def _above(saliency: np.ndarray, threshold: float) -> np.ndarray:
    if float(saliency.max()) == float(saliency.min()):
        return np.zeros(saliency.shape, dtype=bool)
    return saliency > threshold


@BINARIZATION_METHODS.register("otsu")
def otsu_mask(saliency: np.ndarray, image_rgb: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Foreground = saliency above Otsu's threshold; a constant saliency map gives no foreground."""
    return _above(saliency, otsu_threshold(saliency))


@BINARIZATION_METHODS.register("kmeans")
def kmeans_mask(saliency: np.ndarray, image_rgb: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Foreground = the upper of two 1-D k-means clusters; a constant map gives no foreground."""
    return _above(saliency, two_means_threshold(saliency))


@BINARIZATION_METHODS.register("threshold")
def threshold_mask(saliency: np.ndarray, image_rgb: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Foreground = saliency strictly above the fixed ``cfg.threshold``."""
    return np.asarray(saliency) > cfg.threshold
