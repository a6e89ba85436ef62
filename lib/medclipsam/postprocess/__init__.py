"""Post-processing: saliency map -> coarse mask (dense CRF / Otsu / k-means / threshold,
then a connected-component filter)."""

from .binarize import (
    BINARIZATION_METHODS,
    crf_mask,
    crf_unary_energies,
    kmeans_mask,
    otsu_mask,
    otsu_threshold,
    threshold_mask,
    two_means_threshold,
)
from .coarse import make_coarse_mask
from .components import (
    COMPONENT_FILTERS,
    all_filter,
    confidence_filter,
    count_components,
    keep_largest_components,
    label_components,
    largest_filter,
)
from .config import CRFConfig, PostprocessConfig, names_paired_structure

__all__ = [
    "BINARIZATION_METHODS",
    "COMPONENT_FILTERS",
    "CRFConfig",
    "PostprocessConfig",
    "all_filter",
    "confidence_filter",
    "count_components",
    "crf_mask",
    "crf_unary_energies",
    "keep_largest_components",
    "kmeans_mask",
    "label_components",
    "largest_filter",
    "names_paired_structure",
    "make_coarse_mask",
    "otsu_mask",
    "otsu_threshold",
    "threshold_mask",
    "two_means_threshold",
]
