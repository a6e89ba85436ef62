"""Pairing predictions with their ground truths: one pair of masks (resized and scored), and two
folders of mask images paired by file stem."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .metrics import _as_mask, _check_tolerance, dice, iou, mask_case
from .report import EvaluationReport, MaskScores, _preview
from .surface import boundary_nsd, slab_nsd

__all__ = ["IMAGE_SUFFIXES", "resize_nearest", "score_masks", "load_mask", "evaluate_folders"]

#: File suffixes (lower case) that ``evaluate_folders`` considers.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


# ---------------------------------------------------------------------------------------
# one pair of masks
# ---------------------------------------------------------------------------------------


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
    8-bit data is binarised at ``> 127`` (or ``> 0`` when it holds only 0 and 1), any other integer or
    float data at ``> 0``.
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
