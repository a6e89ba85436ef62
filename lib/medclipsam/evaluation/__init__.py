"""Segmentation metrics and folder evaluation (DSC, IoU, boundary NSD, slab-NSD, per-slice 3D).

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
* ``present_slice_dice`` / ``false_positive_slices`` : for (slices, H, W) volumes, the Dice on
  the slices where the target is present, and the count of target-free slices given a label
  (the Dice does not see those).

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

Where each part lives
---------------------
``metrics`` (overlap metrics, empty-mask cases, ROC AUC, the 3D metrics and the input checks),
``surface`` (boundary NSD, slab-NSD), ``pairing`` (one pair of masks scored, folders paired by
file stem), ``report`` (per-image rows, means, CSV and summary).  Import from this package.
"""

from __future__ import annotations

from .metrics import (
    CASES,
    dice,
    false_positive_slices,
    iou,
    mask_case,
    present_slice_dice,
    roc_auc,
)
from .pairing import IMAGE_SUFFIXES, evaluate_folders, load_mask, resize_nearest, score_masks
from .report import EvaluationReport, MaskScores, summary_lines, write_csv
from .surface import boundary_nsd, slab_nsd

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
    "present_slice_dice",
    "false_positive_slices",
    "score_masks",
    "resize_nearest",
    "load_mask",
    "evaluate_folders",
    "write_csv",
    "summary_lines",
]
