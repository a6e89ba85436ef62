"""Known-answer tests for medclipsam.evaluation (fast, synthetic masks only)."""

from __future__ import annotations

import csv
import math
import pathlib
import re

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from medclipsam.errors import InputError
from medclipsam.evaluation import (
    EvaluationReport,
    MaskScores,
    boundary_nsd,
    dice,
    evaluate_folders,
    iou,
    load_mask,
    score_masks,
    slab_nsd,
    summary_lines,
    write_csv,
)

R = 40
SHIFTS = (3, 6, 12, 24)
# Reference numbers from the specification (two radius-40 disks shifted by d).
REF_SLAB_NSD = {3: 0.994, 6: 0.951, 12: 0.858, 24: 0.670}


def disk(cy: float, cx: float, r: float = R, shape=(200, 240)) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def lens_dice(r: float, d: float) -> float:
    """Analytic DSC of two radius-r disks whose centres are d apart."""
    if d >= 2 * r:
        return 0.0
    area = 2 * r * r * math.acos(d / (2 * r)) - 0.5 * d * math.sqrt(4 * r * r - d * d)
    return area / (math.pi * r * r)


def shifted_pair(d: int):
    gt = disk(100, 100)
    pred = disk(100, 100 + d)
    return pred, gt


def brute_slab_nsd(pred: np.ndarray, gt: np.ndarray, tol: float) -> float:
    """Slab-NSD straight from the definition: every voxel face as a 3D point, cKDTree."""

    def faces(mask):
        pts = []
        for i, j in zip(*np.nonzero(mask)):
            pts += [(i, j, 0.5), (i, j, -0.5)]
        pad = np.pad(mask, 1)
        h = np.nonzero(pad[1:, 1:-1] != pad[:-1, 1:-1])
        v = np.nonzero(pad[1:-1, 1:] != pad[1:-1, :-1])
        pts += [(k - 0.5, j, 0.0) for k, j in zip(*h)]
        pts += [(i, k - 0.5, 0.0) for i, k in zip(*v)]
        return np.array(pts, dtype=float)

    fp, fg = faces(pred), faces(gt)
    dp, _ = cKDTree(fg).query(fp)
    dg, _ = cKDTree(fp).query(fg)
    return ((dp <= tol + 1e-9).sum() + (dg <= tol + 1e-9).sum()) / (len(fp) + len(fg))


# ------------------------------------------------------------------------ known answers


def test_identical_disks_score_one():
    m = disk(100, 120)
    s = score_masks(m, m.copy(), name="same")
    assert (s.dsc, s.iou, s.nsd, s.slab_nsd) == (1.0, 1.0, 1.0, 1.0)
    assert s.case == "both_present" and s.name == "same"


@pytest.mark.parametrize("d", SHIFTS)
def test_shifted_disk_dice_matches_lens_area(d):
    pred, gt = shifted_pair(d)
    dsc = dice(pred, gt)
    assert dsc == pytest.approx(lens_dice(R, d), abs=0.01)
    assert iou(pred, gt) == pytest.approx(dsc / (2 - dsc), rel=1e-12)


def test_boundary_nsd_small_shift_matches_analytic():
    pred, gt = shifted_pair(3)
    analytic = 2 / math.pi * math.asin(2 / 3)
    assert boundary_nsd(pred, gt, tolerance=2.0) == pytest.approx(analytic, abs=0.06)


def test_boundary_nsd_decreases_with_shift_and_is_far_below_dice():
    values = [boundary_nsd(*shifted_pair(d), tolerance=2.0) for d in SHIFTS]
    assert all(a > b for a, b in zip(values, values[1:])), values
    for d, v in zip(SHIFTS, values):
        assert v < dice(*shifted_pair(d)) - 0.4


@pytest.mark.parametrize("d", SHIFTS)
def test_slab_nsd_close_to_reference(d):
    pred, gt = shifted_pair(d)
    s = slab_nsd(pred, gt, tolerance=2.0)
    assert s == pytest.approx(REF_SLAB_NSD[d], abs=0.05)
    if d in (3, 6, 12):
        assert s >= dice(pred, gt)


