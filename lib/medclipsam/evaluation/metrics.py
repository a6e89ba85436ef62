"""Overlap metrics of masks: 2D Dice / IoU, the empty-mask cases, ROC AUC, and the per-slice 3D metrics.

The input checks shared by every metric of :mod:`medclipsam.evaluation` live here too.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

__all__ = [
    "CASES",
    "dice",
    "iou",
    "roc_auc",
    "mask_case",
    "present_slice_dice",
    "false_positive_slices",
]

#: The possible values of :attr:`MaskScores.case`.
CASES = ("both_present", "both_empty", "gt_empty", "pred_empty")


# ---------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------


def _as_mask(array, what: str) -> np.ndarray:
    """Return ``array`` as a 2D boolean array (non-zero -> True)."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise InputError(
            f"{what} mask must be a 2D array (H, W); got shape {arr.shape}. "
            "Pass a single-channel 2D mask."
        )
    if arr.size == 0:
        raise InputError(f"{what} mask is empty-sized (shape {arr.shape}); pass a non-empty image.")
    if arr.dtype != bool:
        if not (np.issubdtype(arr.dtype, np.number)):
            raise InputError(
                f"{what} mask has dtype {arr.dtype}; pass a boolean or numeric array."
            )
        arr = arr != 0
    return arr


def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p = _as_mask(pred, "prediction")
    g = _as_mask(gt, "ground-truth")
    if p.shape != g.shape:
        raise InputError(
            f"prediction shape {p.shape} differs from ground-truth shape {g.shape}; "
            "resize the prediction first (score_masks does this with nearest neighbour)."
        )
    return p, g


def _check_tolerance(tolerance: float) -> float:
    try:
        tol = float(tolerance)
    except (TypeError, ValueError):
        raise InputError(f"tolerance must be a number; got {tolerance!r}.") from None
    if not math.isfinite(tol) or tol < 0:
        raise InputError(f"tolerance must be a finite number >= 0; got {tolerance!r}.")
    return tol


def _check_spacing(spacing) -> tuple[float, float]:
    try:
        sy, sx = (float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(
            f"spacing must be a pair of numbers (row spacing, column spacing); got {spacing!r}."
        ) from None
    if not (math.isfinite(sy) and math.isfinite(sx) and sy > 0 and sx > 0):
        raise InputError(f"spacing values must be finite and > 0; got {spacing!r}.")
    return sy, sx


def _within(distances: np.ndarray, tolerance: float) -> np.ndarray:
    # A tiny slack so that distances equal to the tolerance up to rounding count as inside.
    return distances <= tolerance + 1e-9 * max(1.0, tolerance)


# ---------------------------------------------------------------------------------------
# overlap metrics
# ---------------------------------------------------------------------------------------


def mask_case(pred, gt) -> str:
    """Return ``"both_present"``, ``"both_empty"``, ``"gt_empty"`` or ``"pred_empty"``."""
    p, g = _pair(pred, gt)
    p_any, g_any = bool(p.any()), bool(g.any())
    if p_any and g_any:
        return "both_present"
    if not p_any and not g_any:
        return "both_empty"
    return "gt_empty" if not g_any else "pred_empty"


def dice(pred, gt) -> float:
    """Dice similarity coefficient 2|G∩S| / (|G|+|S|); 1.0 if both masks are empty.

    Inputs are 2D boolean arrays of equal shape (numeric arrays count non-zero as True).
    """
    p, g = _pair(pred, gt)
    total = int(p.sum()) + int(g.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / total


def iou(pred, gt) -> float:
    """Intersection over union |G∩S| / |G∪S|; 1.0 if both masks are empty."""
    p, g = _pair(pred, gt)
    union = int(np.logical_or(p, g).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(p, g).sum()) / union


def roc_auc(scores, positive) -> float:
    """Area under the ROC curve of ``scores`` for the boolean labels ``positive`` (Mann–Whitney U,
    ties counted half); NaN without both classes."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(positive, dtype=bool).ravel()
    if s.shape != y.shape:
        raise InputError(f"roc_auc needs one label per score, got {s.size} scores and {y.size} labels")
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


# ---------------------------------------------------------------------------------------
# volumes: per-slice 3D metrics
# ---------------------------------------------------------------------------------------


def _volume_pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred), np.asarray(truth)
    if p.ndim != 3 or p.shape != t.shape:
        raise InputError(
            f"3D metrics need two (slices, H, W) masks of one shape; got {p.shape} and {t.shape}."
        )
    return p.astype(bool), t.astype(bool)


def present_slice_dice(pred, truth) -> float:
    """Dice of two (slices, H, W) masks over the slices where ``truth`` is present.

    Slices without the target do not count here (a label there is a false-positive slice,
    which :func:`false_positive_slices` counts; a presence gate's AUC measures those).
    1.0 when neither mask has a voxel on those slices.
    """
    p, t = _volume_pair(pred, truth)
    present = t.reshape(t.shape[0], -1).any(axis=1)
    p, t = p[present], t[present]
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & t).sum()) / denom


def false_positive_slices(pred, truth) -> int:
    """Number of slices of two (slices, H, W) masks where ``pred`` labels a voxel and ``truth`` has none."""
    p, t = _volume_pair(pred, truth)
    labelled = p.reshape(p.shape[0], -1).any(axis=1)
    present = t.reshape(t.shape[0], -1).any(axis=1)
    return int((labelled & ~present).sum())
