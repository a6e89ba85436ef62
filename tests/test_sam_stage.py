"""The SAM stage: one image embedding per image, prompts reach SAM in (x, y) order, union, keep-K."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medclipsam.prompts import VisualPrompts
from medclipsam.sam_stage import SamSegmenter, SamStageConfig


@pytest.fixture
def segmenter(tiny_sam, disk_image):
    s = SamSegmenter(tiny_sam)
    s.set_image(disk_image)
    return s


def test_image_embedding_computed_once_for_many_prompts(tiny_sam, disk_image):
    calls = []
    h = tiny_sam.model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        s = SamSegmenter(tiny_sam)
        s.set_image(disk_image)
        for prompts in (VisualPrompts(boxes=[[80, 20, 120, 60]], num_components=1),
                        VisualPrompts(boxes=[[0, 0, 30, 30], [80, 20, 120, 60]], num_components=2),
                        VisualPrompts(points=[[100, 40]], point_labels=[1], num_components=1)):
            s.segment(prompts)
    finally:
        h.remove()
    assert len(calls) == 1


def test_boxes_and_points_reach_sam_in_xy_order(segmenter, disk_image):
    """SAM's prompt encoder must receive our (x, y) pixel coordinates scaled to its input size."""
    seen = {}
    pe = segmenter.predictor.model.prompt_encoder
    original = pe.forward

    def spy(points, boxes, masks):
        seen["points"], seen["boxes"] = points, boxes
        return original(points, boxes, masks)

    pe.forward = spy
    try:
        segmenter.segment(VisualPrompts(boxes=[[90, 22, 130, 58]], points=[[100, 40], [5, 80]],
                                        point_labels=[1, 0], num_components=1))
    finally:
        del pe.forward
    scale = segmenter.predictor.model.image_encoder.img_size / max(disk_image.shape[:2])  # longest side → 256
    box = seen["boxes"][0].cpu().numpy()
    assert np.allclose(box, np.array([90, 22, 130, 58]) * scale, atol=1e-3)
    coords, labels = seen["points"]
    assert np.allclose(coords[0].cpu().numpy(), np.array([[100, 40], [5, 80]]) * scale, atol=1e-3)
    assert labels[0].tolist() == [1, 0]


def test_empty_prompts_give_empty_mask(segmenter, disk_image):
    out = segmenter.segment(VisualPrompts.none())
    assert out.mask.shape == disk_image.shape[:2] and not out.mask.any() and out.num_masks == 0


def test_union_of_masks_and_keep_k_components(segmenter, tiny_sam, disk_image, monkeypatch):
    """Replace SAM's decoder output by known masks and check union + keep-K-largest."""
    h, w = disk_image.shape[:2]
    m = torch.zeros(3, 1, h, w, dtype=torch.bool)
    m[0, 0, 5:15, 5:15] = True      # 100 px
    m[1, 0, 40:70, 60:120] = True   # 1800 px
    m[2, 0, 80:85, 150:155] = True  # 25 px
    iou = torch.tensor([[0.5], [0.9], [0.7]])
    monkeypatch.setattr(segmenter.predictor, "predict_torch", lambda *a, **k: (m, iou, None))
    boxes = [[0, 0, 1, 1]] * 3
    out = segmenter.segment(VisualPrompts(boxes=boxes, num_components=3), SamStageConfig())
    assert out.mask.sum() == 100 + 1800 + 25 and out.num_masks == 3
    out = segmenter.segment(VisualPrompts(boxes=boxes, num_components=1), SamStageConfig())
    assert out.mask.sum() == 1800
    out = segmenter.segment(VisualPrompts(boxes=boxes, num_components=1), SamStageConfig(keep_components=False))
    assert out.mask.sum() == 1925


def test_multimask_keeps_best_scoring_mask_per_prompt(segmenter, disk_image, monkeypatch):
    h, w = disk_image.shape[:2]
    m = torch.zeros(1, 3, h, w, dtype=torch.bool)
    m[0, 0, :10] = True
    m[0, 1, 20:30] = True
    m[0, 2, 50:] = True
    iou = torch.tensor([[0.2, 0.95, 0.4]])
    calls = {}

    def fake(*a, **k):
        calls["multimask"] = k["multimask_output"]
        return m, iou, None

    monkeypatch.setattr(segmenter.predictor, "predict_torch", fake)
    out = segmenter.segment(VisualPrompts(boxes=[[0, 0, 5, 5]], num_components=1), SamStageConfig(multimask=True))
    assert calls["multimask"] is True
    assert out.mask[20:30].all() and out.mask.sum() == 10 * w and out.scores == [pytest.approx(0.95)]