def test_slab_nsd_matches_brute_force_definition():
    rng = np.random.default_rng(0)
    for _k in range(6):
        pred = rng.random((17, 13)) > 0.6
        gt = rng.random((17, 13)) > 0.5
        for tol in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0):
            assert slab_nsd(pred, gt, tol) == pytest.approx(brute_slab_nsd(pred, gt, tol), abs=1e-12)
    pred, gt = shifted_pair(6)
    assert slab_nsd(pred, gt) == pytest.approx(brute_slab_nsd(pred, gt, 2.0), abs=1e-12)


def test_single_pixel_hand_computed():
    pred = np.zeros((12, 12), bool)
    gt = np.zeros((12, 12), bool)
    pred[5, 5] = True
    gt[5, 8] = True
    # only the facing edges (x=5.5 and x=7.5) are 2 px apart: 2 of 8 edges
    assert boundary_nsd(pred, gt, tolerance=2.0) == pytest.approx(0.25)
    # slab: 6 faces per voxel, only the facing side faces are within 2
    assert slab_nsd(pred, gt, tolerance=2.0) == pytest.approx(1 / 6)
    assert boundary_nsd(pred, gt, tolerance=1.9) == 0.0
    assert dice(pred, gt) == 0.0


def test_spacing_scales_tolerance():
    pred, gt = shifted_pair(6)
    a = boundary_nsd(pred, gt, tolerance=2.0, spacing=(1.0, 1.0))
    b = boundary_nsd(pred, gt, tolerance=4.0, spacing=(2.0, 2.0))
    assert a == pytest.approx(b, abs=1e-12)
    assert boundary_nsd(pred, gt, tolerance=2.0, spacing=(2.0, 2.0)) < a


def test_edge_touching_mask_counts_image_border_as_contour():
    m = np.zeros((10, 10), bool)
    m[:, :5] = True  # touches three image borders
    other = np.zeros((10, 10), bool)
    other[:, :6] = True
    assert boundary_nsd(m, other, tolerance=1.0) == 1.0
    assert 0.0 < boundary_nsd(m, other, tolerance=0.5) < 1.0


# ------------------------------------------------------------------------ empty cases


def test_both_empty():
    z = np.zeros((20, 20), bool)
    s = score_masks(z, z)
    assert (s.dsc, s.iou, s.nsd, s.slab_nsd, s.case) == (1.0, 1.0, 1.0, 1.0, "both_empty")
    assert dice(z, z) == iou(z, z) == boundary_nsd(z, z) == slab_nsd(z, z) == 1.0


def test_one_empty():
    z = np.zeros((50, 50), bool)
    m = disk(25, 25, 10, shape=(50, 50))
    s = score_masks(m, z)
    assert (s.dsc, s.iou, s.nsd, s.slab_nsd, s.case) == (0.0, 0.0, 0.0, 0.0, "gt_empty")
    s = score_masks(z, m)
    assert (s.dsc, s.iou, s.nsd, s.slab_nsd, s.case) == (0.0, 0.0, 0.0, 0.0, "pred_empty")
    assert boundary_nsd(z, m) == 0.0 and slab_nsd(m, z) == 0.0


def test_score_masks_resizes_prediction_nearest():
    gt = np.zeros((40, 60), bool)
    gt[10:20, 30:50] = True
    pred = np.zeros((20, 30), bool)
    pred[5:10, 15:25] = True
    s = score_masks(pred, gt)
    assert s.dsc == 1.0 and s.nsd == 1.0


def test_shape_mismatch_and_bad_input_raise():
    with pytest.raises(InputError, match="shape"):
        dice(np.zeros((4, 4), bool), np.zeros((5, 4), bool))
    with pytest.raises(InputError, match="2D"):
        boundary_nsd(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4), bool))
    with pytest.raises(InputError, match="tolerance"):
        boundary_nsd(np.ones((4, 4), bool), np.ones((4, 4), bool), tolerance=-1)


# ------------------------------------------------------------------------ files and folders


def save(path, mask, mode="L"):
    Image.fromarray((mask.astype(np.uint8) * 255)).convert(mode).save(path)


def test_load_mask_thresholds_and_channels(tmp_path):
    a = np.array([[0, 100, 128, 255]], np.uint8)
    Image.fromarray(a).save(tmp_path / "g.png")
    assert load_mask(tmp_path / "g.png").tolist() == [[False, False, True, True]]
    rgb = np.zeros((1, 4, 3), np.uint8)
    rgb[0, 2:, 0] = 200
    rgb[0, 1, 1] = 255  # second channel is ignored
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert load_mask(tmp_path / "c.png").tolist() == [[False, False, True, True]]
    b16 = np.array([[0, 1, 2, 0]], np.uint16)
    Image.fromarray(b16).save(tmp_path / "w.tif")
    assert load_mask(tmp_path / "w.tif").tolist() == [[False, True, True, False]]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.png"):
        load_mask(tmp_path / "bad.png")


