"""Checkpoint-ensemble uncertainty: the entropy of the ensemble-mean class probabilities.

Per voxel: H = −Σ_c p̄_c log p̄_c / log C (0: all checkpoints agree with certainty, 1: uniform), the
paper's ``class_entropy`` (``../shared/docs/algorithms.md`` §8.2–8.3) normalised to [0, 1] for any
number of classes. Per study, one number that ranks the studies a person should look at first:
the mean entropy over the *region in question* — the voxels that the ensemble or any of its
members labels foreground, grown by ``margin`` voxels in-plane — so a large organ segmented with
confidence scores low, a target the checkpoints disagree about scores high, and the empty
background does not dilute it. (The reference divides the entropy sum by 255 × the boundary size,
an unsigned-integer wrap-around, §8.3.) A study where nothing is labelled scores 0.
"""

from __future__ import annotations

import numpy as np
import torch


def entropy_map(mean_probs: torch.Tensor) -> torch.Tensor:
    """``mean_probs``: (C, ...) probabilities summing to 1 over C → normalised entropy (...)."""
    c = mean_probs.shape[0]
    p = mean_probs.clamp_min(1e-12)
    h = -(p * p.log()).sum(dim=0)
    return h / float(np.log(c)) if c > 1 else torch.zeros_like(h)


def region_in_question(mean_label: np.ndarray, member_foreground: np.ndarray, margin: int = 2) -> np.ndarray:
    """Voxels labelled foreground by the ensemble or any member, grown in-plane by ``margin``."""
    from scipy.ndimage import binary_dilation

    region = (mean_label > 0) | member_foreground
    if margin > 0 and region.any():
        structure = np.zeros((3, 3, 3), bool)
        structure[1] = True                      # in-plane only: slices are independent
        region = binary_dilation(region, structure=structure, iterations=margin)
    return region


def study_uncertainty(entropy: np.ndarray, region: np.ndarray) -> float:
    """Mean entropy over ``region`` (0 when the region is empty)."""
    return float(entropy[region].mean()) if region.any() else 0.0