def test_real_tiny_sam_returns_full_resolution_masks(segmenter, disk_image):
    for prompts in (VisualPrompts(boxes=[[80, 20, 120, 60]], num_components=1),
                    VisualPrompts(points=[[100, 40]], point_labels=[1], num_components=1),
                    VisualPrompts(boxes=[[80, 20, 120, 60]], points=[[100, 40]], point_labels=[1], num_components=1)):
        out = segmenter.segment(prompts, SamStageConfig(multimask=True))
        assert out.mask.shape == disk_image.shape[:2] and out.mask.dtype == bool


def test_box_clip_cuts_each_mask_to_its_own_grown_box(segmenter, disk_image, monkeypatch):
    """A box prompt says the target lies inside it: with ``box_clip`` a mask that spills far out of its
    box is cut to the box grown by that fraction of its sides; off (-1) by default."""
    h, w = disk_image.shape[:2]
    m = torch.zeros(2, 1, h, w, dtype=torch.bool)
    m[0, 0, 10:60, 10:60] = True                   # spills out of box 0 = [20, 20, 40, 40]
    m[1, 0, 70:80, 100:110] = True                 # inside box 1 = [95, 65, 115, 85]
    monkeypatch.setattr(segmenter.predictor, "predict_torch", lambda *a, **k: (m, torch.ones(2, 1), None))
    prompts = VisualPrompts(boxes=[[20, 20, 40, 40], [95, 65, 115, 85]], num_components=2)
    assert segmenter.segment(prompts).mask.sum() == 2500 + 100
    out = segmenter.segment(prompts, SamStageConfig(box_clip=0.0)).mask
    assert out[20:41, 20:41].all() and out.sum() == 21 * 21 + 100       # box 0 inclusive, box 1 untouched
    out = segmenter.segment(prompts, SamStageConfig(box_clip=0.25)).mask   # grown by 5 px each side
    assert out[15:46, 15:46].all() and out.sum() == 31 * 31 + 100
    cut = segmenter.segment(VisualPrompts(boxes=[[0, 0, 70, 70], [20, 20, 40, 40]], num_components=2),
                            SamStageConfig(box_clip=0.0)).mask
    assert cut.sum() == 2500                       # each mask is cut by its own box, not by the union of boxes


@pytest.mark.parametrize("bad", [-0.5, 1.5, True, "0.1"])
def test_box_clip_rejects_values_outside_its_range(bad):
    with pytest.raises(Exception, match="sam.box_clip"):
        SamStageConfig(box_clip=bad)
    with pytest.raises(Exception, match="sam.coarse_clip"):
        SamStageConfig(coarse_clip=bad)


def test_coarse_clip_cuts_the_mask_to_the_grown_coarse_mask(segmenter, disk_image, monkeypatch):
    """With ``coarse_clip`` SAM's mask keeps only pixels within the margin (a fraction of the image's
    longer side, in whole pixels) of the coarse mask; off (-1) by default."""
    h, w = disk_image.shape[:2]
    m = torch.zeros(1, 1, h, w, dtype=torch.bool)
    m[0, 0, 10:60, 10:60] = True
    monkeypatch.setattr(segmenter.predictor, "predict_torch", lambda *a, **k: (m, torch.ones(1, 1), None))
    coarse = np.zeros((h, w), bool)
    coarse[20:40, 20:40] = True
    prompts = VisualPrompts(boxes=[[10, 10, 59, 59]], num_components=1)
    assert segmenter.segment(prompts, coarse_mask=coarse).mask.sum() == 2500        # off: SAM's mask as it is
    out = segmenter.segment(prompts, SamStageConfig(coarse_clip=0.0), coarse_mask=coarse).mask
    assert np.array_equal(out, coarse)
    px = 3
    cfg = SamStageConfig(coarse_clip=px / max(h, w))
    assert cfg.coarse_margin_px((h, w)) == px
    out = segmenter.segment(prompts, cfg, coarse_mask=coarse).mask
    dist = ndimage.distance_transform_edt(~coarse)
    assert np.array_equal(out, m[0, 0].numpy() & (dist <= px))
    assert out[17:43, 20:40].all() and not out[16, 30] and out.sum() < 26 * 26      # 3 px on each side, rounded corners
    with pytest.raises(Exception, match="coarse mask"):                              # on, but nothing to cut to
        segmenter.segment(prompts, cfg)
    with pytest.raises(Exception, match="coarse mask"):
        segmenter.segment(prompts, cfg, coarse_mask=coarse[:-1])