def _write_folders(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    shape = (120, 140)
    gts = {
        "case_b": disk(60, 70, 30, shape),
        "case_a": disk(50, 60, 25, shape),
        "case_c": np.zeros(shape, bool),
    }
    preds = {
        "case_a": disk(50, 60, 25, shape),  # identical
        "case_b": disk(60, 76, 30, shape),  # shifted by 6
        "case_c": np.zeros(shape, bool),  # both empty
    }
    # Different extensions and creation orders on each side.
    for stem in ("case_c", "case_b", "case_a"):
        save(pred_dir / f"{stem}.png", preds[stem])
    save(pred_dir / "only_pred.png", disk(10, 10, 5, shape))
    (pred_dir / "notes.txt").write_text("ignored")
    for stem in ("case_a", "case_c", "case_b"):
        save(gt_dir / f"{stem}.tif", gts[stem])
    save(gt_dir / "only_gt.bmp", disk(10, 10, 5, shape))
    return pred_dir, gt_dir, preds, gts


def test_evaluate_folders_pairs_by_stem(tmp_path):
    pred_dir, gt_dir, preds, gts = _write_folders(tmp_path)
    report = evaluate_folders(pred_dir, gt_dir)
    assert [r.name for r in report.rows] == ["case_a", "case_b", "case_c"]
    assert report.count == 3
    assert report.unmatched_pred == ["only_pred.png"]
    assert report.unmatched_gt == ["only_gt.bmp"]
    a, b, c = report.rows
    assert (a.dsc, a.nsd, a.case) == (1.0, 1.0, "both_present")
    expected_b = score_masks(preds["case_b"], gts["case_b"], name="case_b")
    assert b == expected_b and b.dsc < 1.0
    assert c.case == "both_empty" and c.dsc == 1.0
    assert report.case_counts() == {"both_present": 2, "both_empty": 1, "gt_empty": 0, "pred_empty": 0}
    m = report.means()
    assert set(m) == {"dsc", "iou", "nsd", "slab_nsd"}
    assert m["dsc"] == pytest.approx((1.0 + b.dsc + 1.0) / 3)
    assert m["nsd"] == pytest.approx((1.0 + b.nsd + 1.0) / 3)


def test_pairing_ignores_listing_order(tmp_path, monkeypatch):
    pred_dir, gt_dir, _, _ = _write_folders(tmp_path)
    baseline = evaluate_folders(pred_dir, gt_dir)
    original = pathlib.Path.iterdir

    def scrambled(self):
        entries = sorted(original(self), key=lambda e: e.name)
        # prediction folder listed in reverse, ground-truth folder rotated
        return iter(entries[::-1] if self.name == "pred" else entries[1:] + entries[:1])

    monkeypatch.setattr(pathlib.Path, "iterdir", scrambled)
    report = evaluate_folders(pred_dir, gt_dir)
    assert report == baseline


def test_write_csv_and_summary(tmp_path):
    pred_dir, gt_dir, _, _ = _write_folders(tmp_path)
    report = evaluate_folders(pred_dir, gt_dir)
    out = tmp_path / "out" / "scores.csv"
    write_csv(report, out)
    with out.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["name", "dsc", "iou", "nsd", "slab_nsd", "case"]
    assert [r[0] for r in rows[1:]] == ["case_a", "case_b", "case_c"]
    for row, score in zip(rows[1:], report.rows):
        assert float(row[1]) == pytest.approx(score.dsc, abs=1e-6)
        assert float(row[3]) == pytest.approx(score.nsd, abs=1e-6)
        assert float(row[4]) == pytest.approx(score.slab_nsd, abs=1e-6)
        assert row[5] == score.case

    lines = summary_lines(report)
    m = report.means()
    assert lines[-1] == f"dsc={m['dsc']:.4f} iou={m['iou']:.4f} nsd={m['nsd']:.4f} n=3"
    assert re.fullmatch(r"dsc=\d\.\d{4} iou=\d\.\d{4} nsd=\d\.\d{4} n=3", lines[-1])
    text = "\n".join(lines)
    assert "only_pred.png" in text and "only_gt.bmp" in text
    assert "slab" in text.lower() and f"{m['slab_nsd']:.4f}" in text


def test_summary_of_handmade_report():
    rows = [
        MaskScores("x", 0.5, 1 / 3, 0.25, 0.6, "both_present"),
        MaskScores("y", 1.0, 1.0, 1.0, 1.0, "both_empty"),
    ]
    report = EvaluationReport(rows, [], [], 2.0)
    assert summary_lines(report)[-1] == "dsc=0.7500 iou=0.6667 nsd=0.6250 n=2"


def test_missing_folder_and_no_pairs(tmp_path):
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    save(gt_dir / "a.png", np.ones((4, 4), bool))
    with pytest.raises(InputError, match="prediction folder"):
        evaluate_folders(tmp_path / "nope", gt_dir)
    with pytest.raises(InputError, match="ground-truth folder"):
        evaluate_folders(gt_dir, tmp_path / "missing")
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    save(pred_dir / "b.png", np.ones((4, 4), bool))
    with pytest.raises(InputError, match=r"b\.png.*a\.png"):
        evaluate_folders(pred_dir, gt_dir)


def test_duplicate_stems_rejected(tmp_path):
    pred_dir, gt_dir = tmp_path / "p", tmp_path / "g"
    pred_dir.mkdir()
    gt_dir.mkdir()
    save(pred_dir / "a.png", np.ones((4, 4), bool))
    save(pred_dir / "a.tif", np.ones((4, 4), bool))
    save(gt_dir / "a.png", np.ones((4, 4), bool))
    with pytest.raises(InputError, match="same stem"):
        evaluate_folders(pred_dir, gt_dir)


def test_roc_auc_counts_ties_half_and_refuses_mismatched_labels():
    import math

    from medclipsam.errors import InputError
    from medclipsam.evaluation import roc_auc

    assert roc_auc([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == 0.875
    assert math.isnan(roc_auc([0.2, 0.3], [True, True]))
    with pytest.raises(InputError, match="one label per score"):
        roc_auc([0.1, 0.2, 0.3], [True, False])


# ---------------------------------------------------------------------------------------
# 3D: per-slice metrics of (slices, H, W) volumes (benchmarks/phantom_eval.py reports them)
# ---------------------------------------------------------------------------------------


def test_present_slice_dice_ignores_slices_without_the_target():
    from medclipsam.evaluation import present_slice_dice

    truth = np.zeros((4, 6, 6), bool)
    truth[1, :2, :2] = True  # 4 voxels on slice 1
    truth[2, :2, :2] = True  # 4 voxels on slice 2
    pred = np.zeros_like(truth)
    pred[1, :2, :2] = True  # matches slice 1
    pred[2, :1, :2] = True  # half of slice 2
    pred[0] = True  # a label on a target-free slice: not in this Dice
    assert present_slice_dice(pred, truth) == pytest.approx(2 * 6 / (6 + 8))
    assert present_slice_dice(pred.astype(np.uint8), truth.astype(np.uint8)) == pytest.approx(2 * 6 / 14)
    assert present_slice_dice(np.zeros_like(truth), np.zeros_like(truth)) == 1.0
    assert present_slice_dice(np.ones_like(truth), np.zeros_like(truth)) == 1.0


def test_false_positive_slices_counts_target_free_slices_given_a_label():
    from medclipsam.evaluation import false_positive_slices

    truth = np.zeros((5, 4, 4), bool)
    truth[2, 1, 1] = True
    pred = np.zeros_like(truth)
    pred[0, 0, 0] = pred[2, 3, 3] = pred[4, 2, 2] = True
    assert false_positive_slices(pred, truth) == 2
    assert false_positive_slices(truth, truth) == 0


def test_3d_metrics_refuse_2d_or_mismatched_volumes():
    from medclipsam.evaluation import false_positive_slices, present_slice_dice

    with pytest.raises(InputError, match="slices, H, W"):
        present_slice_dice(np.ones((4, 4), bool), np.ones((4, 4), bool))
    with pytest.raises(InputError, match="one shape"):
        false_positive_slices(np.ones((2, 4, 4), bool), np.ones((3, 4, 4), bool))
