"""Segmentation metrics and folder evaluation (DSC, IoU, boundary NSD, slab-NSD).

What is measured
----------------
* ``dice``  : DSC = 2|G∩S| / (|G| + |S|).
* ``iou``   : IoU = |G∩S| / |G∪S|.
* ``boundary_nsd`` : the *true* 2D normalised surface distance.  Each mask's contour is the
  set of pixel edges between a foreground and a background pixel (outside the image counts
  as background); an edge is represented by its midpoint and weighted by its length.  NSD is
  the fraction of the total contour length (pred + gt) that lies within ``tolerance`` of the
  other contour.
* ``slab_nsd`` : the NSD the MedCLIP-SAMv2 reference evaluation reports.  The reference
  pads the 2D mask into an H×W×1 volume and runs DeepMind's surface-distance code on it, so
  the top and bottom faces of the one-voxel slab count as surface and the score behaves
  like a region-overlap score (it tracks DSC and sits a few points above it).  It is kept
  so that numbers can be compared with the paper; ``boundary_nsd`` is the metric that
  actually measures boundary agreement.

Empty masks
-----------
The reference evaluation crashes when both masks are empty.  Here the cases are explicit:

* both empty   -> every score is 1.0, case ``"both_empty"``;
* only gt empty   -> every score is 0.0, case ``"gt_empty"``;
* only pred empty -> every score is 0.0, case ``"pred_empty"``;
* otherwise case ``"both_present"``.

Reading masks
-------------
``load_mask`` reads PNG / TIFF / JPEG / BMP with Pillow; a multi-channel image keeps its
first channel; 8-bit images are binarised at ``> 127`` and every other dtype at ``> 0``.
(The reference binarises 8-bit images at ``> 200``; for masks saved as 0/255 both agree.)
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "CASES",
    "MaskScores",
    "EvaluationReport",
    "dice",
    "iou",
    "roc_auc",
    "boundary_nsd",
    "slab_nsd",
    "mask_case",
    "score_masks",
    "resize_nearest",
    "load_mask",
    "evaluate_folders",
    "write_csv",
    "summary_lines",
]

#: File suffixes (lower case) that ``evaluate_folders`` considers.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

#: The possible values of :attr:`MaskScores.case`.
CASES = ("both_present", "both_empty", "gt_empty", "pred_empty")

_METRICS = ("dsc", "iou", "nsd", "slab_nsd")


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


# ---------------------------------------------------------------------------------------
# contours as pixel edges
# ---------------------------------------------------------------------------------------


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


def _contour_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boundary pixel edges of a 2D boolean mask (outside the image is background).

    Returns ``(horizontal, vertical)``:

    * ``horizontal[k, j]`` (shape (H+1, W)) is True when pixels (k-1, j) and (k, j) differ,
      i.e. there is a horizontal edge at row coordinate ``k - 0.5``, column ``j``;
    * ``vertical[i, k]`` (shape (H, W+1)) is True when pixels (i, k-1) and (i, k) differ,
      i.e. there is a vertical edge at row ``i``, column coordinate ``k - 0.5``.
    """
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    horizontal = padded[1:, 1:-1] != padded[:-1, 1:-1]
    vertical = padded[1:-1, 1:] != padded[1:-1, :-1]
    return horizontal, vertical


def _edge_midpoints(mask: np.ndarray, spacing: tuple[float, float]):
    """Edge midpoints (N, 2) in physical (row, col) coordinates and their lengths (N,)."""
    sy, sx = spacing
    horizontal, vertical = _contour_edges(mask)
    hk, hj = np.nonzero(horizontal)
    vi, vk = np.nonzero(vertical)
    points = np.concatenate(
        [
            np.stack([(hk - 0.5) * sy, hj * sx], axis=1),
            np.stack([vi * sy, (vk - 0.5) * sx], axis=1),
        ]
    ).astype(np.float64)
    lengths = np.concatenate([np.full(hk.size, sx), np.full(vi.size, sy)])
    return points, lengths


def boundary_nsd(
    pred,
    gt,
    tolerance: float = 2.0,
    spacing: tuple[float, float] = (1.0, 1.0),
) -> float:
    """True 2D normalised surface distance between two masks.

    Each contour is the set of pixel edges separating a foreground from a background pixel
    (outside the image is background).  Every edge is its midpoint in physical coordinates
    (``spacing`` = (row spacing, column spacing)) with weight = its physical length.  The
    score is::

        (length of pred edges within `tolerance` of the gt contour
         + length of gt edges within `tolerance` of the pred contour)
        / (total pred length + total gt length)

    where "within" means the distance to the nearest edge midpoint of the other contour is
    <= ``tolerance`` (same physical units as ``spacing``).  Both empty -> 1.0; exactly one
    empty -> 0.0.
    """
    p, g = _pair(pred, gt)
    tol = _check_tolerance(tolerance)
    sp = _check_spacing(spacing)
    p_any, g_any = bool(p.any()), bool(g.any())
    if not p_any and not g_any:
        return 1.0
    if not p_any or not g_any:
        return 0.0
    p_pts, p_len = _edge_midpoints(p, sp)
    g_pts, g_len = _edge_midpoints(g, sp)
    d_pg, _ = cKDTree(g_pts).query(p_pts, k=1)
    d_gp, _ = cKDTree(p_pts).query(g_pts, k=1)
    covered = p_len[_within(d_pg, tol)].sum() + g_len[_within(d_gp, tol)].sum()
    return float(covered / (p_len.sum() + g_len.sum()))


