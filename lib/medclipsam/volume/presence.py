"""The slice-level presence gate: is the target on this slice at all? (docs/algorithms.md §Presence)

The zero-shot pipeline has no "absent" outcome — a min-max normalised saliency map always has a
foreground, so run on every slice it draws a box on every slice. The slice engine therefore asks
first, for every slice, whether the target is there, from two signals the engine already has:

1. **Similarity** (cheap, batched over the whole series first): the cosine between the slice's
   clean BiomedCLIP image embedding and the text embedding. A slice passes when its similarity is
   at least the *presence threshold*. The threshold comes, in this order, from
   ``--presence-threshold`` (an absolute cosine), from the CLIP model's calibration file
   (``medclipsam_presence.json`` with ``{"presence_threshold": x}`` in a ``local-dir:`` model
   folder, written when a model is calibrated on labelled validation series), or — announced as a
   fallback — from a **series-relative split**: Otsu's threshold on the series' similarities, used
   only when it separates two groups by at least ``min_separation`` pooled standard deviations
   and ``min_gap`` in cosine;
   otherwise every slice passes. The relative split cannot say that a target is absent from the
   whole series; only an absolute threshold can.
2. **Raw saliency** (after saliency, before SAM): the peak of the un-normalised saliency (M2IB: the
   channel-summed KL capacity, comparable between slices, docs/algorithms.md §Raw-saliency). A
   slice whose peak is below ``saliency_ratio`` × the highest peak among the series' candidate
   slices is dropped (0 disables this second gate).

A slice is *confident* when it passed both gates with a similarity at or above the median of the
passing slices; 3D consistency keeps only components that reach a confident slice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..postprocess.binarize import otsu_threshold

CALIBRATION_FILE = "medclipsam_presence.json"


@dataclass
class PresenceConfig:
    threshold: float | None = None     # absolute cosine similarity; None: model calibration, else relative split
    saliency_ratio: float = 0.2        # second gate on the raw saliency peak (0 disables)
    min_separation: float = 4.0        # relative split only between groups this many pooled std apart ...
    min_gap: float = 0.005             # ... and at least this far apart in cosine similarity
    enabled: bool = True               # False: every slice in range is processed (the reference's behaviour)

    def __post_init__(self) -> None:
        if self.threshold is not None and not -1.0 <= float(self.threshold) <= 1.0:
            raise ConfigError(f"presence threshold {self.threshold} is not a cosine similarity; give a value "
                              "in [-1, 1] (e.g. presence.threshold=0.3; --presence-threshold 0.3 on the command line)")
        if not 0.0 <= self.saliency_ratio < 1.0:
            raise ConfigError("presence.saliency_ratio must be in [0, 1)")
        if self.min_separation <= 0:
            raise ConfigError("presence.min_separation must be positive")
        if self.min_gap < 0:
            raise ConfigError("presence.min_gap must be >= 0")


@dataclass
class SimilarityGate:
    """The first gate's decision for one prompt over a series."""

    present: np.ndarray                 # bool per slice
    threshold: float | None             # the threshold used (None: every slice passed)
    mode: str                           # "user", "model calibration", "series-relative split", "all slices", "disabled"
    note: str = ""


def model_presence_threshold(clip: Any) -> float | None:
    """The calibrated threshold stored with a ``local-dir:`` CLIP model, if there is one."""
    spec = str(getattr(clip, "spec", ""))
    for prefix in ("local-dir:", "hf-biomedclip:"):
        if spec.startswith(prefix):
            folder = Path(spec[len(prefix):])
            folder = folder if folder.is_dir() else folder.parent
            path = folder / CALIBRATION_FILE
            if path.is_file():
                try:
                    value = float(json.loads(path.read_text())["presence_threshold"])
                except (ValueError, KeyError, TypeError) as e:
                    raise ConfigError(f"{path} is not a valid presence calibration ({e}); it must hold "
                                      '{"presence_threshold": <cosine>}; fix or delete it') from None
                return value
    return None


def relative_split(similarities: np.ndarray, min_separation: float,
                   min_gap: float = 0.0) -> tuple[float | None, float]:
    """Otsu's split of a series' similarities and how far apart (pooled std) the two groups are.

    Returns ``(threshold, separation)``; threshold is None when the groups are not separated.
    """
    s = np.asarray(similarities, dtype=np.float64)
    if s.size < 4 or float(s.max() - s.min()) < 1e-6:
        return None, 0.0
    t = otsu_threshold(s)
    low, high = s[s < t], s[s >= t]
    if low.size == 0 or high.size == 0:
        return None, 0.0
    pooled = np.sqrt((low.var() * low.size + high.var() * high.size) / s.size)
    gap = float(high.mean() - low.mean())
    separation = gap / max(float(pooled), 1e-9)
    return (float(t) if separation >= min_separation and gap >= min_gap else None), min(separation, 1e6)


def similarity_gate(similarities: np.ndarray, cfg: PresenceConfig, calibrated: float | None = None) -> SimilarityGate:
    s = np.asarray(similarities, dtype=np.float64)
    if not cfg.enabled:
        return SimilarityGate(np.ones(s.shape, bool), None, "disabled", "presence gate disabled: every slice processed")
    if cfg.threshold is not None:
        return SimilarityGate(s >= cfg.threshold, float(cfg.threshold), "user")
    if calibrated is not None:
        return SimilarityGate(s >= calibrated, float(calibrated), "model calibration")
    t, separation = relative_split(s, cfg.min_separation, cfg.min_gap)
    if t is None:
        return SimilarityGate(np.ones(s.shape, bool), None, "all slices",
                              "no calibrated presence threshold for this model and the similarities do not split "
                              f"into two groups (separation {separation:.2f} < {cfg.min_separation:g}): every slice "
                              "is processed; set presence.threshold (--presence-threshold) to gate")
    return SimilarityGate(s >= t, t, "series-relative split",
                          f"no calibrated presence threshold for this model: using the series-relative split "
                          f"{t:.4f} (separation {separation:.2f}); it cannot tell a target absent from the whole "
                          "series — set presence.threshold (--presence-threshold) to use an absolute threshold")


def saliency_gate(raw_peaks: np.ndarray, candidates: np.ndarray, ratio: float) -> np.ndarray:
    """Second gate: keep candidates whose raw saliency peak is ≥ ratio × the series' highest peak."""
    peaks = np.asarray(raw_peaks, dtype=np.float64)
    keep = np.asarray(candidates, bool).copy()
    if ratio <= 0 or not keep.any():
        return keep
    top = float(np.nanmax(np.where(keep, peaks, np.nan)))
    if not np.isfinite(top) or top <= 0:
        return keep
    return keep & (np.nan_to_num(peaks, nan=0.0) >= ratio * top)


def confident_slices(similarities: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Present slices with a similarity at or above the median of the present slices."""
    present = np.asarray(present, bool)
    out = np.zeros(present.shape, bool)
    if present.any():
        s = np.asarray(similarities, dtype=np.float64)
        out = present & (s >= np.median(s[present]))
    return out


@dataclass
class SliceRecord:
    """What the engine decided and found on one slice for one prompt (in the report)."""

    index: int
    similarity: float
    passed_similarity: bool
    raw_saliency_peak: float | None = None
    present: bool = False
    confident: bool = False
    found: bool = False
    propagated: bool = False             # the mask came from a neighbouring slice's (stage 6), not this slice's gate
    mask_pixels: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
