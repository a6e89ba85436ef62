"""Connected components of a coarse mask and the filters that choose which to keep.

A filter has the signature ``(mask, saliency, cfg) -> bool mask`` and is looked up by name in
:data:`COMPONENT_FILTERS`. Every filter first drops components smaller than ``cfg.min_size``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from ..errors import ConfigError
from ..registry import Registry
from .config import CONNECTIVITIES, PostprocessConfig

ComponentFilter = Callable[[np.ndarray, np.ndarray, PostprocessConfig], np.ndarray]

COMPONENT_FILTERS: Registry[ComponentFilter] = Registry("component filter")


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in CONNECTIVITIES:
        raise ConfigError(f"connectivity must be 4 or 8, got {connectivity!r}")
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def label_components(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Label the connected components of a 2-D mask: (labels 0..count, count); 0 is background.

    8-connectivity uses the full 3x3 neighbourhood, 4-connectivity the cross.
    """
    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=_structure(connectivity))
    return labels, int(count)


def count_components(mask: np.ndarray, connectivity: int = 8) -> int:
    """Number of connected components of a 2-D mask."""
    return label_components(mask, connectivity)[1]


def _component_sizes(labels: np.ndarray, count: int) -> np.ndarray:
    return np.bincount(labels.ravel(), minlength=count + 1)[1:]


def _select(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Mask of the pixels whose component (1-based label) has ``keep[label - 1]`` true."""
    lookup = np.zeros(keep.size + 1, dtype=bool)
    lookup[1:] = keep
    return lookup[labels]


def _largest(labels: np.ndarray, count: int, k: int, min_size: int) -> np.ndarray:
    sizes = _component_sizes(labels, count)
    order = np.argsort(-sizes, kind="stable")  # ties: lower label first
    order = order[sizes[order] >= min_size][:k]
    keep = np.zeros(count, dtype=bool)
    keep[order] = True
    return _select(labels, keep)


def keep_largest_components(mask: np.ndarray, k: int, connectivity: int = 8) -> np.ndarray:
    """Keep the ``k`` largest connected components of a mask (ties: the earlier label wins)."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ConfigError(f"number of components to keep must be an integer >= 1, got {k!r}")
    labels, count = label_components(mask, connectivity)
    return _largest(labels, count, int(k), 0)


@COMPONENT_FILTERS.register("largest")
def largest_filter(mask: np.ndarray, saliency: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Keep the ``cfg.num_components`` largest components of at least ``cfg.min_size`` pixels."""
    labels, count = label_components(mask, cfg.connectivity)
    return _largest(labels, count, cfg.num_components, cfg.min_size)


@COMPONENT_FILTERS.register("confidence")
def confidence_filter(mask: np.ndarray, saliency: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """MedCLIP-SAMv2 filter: keep components whose mean saliency exceeds ``cfg.confidence_threshold``."""
    labels, count = label_components(mask, cfg.connectivity)
    sizes = _component_sizes(labels, count)
    weights = np.asarray(saliency, dtype=np.float64).ravel()
    sums = np.bincount(labels.ravel(), weights=weights, minlength=count + 1)[1:]
    confidence = sums / np.maximum(sizes, 1)
    keep = (confidence > cfg.confidence_threshold) & (sizes >= cfg.min_size)
    return _select(labels, keep)


@COMPONENT_FILTERS.register("all")
def all_filter(mask: np.ndarray, saliency: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Keep every component of at least ``cfg.min_size`` pixels."""
    labels, count = label_components(mask, cfg.connectivity)
    return _select(labels, _component_sizes(labels, count) >= cfg.min_size)