# ---------------------------------------------------------------------------------------
# slab NSD (the paper's metric)
# ---------------------------------------------------------------------------------------


def _slab_face_grids(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face centres of the H×W×1 slab of ``mask`` on a half-pixel grid.

    The planar coordinate y in {-0.5, 0, 0.5, ..., H-0.5} maps to grid index 2y+1 (same for
    x), giving a (2H+1, 2W+1) grid.  Returns ``(top, side, side_count)`` where ``top`` marks
    the centres of the top faces (z=+0.5; the bottom faces at z=-0.5 are the mirror image),
    ``side`` marks the centres of the side faces (z=0), and ``side_count`` the number of
    side faces.
    """
    h, w = mask.shape
    top = np.zeros((2 * h + 1, 2 * w + 1), dtype=bool)
    side = np.zeros_like(top)
    top[1::2, 1::2] = mask
    horizontal, vertical = _contour_edges(mask)
    side[0::2, 1::2] = horizontal  # row coordinate k-0.5 -> index 2k
    side[1::2, 0::2] = vertical  # column coordinate k-0.5 -> index 2k
    return top, side, int(horizontal.sum() + vertical.sum())


def _slab_distance_fields(top: np.ndarray, side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from every half-grid point to the nearest face centre of a slab.

    Returns ``(at_top_level, at_side_level)``: the distance for a query point at z=+0.5
    (equivalently z=-0.5 by symmetry) and at z=0.  Exact Euclidean distances: planar
    distance transforms per level, combined with the vertical offset between levels.
    """
    d_top = ndimage.distance_transform_edt(~top, sampling=0.5)
    d_side = ndimage.distance_transform_edt(~side, sampling=0.5)
    # From z=+0.5: own level (dz=0), side level (dz=0.5); the bottom level (dz=1) is never
    # nearer than the top level directly above/below it.
    at_top = np.minimum(d_top, np.sqrt(d_side**2 + 0.25))
    # From z=0: top and bottom levels (dz=0.5), side level (dz=0).
    at_side = np.minimum(np.sqrt(d_top**2 + 0.25), d_side)
    return at_top, at_side


def slab_nsd(pred, gt, tolerance: float = 2.0) -> float:
    """NSD of the masks padded into an H×W×1 slab volume (the MedCLIP-SAMv2 "slab-NSD").

    The reference evaluation stacks the 2D mask into a one-voxel-thick volume and runs
    DeepMind's ``surface_distance`` code (surfels built from 2×2×2 neighbourhoods) on it.
    This function approximates that with voxel faces: the surface elements are the unit
    faces of the slab's voxels -- the top and bottom face of every foreground pixel, plus
    the side faces between a foreground pixel and a background pixel or the outside --
    each represented by its centre point in 3D with area 1.  The score is::

        (area of pred faces within `tolerance` of a gt face
         + area of gt faces within `tolerance` of a pred face)
        / (total pred area + total gt area)

    in pixel units (spacing 1).  Because the top/bottom faces cover the whole region, the
    score behaves like region overlap (close to, and usually a few points above, DSC).
    Distances are exact (planar Euclidean distance transforms on a half-pixel grid).
    Both empty -> 1.0; exactly one empty -> 0.0.
    """
    p, g = _pair(pred, gt)
    tol = _check_tolerance(tolerance)
    p_any, g_any = bool(p.any()), bool(g.any())
    if not p_any and not g_any:
        return 1.0
    if not p_any or not g_any:
        return 0.0
    p_top, p_side, p_nside = _slab_face_grids(p)
    g_top, g_side, g_nside = _slab_face_grids(g)
    g_at_top, g_at_side = _slab_distance_fields(g_top, g_side)
    p_at_top, p_at_side = _slab_distance_fields(p_top, p_side)
    covered = (
        2 * int(_within(g_at_top[p_top], tol).sum())
        + int(_within(g_at_side[p_side], tol).sum())
        + 2 * int(_within(p_at_top[g_top], tol).sum())
        + int(_within(p_at_side[g_side], tol).sum())
    )
    total = 2 * int(p.sum()) + p_nside + 2 * int(g.sum()) + g_nside
    return covered / total


# ---------------------------------------------------------------------------------------
# per-image scores
# ---------------------------------------------------------------------------------------


@dataclass
class MaskScores:
    """Scores of one prediction against its ground truth."""

    name: str
    dsc: float
    iou: float
    nsd: float  #: true 2D boundary NSD
    slab_nsd: float  #: the paper's slab-NSD
    case: str  #: one of CASES


def resize_nearest(mask, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2D mask to ``shape`` (H, W) with nearest neighbour (pixel-centre mapping).

    Output pixel (i, j) takes input pixel (floor((i+0.5)·Hin/Hout), floor((j+0.5)·Win/Wout)),
    the same mapping as Pillow's NEAREST filter.
    """
    arr = np.asarray(mask)
    h_in, w_in = arr.shape[:2]
    h_out, w_out = int(shape[0]), int(shape[1])
    if h_out <= 0 or w_out <= 0:
        raise InputError(f"target shape must be positive; got {shape!r}.")
    rows = np.minimum(((np.arange(h_out) + 0.5) * h_in / h_out).astype(np.int64), h_in - 1)
    cols = np.minimum(((np.arange(w_out) + 0.5) * w_in / w_out).astype(np.int64), w_in - 1)
    return arr[rows[:, None], cols[None, :]]


def score_masks(pred, gt, name: str = "", tolerance: float = 2.0) -> MaskScores:
    """Score one prediction against its ground truth.

    If ``pred``'s shape differs from ``gt``'s, ``pred`` is resized to the gt size with
    nearest neighbour (as the reference evaluation does).  Empty masks are handled
    explicitly: both empty -> all scores 1.0 (case ``"both_empty"``); exactly one empty ->
    all scores 0.0 (case ``"gt_empty"`` / ``"pred_empty"``).
    """
    g = _as_mask(gt, "ground-truth")
    p = _as_mask(pred, "prediction")
    if p.shape != g.shape:
        p = resize_nearest(p, g.shape)
    tol = _check_tolerance(tolerance)
    case = mask_case(p, g)
    if case == "both_empty":
        return MaskScores(name, 1.0, 1.0, 1.0, 1.0, case)
    if case != "both_present":
        return MaskScores(name, 0.0, 0.0, 0.0, 0.0, case)
    return MaskScores(
        name=name,
        dsc=dice(p, g),
        iou=iou(p, g),
        nsd=boundary_nsd(p, g, tolerance=tol),
        slab_nsd=slab_nsd(p, g, tolerance=tol),
        case=case,
    )


# ---------------------------------------------------------------------------------------
# files and folders
# ---------------------------------------------------------------------------------------


def load_mask(path) -> np.ndarray:
    """Read a mask image as a 2D boolean array.

    PNG / TIFF / JPEG / BMP via Pillow (first frame of a multi-frame file).  A multi-channel
    image keeps its first channel (a palette image is expanded to its colours first);
    8-bit data is binarised at ``> 127`` (or ``> 0`` when it holds only 0 and 1), any other integer or float data at ``> 0``.
    Raises :class:`InputError` naming the file when it cannot be read.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.seek(0)
            if img.mode == "1":
                return np.asarray(img, dtype=bool).copy()
            if img.mode in ("P", "PA"):
                img = img.convert("RGBA")
            arr = np.asarray(img)
    except FileNotFoundError:
        raise InputError(f"mask file {path} does not exist; check the path.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(
            f"cannot read mask file {path} ({exc}); pass a PNG, TIFF, JPEG or BMP image."
        ) from None
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(
            f"mask file {path} has an unusable shape {arr.shape}; pass a 2D image."
        )
    if arr.dtype == np.uint8:
        # 0/1 label PNGs (as nnU-Net and the reference's uncertainty script write them) are labels,
        # not an almost-black 0/255 mask: binarise them at > 0 instead of reading them as empty.
        return arr > 0 if arr.max() <= 1 else arr > 127
    if arr.dtype == bool:
        return arr.copy()
    if np.issubdtype(arr.dtype, np.number):
        return arr > 0
    raise InputError(f"mask file {path} has unsupported pixel type {arr.dtype}.")


def _image_files_by_stem(folder: Path, role: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    clashes: dict[str, list[str]] = {}
    for entry in folder.iterdir():
        if not entry.is_file() or entry.name.startswith("."):
            continue
        if entry.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        stem = entry.stem
        if stem in files:
            clashes.setdefault(stem, [files[stem].name]).append(entry.name)
            continue
        files[stem] = entry
    if clashes:
        detail = "; ".join(f"{s}: {', '.join(sorted(n))}" for s, n in sorted(clashes.items()))
        raise InputError(
            f"{role} folder {folder} has several image files with the same stem ({detail}); "
            "files are paired by stem, so keep one file per stem."
        )
    return files


def _preview(names, limit: int = 5) -> str:
    names = list(names)
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


@dataclass
class EvaluationReport:
    """Per-image scores of a folder evaluation."""

    rows: list[MaskScores]
    unmatched_pred: list[str] = field(default_factory=list)
    unmatched_gt: list[str] = field(default_factory=list)
    tolerance: float = 2.0

    @property
    def count(self) -> int:
        """Number of scored image pairs."""
        return len(self.rows)

    def means(self) -> dict[str, float]:
        """Mean ``dsc``, ``iou``, ``nsd`` and ``slab_nsd`` over all rows (NaN if no rows)."""
        if not self.rows:
            return {m: float("nan") for m in _METRICS}
        return {m: float(np.mean([getattr(r, m) for r in self.rows])) for m in _METRICS}

    def case_counts(self) -> dict[str, int]:
        """Number of rows per case (every case in CASES is present, possibly 0)."""
        counts = {c: 0 for c in CASES}
        for r in self.rows:
            counts[r.case] = counts.get(r.case, 0) + 1
        return counts


def evaluate_folders(pred_dir, gt_dir, tolerance: float = 2.0) -> EvaluationReport:
    """Score every prediction in ``pred_dir`` against the ground truth in ``gt_dir``.

    Files are paired **by stem** (the file name without its extension, so ``a.png`` pairs
    with ``a.tif``), never by listing order.  Only image files (.png .jpg .jpeg .tif .tiff
    .bmp, any case) are considered; rows are sorted by stem.  Stems present on one side only
    are listed in ``unmatched_pred`` / ``unmatched_gt`` (file names).  A missing folder, two
    files with the same stem in one folder, or no pair at all raise :class:`InputError`.
    """
    tol = _check_tolerance(tolerance)
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for folder, role in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise InputError(f"{role} folder {folder} {what}; pass an existing folder of masks.")
    preds = _image_files_by_stem(pred_dir, "prediction")
    gts = _image_files_by_stem(gt_dir, "ground-truth")
    common = sorted(set(preds) & set(gts))
    if not common:
        raise InputError(
            f"no prediction in {pred_dir} shares a file stem with a ground truth in {gt_dir}: "
            f"found {len(preds)} prediction image(s) ({_preview(sorted(p.name for p in preds.values()))}) "
            f"and {len(gts)} ground-truth image(s) ({_preview(sorted(g.name for g in gts.values()))}). "
            f"Files are paired by name without extension ({', '.join(IMAGE_SUFFIXES)})."
        )
    rows = [
        score_masks(load_mask(preds[s]), load_mask(gts[s]), name=s, tolerance=tol)
        for s in common
    ]
    unmatched_pred = [preds[s].name for s in sorted(set(preds) - set(gts))]
    unmatched_gt = [gts[s].name for s in sorted(set(gts) - set(preds))]
    return EvaluationReport(rows, unmatched_pred, unmatched_gt, tol)


def write_csv(report: EvaluationReport, path) -> None:
    """Write one row per image: ``name,dsc,iou,nsd,slab_nsd,case`` (scores to 6 decimals)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", *_METRICS, "case"])
        for r in report.rows:
            writer.writerow([r.name, *(f"{getattr(r, m):.6f}" for m in _METRICS), r.case])


def summary_lines(report: EvaluationReport) -> list[str]:
    """Human-readable summary; the last line is ``dsc=… iou=… nsd=… n=…`` (nsd = boundary NSD)."""
    m = report.means()
    counts = report.case_counts()
    lines = [
        f"images scored: {report.count} (NSD tolerance {report.tolerance:g} px)",
        "cases: " + ", ".join(f"{c}={counts[c]}" for c in counts),
    ]
    if report.unmatched_pred:
        lines.append(
            f"predictions without ground truth ({len(report.unmatched_pred)}): "
            + _preview(report.unmatched_pred, 10)
        )
    if report.unmatched_gt:
        lines.append(
            f"ground truths without prediction ({len(report.unmatched_gt)}): "
            + _preview(report.unmatched_gt, 10)
        )
    lines.append(
        f"mean DSC {m['dsc']:.4f}  IoU {m['iou']:.4f}  "
        f"NSD {m['nsd']:.4f}  slab-NSD {m['slab_nsd']:.4f}"
    )
    lines.append(
        "note: slab-NSD is the paper's metric (2D mask as an HxWx1 volume; tracks DSC); "
        "NSD is the true 2D boundary metric."
    )
    lines.append(f"dsc={m['dsc']:.4f} iou={m['iou']:.4f} nsd={m['nsd']:.4f} n={report.count}")
    return lines
