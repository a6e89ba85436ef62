"""Checkpoint-ensemble uncertainty.

Per voxel, two maps from the members' class probabilities p_m (C classes, M members):

* **entropy** of the ensemble mean, H(p̄) = −Σ_c p̄_c log p̄_c / log C — the paper's ``class_entropy``
  (``docs/algorithms.md`` §Weak-uncertainty) normalised to [0, 1]; high along every boundary (where
  any model is unsure) and where the members disagree. Shown to the user (``return=entropy``).
* **mutual information** (the members' disagreement, the epistemic part):
  MI = H(p̄) − mean_m H(p_m) ≥ 0. A boundary all members blur alike adds entropy but no MI.

Per study, one number that ranks the studies a person should look at first: the MI summed over the
volume per voxel the ensemble labels (``study_uncertainty``): how much disagreement there is for
the size of what was segmented. Chosen on the weak-supervision benchmark's seed 0 held-out set
among six candidates (Spearman with 1 − Dice: this 0.73; the mean entropy or mean MI over the
labelled region grown by 2 px, −0.77 / −0.82 — they fall as the region grows with the members'
disagreement; entropy per boundary voxel as the reference code intends, 0.25) and checked on seed 1
(``benchmarks/RESULTS.md``). (The reference divides the entropy sum by 255 × the boundary size, an
unsigned-integer wrap-around, same section.)
"""

from __future__ import annotations

import numpy as np
import torch


def entropy_map(probs: torch.Tensor) -> torch.Tensor:
    """``probs``: (C, ...) probabilities summing to 1 over C → normalised entropy (...)."""
    c = probs.shape[0]
    p = probs.clamp_min(1e-12)
    h = -(p * p.log()).sum(dim=0)
    return h / float(np.log(c)) if c > 1 else torch.zeros_like(h)


def mutual_information(member_probs: torch.Tensor) -> torch.Tensor:
    """``member_probs``: (M, C, ...) → H(mean) − mean H(member), normalised like :func:`entropy_map`."""
    mean_h = torch.stack([entropy_map(p) for p in member_probs]).mean(0)
    return (entropy_map(member_probs.mean(0)) - mean_h).clamp_min(0.0)


def study_uncertainty(mi_sum: float, labelled_voxels: int) -> float:
    """Summed mutual information per labelled voxel (the plain sum when nothing is labelled)."""
    return float(mi_sum) / max(1, int(labelled_voxels))
