"""Propagation of a segmentation into the neighbouring slices it missed.

A slice-by-slice pipeline loses a target's poles: where a tumour shrinks to its last slices, the
image–text similarity falls under the presence gate although the slice beside it shows the target
clearly (the presence signal is a whole-slice judgement; a small target barely moves it). After 3D
consistency, from every slice with a mask next to an empty slice (a slice judged absent, one where
SAM found nothing, or one whose mask the consistency removed), SAM is prompted on the empty slice
with the boxes of the neighbour's mask, one per connected component — the way a person carries a box
to the next slice — and the new mask is kept only when it looks like the same object ending
(:func:`judge`):

* **shrinking** — its area is between ``min_area_ratio`` and ``max_area_ratio`` of the source
  mask's: a target tapers towards its poles, while a box carried onto a slice without the target
  lands on whatever lies under it, often a structure as large as the box;
* **overlap** — at least ``min_overlap`` of it lies inside the source mask;
* **contrast** — the source stands out from a ring of ``ring_px`` pixels around it by at least
  ``min_contrast`` grey levels (of the 0–255 rendering the models saw), and the new mask keeps the
  same sign and at least ``contrast_ratio`` of that contrast: a box on a slice past the pole holds
  the surrounding tissue, which does not stand out.

An accepted mask becomes the source for the next slice, up to ``max_slices`` slices from each end
of each run of segmented slices. Propagation is **off by default**: its thresholds were chosen on the
demo models' phantom results, so the demo CLIP's model card turns it on for that model
(:mod:`medclipsam.settings`) and a user turns it on with ``propagation.enabled=true``. The rule is
conservative by design: a missed pole costs a few voxels, a wrong slice added to a label costs a
person's trust in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..checks import integer_at_least
from ..errors import ConfigError
from ..prompts import boxes_of_components

_IN_PLANE = np.ones((3, 3), dtype=bool)


@dataclass
class PropagationConfig:
    # off unless asked for: the rules below were read off the demo models' results on the project's
    # phantoms (where, without them, propagation added false tumour slices), so they are the demo
    # CLIP's card's to switch on ("propagation.enabled": "true"), not a default for real models
    enabled: bool = False
    max_slices: int = 2                 # slices added at most beyond each end of a run of segmented slices
    min_area_ratio: float = 0.15        # new mask area / source mask area, at least ...
    max_area_ratio: float = 0.95        # ... and at most (a target shrinks towards its poles)
    min_overlap: float = 0.6            # fraction of the new mask inside the source mask
    min_contrast: float = 10.0          # |mean inside − mean of the ring| of the source, grey levels (0–255)
    contrast_ratio: float = 0.5         # the new mask keeps this fraction of the source's contrast, same sign
    ring_px: int = 3                    # width of the ring around a mask for its contrast

    def __post_init__(self) -> None:
        integer_at_least("propagation.max_slices", self.max_slices, 1)
        integer_at_least("propagation.ring_px", self.ring_px, 1)
        if not 0 <= self.min_area_ratio <= self.max_area_ratio:
            raise ConfigError("propagation.min_area_ratio must be >= 0 and <= propagation.max_area_ratio, got "
                              f"{self.min_area_ratio} and {self.max_area_ratio}")
        for name in ("min_overlap", "contrast_ratio"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"propagation.{name} must be in [0, 1], got {value!r}")
        if self.min_contrast < 0:
            raise ConfigError(f"propagation.min_contrast must be >= 0 grey levels, got {self.min_contrast!r}")


@dataclass
class PropagationReport:
    added_slices: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)     # slice → why its mask was not kept

    def to_dict(self) -> dict:
        return {"added_slices": self.added_slices,
                "rejected": [{"slice": k, "reason": r} for k, r in sorted(self.rejected.items())]}


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """The box of each 8-connected component of ``mask``, float32 (n, 4), in the
    :class:`~medclipsam.prompts.VisualPrompts` convention (first and last pixel, inclusive)."""
    return boxes_of_components(ndimage.label(mask, structure=_IN_PLANE)[0])


def contrast(mask: np.ndarray, grey: np.ndarray, ring_px: int) -> float:
    """Mean of ``grey`` inside ``mask`` minus its mean over a ring ``ring_px`` wide around it (0 when
    either is empty)."""
    if not mask.any():
        return 0.0
    ring = ndimage.binary_dilation(mask, structure=_IN_PLANE, iterations=ring_px) & ~mask
    if not ring.any():
        return 0.0
    return float(grey[mask].mean() - grey[ring].mean())


def judge(new: np.ndarray, source: np.ndarray, grey_new: np.ndarray, grey_source: np.ndarray,
          cfg: PropagationConfig) -> str | None:
    """Why the propagated mask ``new`` is not the source's object ending (None: keep it); see the
    module docstring."""
    area, source_area = int(new.sum()), int(source.sum())
    if area == 0:
        return "SAM found nothing"
    ratio = area / max(source_area, 1)
    if not cfg.min_area_ratio <= ratio <= cfg.max_area_ratio:
        return f"area {ratio:.2f}× the neighbour's, outside [{cfg.min_area_ratio}, {cfg.max_area_ratio}]"
    overlap = int((new & source).sum()) / area
    if overlap < cfg.min_overlap:
        return f"only {overlap:.2f} of it inside the neighbour's mask (< {cfg.min_overlap})"
    c_source = contrast(source, grey_source, cfg.ring_px)
    if abs(c_source) < cfg.min_contrast:
        return f"the neighbour's mask stands out by {c_source:+.1f} grey levels only (< {cfg.min_contrast})"
    c_new = contrast(new, grey_new, cfg.ring_px)
    if c_new * np.sign(c_source) < cfg.contrast_ratio * abs(c_source):
        return f"contrast {c_new:+.1f} against the neighbour's {c_source:+.1f} grey levels"
    return None


def run_ends(has_mask: np.ndarray) -> list[tuple[int, int]]:
    """``(source slice, direction)`` for every segmented slice next to an empty one, lowest slice first."""
    has = np.asarray(has_mask, bool)
    ends = []
    for k in np.flatnonzero(has):
        for d in (-1, 1):
            j = k + d
            if 0 <= j < len(has) and not has[j]:
                ends.append((int(k), d))
    return ends


__all__ = ["PropagationConfig", "PropagationReport", "mask_boxes", "contrast", "judge", "run_ends"]