def test_pipeline_and_volume_engine_hand_sam_their_coarse_mask(tiny_clip, tiny_sam, disk_image):
    """Both callers of the SAM stage pass the coarse mask they made, so coarse_clip works in
    ``segment`` (2D) and ``segment-series`` (volume engine) alike."""
    from medclipsam.config import PipelineConfig
    from medclipsam.pipeline import Pipeline
    from medclipsam.volume import ArrayVolume
    from medclipsam.volume.engine import VolumeConfig, VolumePipeline
    from medclipsam.volume.presence import PresenceConfig

    cfg = PipelineConfig.from_preset("v2", {"m2ib.layer": "2", "m2ib.steps": "3", "m2ib.samples": "2",
                                            "sam.coarse_clip": "0"})
    pipe = Pipeline(tiny_clip, tiny_sam, cfg)
    seen = []
    real = pipe.segmenter.segment

    def spy(prompts, sam_cfg=None, coarse_mask=None):
        seen.append(coarse_mask)
        return real(prompts, sam_cfg, coarse_mask=coarse_mask)

    pipe.segmenter.segment = spy
    res = pipe.segment(disk_image, "bright disk")
    assert res.found and len(seen) == 1 and np.array_equal(seen[0], res.coarse_mask)
    assert res.mask.any() and not (res.mask & ~res.coarse_mask.astype(bool)).any()
    from medclipsam.geometry import Geometry

    vol = np.repeat(disk_image[None, ..., 0].astype(np.float32), 3, axis=0)
    src = ArrayVolume(vol, Geometry(vol.shape), modality="OT")
    seen.clear()
    VolumePipeline(pipe, VolumeConfig(presence=PresenceConfig(enabled=False))).run(src, ["bright disk"])
    assert seen and all(c is not None and c.shape == disk_image.shape[:2] for c in seen)


def test_one_box_convention_from_every_producer_to_box_clip(segmenter, disk_image, monkeypatch):
    """Boxes name their first and last pixel (inclusive), as segment-anything's batched_mask_to_box:
    a mask on columns 3..7 and rows 2..5 is the box [3, 2, 7, 5] whoever makes it, and box_clip reads
    it the same way (the box itself at 0; grown by the fraction × (x1 - x0) / (y1 - y0) otherwise)."""
    from segment_anything.utils.amg import batched_mask_to_box

    from medclipsam.prompts import PromptConfig, boxes_of_components, make_visual_prompts, mask_box
    from medclipsam.volume.propagation import mask_boxes

    h, w = disk_image.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[2:6, 3:8] = True
    expected = [[3, 2, 7, 5]]
    assert batched_mask_to_box(torch.as_tensor(mask)[None]).tolist() == expected
    for kind in ("boxes", "box", "boxes+points"):
        assert make_visual_prompts(mask, PromptConfig(kind=kind)).boxes.tolist() == expected, kind
    assert mask_boxes(mask).tolist() == expected
    assert [mask_box(mask)] == expected
    assert boxes_of_components(mask.astype(np.int32)).tolist() == expected

    everywhere = torch.ones(1, 1, h, w, dtype=torch.bool)
    monkeypatch.setattr(segmenter.predictor, "predict_torch", lambda *a, **k: (everywhere, torch.ones(1, 1), None))
    prompts = VisualPrompts(boxes=expected, num_components=1)
    assert np.array_equal(segmenter.segment(prompts, SamStageConfig(box_clip=0.0)).mask, mask)
    grown = np.zeros((h, w), bool)
    grown[1:7, 1:10] = True                  # x: 3 - 0.5·4 .. 7 + 0.5·4; y: 2 - 0.5·3 .. 5 + 0.5·3
    assert np.array_equal(segmenter.segment(prompts, SamStageConfig(box_clip=0.5)).mask, grown)
