"""Volume geometry, series rendering, the presence gate, 3D consistency and the slice engine."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from medclipsam.errors import ConfigError, InputError
from medclipsam.volume import ArrayVolume, Geometry, geometry_from_positions
from medclipsam.volume.consistency import (
    ArrayMaskStack,
    ConsistencyConfig,
    components_3d,
    enforce_consistency,
    fill_gaps,
)
from medclipsam.volume.engine import (
    BitLabels,
    VolumeConfig,
    VolumePipeline,
    fit_batch_size,
    parse_roi,
    parse_slice_range,
)
from medclipsam.volume.presence import (
    CALIBRATION_FILE,
    PresenceConfig,
    confident_slices,
    model_presence_threshold,
    relative_split,
    saliency_gate,
    similarity_gate,
)
from medclipsam.volume.render import choose_window, render_slice


# ---------------------------------------------------------------- geometry
def test_geometry_from_positions_regular_stack():
    pos = [(10.0, -5.0, 2.5 * k) for k in (0, 1, 2, 3)]
    g = geometry_from_positions(4, 6, (1, 0, 0), (0, 1, 0), (0.5, 0.7), pos)
    assert g.shape == (4, 4, 6) and g.regular
    assert g.spacing == pytest.approx((0.7, 0.5, 2.5))
    assert g.origin == (10.0, -5.0, 0.0)
    a = g.affine_lps()
    assert np.allclose(a @ [2, 3, 1, 1], [10 + 1.4, -5 + 1.5, 2.5, 1])
    assert np.allclose(g.affine_ras()[:2], -a[:2]) and np.allclose(g.affine_ras()[2:], a[2:])
    assert np.allclose(g.slice_position(3), pos[3])
    sub = g.with_slices(1, 3)
    assert sub.shape == (2, 4, 6) and np.allclose(sub.origin, pos[1])


def test_geometry_oblique_direction_follows_slice_order():
    r, c = np.array([1.0, 0, 0]), np.array([0, np.cos(0.3), np.sin(0.3)])
    normal = np.cross(r, c)
    pos = [tuple(5 * k * normal) for k in range(3)]
    g = geometry_from_positions(2, 2, r, c, (1, 1), pos)
    d = g.direction_matrix()
    assert np.allclose(d[:, 0], r) and np.allclose(d[:, 1], c) and np.allclose(d[:, 2], normal)
    assert g.spacing[2] == pytest.approx(5.0)


@pytest.mark.parametrize("z, word", [([0, 2, 4, 8, 10], "missing slices"), ([0, 2, 4.6, 6.6, 8.6], "non-uniform")])
def test_geometry_flags_irregular_spacing(z, word):
    g = geometry_from_positions(2, 2, (1, 0, 0), (0, 1, 0), (1, 1), [(0, 0, v) for v in z])
    assert not g.regular and word in g.irregular_reason
    assert g.slice_position(3) == (0.0, 0.0, float(z[3]))        # per-slice positions are kept


def test_geometry_flags_gantry_tilt_and_refuses_duplicates():
    g = geometry_from_positions(2, 2, (1, 0, 0), (0, 1, 0), (1, 1), [(0, 0.5 * k, 2.0 * k) for k in range(4)])
    assert not g.regular and "tilt" in g.irregular_reason
    with pytest.raises(ValueError, match="share one position"):
        geometry_from_positions(2, 2, (1, 0, 0), (0, 1, 0), (1, 1), [(0, 0, 0), (0, 0, 0)])


# ---------------------------------------------------------------- rendering
def _ct(n=6, size=32, fill=-1000.0) -> ArrayVolume:
    a = np.full((n, size, size), fill, np.float32)
    a[:, 8:24, 8:24] = 40.0
    return ArrayVolume(a, Geometry((n, size, size)), modality="CT")


@pytest.mark.parametrize("prompt, preset", [("left lung", "ct-lung"), ("pulmonary nodule", "ct-lung"),
                                            ("brain haemorrhage", "ct-brain"), ("rib fracture", "ct-bone"),
                                            ("liver", "ct-soft-tissue")])
def test_ct_window_chosen_from_prompt(prompt, preset):
    w = choose_window(_ct(), [prompt])
    assert w.preset == preset


def test_window_is_per_series_not_per_slice():
    vol = _ct()
    vol.array[3] += 100.0                           # one brighter slice
    w = choose_window(vol, ["liver"])
    a, b = render_slice(vol.read_slice(0), w), render_slice(vol.read_slice(3), w)
    # the same HU gives the same grey on every slice; 140 HU is brighter than 40 HU
    assert a[16, 16, 0] == round((40 + 160) / 400 * 255) and b[16, 16, 0] > a[16, 16, 0]
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)


def test_mr_percentile_and_unlabelled_hu_volume():
    rng = np.random.default_rng(0)
    mr = ArrayVolume(rng.uniform(0, 1000, (5, 32, 32)).astype(np.float32), Geometry((5, 32, 32)), modality="MR")
    w = choose_window(mr, ["tumour"])
    assert w.preset == "mr-percentile" and 0 <= w.low < 20 and 980 < w.high <= 1000
    unlabelled = _ct()
    unlabelled.modality = "OT"
    assert choose_window(unlabelled, ["lung"]).preset == "ct-lung"     # values look like HU


def test_rgb_and_8bit_as_stored_and_monochrome1_inverted():
    rgb = ArrayVolume(np.full((1, 8, 8, 3), 7, np.uint8), Geometry((1, 8, 8)), modality="US")
    w = choose_window(rgb, ["mass"])
    assert w.low is None and render_slice(rgb.read_slice(0), w)[0, 0, 0] == 7
    dx = ArrayVolume(np.full((1, 8, 8), 50.0, np.float32), Geometry((1, 8, 8)), modality="DX")
    dx.photometric = "MONOCHROME1"
    w = choose_window(dx, ["lungs"])
    assert w.invert and render_slice(dx.read_slice(0), w)[0, 0, 0] == 255 - 50


def test_user_window_and_missing_dicom_window():
    vol = _ct()
    assert choose_window(vol, ["liver"], "ct-bone").preset == "ct-bone"
    with pytest.raises(ConfigError, match="no WindowCenter"):
        choose_window(vol, ["liver"], "dicom")
    with pytest.raises(ConfigError, match="unknown window preset"):
        choose_window(vol, ["liver"], "ct-foot")


# ---------------------------------------------------------------- presence gate
def test_similarity_gate_modes():
    s = np.array([0.1, 0.12, 0.11, 0.30, 0.31, 0.29, 0.1])
    user = similarity_gate(s, PresenceConfig(threshold=0.2))
    assert user.mode == "user" and user.present.tolist() == [False, False, False, True, True, True, False]
    cal = similarity_gate(s, PresenceConfig(), calibrated=0.305)
    assert cal.mode == "model calibration" and cal.present.sum() == 1
    rel = similarity_gate(s, PresenceConfig())
    assert rel.mode == "series-relative split" and rel.present.tolist() == user.present.tolist()
    assert "cannot tell a target absent" in rel.note
    # one group (a normal or uniform spread) is not split: Otsu halves of those are < 4 pooled std apart
    rng = np.random.default_rng(0)
    flat = similarity_gate(rng.normal(0.3, 0.02, 60), PresenceConfig())
    assert flat.mode == "all slices"
    flat = similarity_gate(rng.uniform(0.2, 0.3, 60), PresenceConfig())
    assert flat.mode == "all slices" and flat.present.all() and "--presence-threshold" in flat.note
    off = similarity_gate(s, PresenceConfig(enabled=False, threshold=0.9))
    assert off.mode == "disabled" and off.present.all()


def test_relative_split_needs_separation_and_gap():
    t, sep = relative_split(np.array([0.2, 0.2001, 0.2, 0.2001]), 4.0, min_gap=0.005)
    assert t is None                                      # separated, but by a negligible cosine
    t, sep = relative_split(np.array([0.1, 0.1, 0.1, 0.3, 0.3]), 4.0, min_gap=0.005)
    assert t is not None and 0.1 < t <= 0.3


def test_presence_threshold_must_be_a_cosine():
    with pytest.raises(ConfigError, match="cosine"):
        PresenceConfig(threshold=3.0)


def test_saliency_gate_and_confident_slices():
    peaks = np.array([1.0, 0.05, np.nan, 0.5])
    cand = np.array([True, True, False, True])
    assert saliency_gate(peaks, cand, 0.2).tolist() == [True, False, False, True]
    assert saliency_gate(peaks, cand, 0.0).tolist() == cand.tolist()
    conf = confident_slices(np.array([0.1, 0.5, 0.3, 0.9]), np.array([False, True, True, True]))
    assert conf.tolist() == [False, True, False, True]


def test_model_calibration_file(tmp_path):
    class FakeClip:
        spec = f"local-dir:{tmp_path}"

    assert model_presence_threshold(FakeClip()) is None
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"presence_threshold": 0.27}))
    assert model_presence_threshold(FakeClip()) == pytest.approx(0.27)
    (tmp_path / CALIBRATION_FILE).write_text("{}")
    with pytest.raises(ConfigError, match="presence_threshold"):
        model_presence_threshold(FakeClip())


# ---------------------------------------------------------------- 3D consistency
def test_fill_gaps_uses_the_intersection_of_neighbours():
    a = np.zeros((5, 8, 8), bool)
    a[0, 1:5, 1:5] = True
    a[2, 2:6, 2:6] = True
    a[4, 6:8, 6:8] = True                                # no overlap with slice 2: its gap stays empty
    filled = fill_gaps(ArrayMaskStack(a), 1)
    assert filled == [1]
    assert a[1].sum() == 9 and a[1, 2:5, 2:5].all()
    assert not a[3].any()


def test_streaming_components_match_scipy_3d_labelling():
    rng = np.random.default_rng(3)
    a = rng.random((7, 20, 20)) > 0.8
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    structure[0, 1, 1] = structure[2, 1, 1] = True
    ref, count = ndimage.label(a, structure=structure)
    comps = components_3d(ArrayMaskStack(a.copy()))
    assert len(comps.roots) == count
    assert sorted(comps.size[comps.roots].tolist()) == sorted(np.bincount(ref.ravel())[1:].tolist())


def test_keep_supported_and_largest_components():
    a = np.zeros((6, 10, 10), bool)
    a[0:3, 1:4, 1:4] = True            # 27 voxels, reaches confident slice 1
    a[4:6, 6:10, 6:10] = True          # 32 voxels, never confident
    confident = np.array([False, True, False, False, False, False])
    b = a.copy()
    rep = enforce_consistency(ArrayMaskStack(b), ConsistencyConfig(fill_gaps=0, keep="supported"), confident)
    assert rep.components == 2 and rep.kept_components == 1 and rep.removed_voxels == 32
    assert b[0:3].sum() == 27 and not b[4:].any()
    c = a.copy()
    enforce_consistency(ArrayMaskStack(c), ConsistencyConfig(fill_gaps=0, keep="largest", num_components=1), None)
    assert not c[0:3].any() and c[4:].sum() == 32
    with pytest.raises(ConfigError, match="unknown 3D component rule"):
        ConsistencyConfig(keep="biggest")


def test_bit_labels_multi_label_with_overlap():
    bl = BitLabels((2, 4, 4))
    s0, s1 = bl.stack(0), bl.stack(1)
    m = np.zeros((4, 4), bool)
    m[:2] = True
    s0.set(0, m)
    s1.or_region(0, slice(1, 3), slice(0, 4), np.ones((2, 4), bool))
    assert s0.get(0).sum() == 8 and s1.get(0).sum() == 8 and not s1.any(1)
    labels, overlaps = bl.to_label_map()
    # same size (8 voxels each): the earlier prompt keeps the 4 shared voxels
    assert [(o.first, o.second, o.voxels, o.kept, o.sizes) for o in overlaps] == [(0, 1, 4, 0, (8, 8))]
    assert (labels[0, :2] == 1).all() and (labels[0, 2] == 2).all() and (labels[0, 3] == 0).all()


@pytest.mark.parametrize("small_first", [True, False])
def test_bit_labels_a_small_blob_inside_a_big_one_survives_in_either_order(small_first):
    big = np.zeros((4, 12, 12), bool)
    big[:, 1:11, 1:11] = True                            # 400 voxels
    small = np.zeros_like(big)
    small[1:3, 4:7, 4:7] = True                          # 18 voxels, all inside the big one
    third = np.zeros_like(big)
    third[3, 0:2, 0:12] = True                           # 24 voxels, 10 of them inside the big one
    order = [small, big, third] if small_first else [big, small, third]
    bl = BitLabels(big.shape)
    for bit, mask in enumerate(order):
        stack = bl.stack(bit)
        for k in range(len(mask)):
            stack.or_region(k, slice(0, 12), slice(0, 12), mask[k])
    assert bl.bit_counts()[0][:3].tolist() == [int(m.sum()) for m in order]
    labels, overlaps = bl.to_label_map()
    s_label, b_label = (1, 2) if small_first else (2, 1)
    assert (labels[small] == s_label).all()              # the whole small blob keeps its label
    assert (labels[big & ~small & ~third] == b_label).all()
    assert (labels[third] == 3).all() and not labels[~(big | third)].any()
    got = {(o.first, o.second): (o.voxels, o.kept) for o in overlaps}
    assert got == {(0, 1): (18, s_label - 1), (b_label - 1, 2): (10, 2)}


def test_overlap_is_reported_with_the_label_that_kept_it():
    from medclipsam.volume.engine import Overlap, VolumeResult

    r = VolumeResult(np.zeros((1, 2, 2), np.uint8), Geometry((1, 2, 2), (1, 1, 1), (0, 0, 0)), [], None, 1, 1, 0,
                     {}, overlaps=[Overlap(0, 1, 7, 1, (900, 40))])
    assert r.overlap_report() == [{"labels": [1, 2], "voxels": 7, "kept_label": 2, "sizes": [900, 40],
                                   "rule": "the smaller target"}]
    app = r.overlap_report(values=[1, 4], names=["lungs", "tumor"])
    assert app[0]["labels"] == [1, 4] and app[0]["kept_label"] == 4 and app[0]["kept_name"] == "tumor"


# ---------------------------------------------------------------- slice engine (tiny random models)
class CountingVolume(ArrayVolume):
    reads: int = 0

    def read_slice(self, k):
        self.reads += 1
        return super().read_slice(k)


def _phantom(n=8, size=48) -> CountingVolume:
    a = np.full((n, size, size), -1000.0, np.float32)
    a[:, 8:40, 8:40] = 0.0
    a[2:6, 18:30, 18:30] = 80.0
    return CountingVolume(a, Geometry((n, size, size), (0.7, 0.7, 3.0), (1.0, 2.0, 3.0)), modality="CT")


def test_engine_absolute_threshold_above_everything_processes_nothing(tiny_pipeline):
    vol = _phantom()
    r = VolumePipeline(tiny_pipeline, VolumeConfig(presence=PresenceConfig(threshold=1.0))).run(vol, ["lesion"])
    assert (r.slices, r.processed, r.gated) == (8, 0, 8)
    assert r.labels.shape == (8, 48, 48) and not r.labels.any()
    assert vol.reads <= 8 + 3          # the similarity pass (+ window sampling); nothing else was read
    assert r.prompts[0].gate.mode == "user"


def test_engine_runs_every_slice_without_gate_and_is_reproducible(tiny_pipeline):
    cfg = VolumeConfig(presence=PresenceConfig(enabled=False), consistency=ConsistencyConfig(enabled=False))
    r1 = VolumePipeline(tiny_pipeline, cfg).run(_phantom(), ["lesion"])
    r2 = VolumePipeline(tiny_pipeline, cfg).run(_phantom(), ["lesion"])
    assert (r1.slices, r1.processed, r1.gated) == (8, 8, 0)
    assert all(rec.raw_saliency_peak is not None for rec in r1.prompts[0].records)
    assert np.array_equal(r1.labels, r2.labels)                       # seeded per slice
    assert r1.geometry.same_grid(_phantom().geometry)
    found = [rec.index for rec in r1.prompts[0].records if rec.found]
    assert set(np.flatnonzero(r1.labels.reshape(8, -1).any(axis=1))) == set(found)


def test_engine_slice_range_and_roi_leave_the_rest_empty(tiny_pipeline):
    cfg = VolumeConfig(presence=PresenceConfig(enabled=False), slice_range=(2, 5), roi=(10, 12, 40, 44))
    r = VolumePipeline(tiny_pipeline, cfg).run(_phantom(), ["lesion"])
    assert r.slices == 3 and [rec.index for rec in r.prompts[0].records] == [2, 3, 4]
    assert not r.labels[:2].any() and not r.labels[5:].any()
    outside = r.labels.copy()
    outside[:, 12:44, 10:40] = 0
    assert not outside.any()
    assert r.labels.any()                                              # random SAM still paints something


def test_engine_multi_label(tiny_pipeline):
    cfg = VolumeConfig(presence=PresenceConfig(enabled=False))
    r = VolumePipeline(tiny_pipeline, cfg).run(_phantom(), ["lesion", ["body", "soft tissue"]])
    assert [p.label for p in r.prompts] == [1, 2] and r.prompts[1].name == "body | soft tissue"
    assert set(np.unique(r.labels)) <= {0, 1, 2}
    assert sum(p.voxels for p in r.prompts) == int(np.count_nonzero(r.labels))
    summary = r.summary()
    json.dumps(summary)
    assert summary["slices"] == 8 and len(summary["prompts"][0]["per_slice"]) == 8


def test_engine_keeps_two_components_for_lungs_and_one_for_a_lesion(tiny_pipeline, monkeypatch):
    import medclipsam.pipeline as chain_module  # the per-slice chain the engine calls

    seen: set[int] = set()
    real = chain_module.make_coarse_mask

    def spy(saliency_map, rgb, cfg):
        seen.add(cfg.num_components)
        return real(saliency_map, rgb, cfg)

    monkeypatch.setattr(chain_module, "make_coarse_mask", spy)
    cfg = VolumeConfig(presence=PresenceConfig(enabled=False), consistency=ConsistencyConfig(enabled=False))
    VolumePipeline(tiny_pipeline, cfg).run(_phantom(), ["lungs"])
    assert seen == {2}                               # preset v2: K = 2 for a paired structure
    seen.clear()
    VolumePipeline(tiny_pipeline, cfg).run(_phantom(), ["lesion", "lungs"])
    assert seen == {1, 2}                            # each prompt its own K in one run


def test_engine_renders_each_prompt_in_its_window(tiny_pipeline):
    cfg = VolumeConfig(presence=PresenceConfig(enabled=False))
    r = VolumePipeline(tiny_pipeline, cfg).run(_phantom(), ["lesion", "left lung", "liver"])
    assert [p.window.preset for p in r.prompts] == ["ct-soft-tissue", "ct-lung", "ct-soft-tissue"]
    # every prompt got its own similarity on every slice, whichever window group it was in
    assert all(len(p.records) == 8 and all(rec.similarity != 0.0 for rec in p.records) for p in r.prompts)
    one = VolumePipeline(tiny_pipeline, cfg).run(_phantom(), ["left lung"])
    assert [rec.similarity for rec in one.prompts[0].records] == pytest.approx(
        [rec.similarity for rec in r.prompts[1].records], abs=1e-5)
    forced = VolumePipeline(tiny_pipeline, cfg).run(_phantom(), ["lesion", "left lung"], window="ct-bone")
    assert {p.window.preset for p in forced.prompts} == {"ct-bone"}


def test_engine_bad_requests(tiny_pipeline):
    engine = VolumePipeline(tiny_pipeline)
    with pytest.raises(InputError, match="empty"):
        engine.run(_phantom(), ["  "])
    with pytest.raises(InputError, match="at most 8"):
        engine.run(_phantom(), [f"p{i}" for i in range(9)])
    with pytest.raises(ConfigError, match="outside"):
        VolumePipeline(tiny_pipeline, VolumeConfig(slice_range=(5, 20))).run(_phantom(), ["lesion"])
    with pytest.raises(ConfigError, match="outside"):
        VolumePipeline(tiny_pipeline, VolumeConfig(roi=(0, 0, 100, 10))).run(_phantom(), ["lesion"])


def test_parsers_and_batch_fitting():
    assert parse_slice_range("3:9") == (3, 9) and parse_slice_range(":4") == (0, 4)
    assert parse_slice_range("2:") == (2, -1)
    assert parse_roi("1,2,30,40") == (1, 2, 30, 40)
    for bad in ("3", "a:b"):
        with pytest.raises(ConfigError):
            parse_slice_range(bad)
    with pytest.raises(ConfigError):
        parse_roi("1,2,3")
    assert fit_batch_size(10 * 2**30, 2**30, 16) == 5
    assert fit_batch_size(2**20, 2**30, 16) == 1 and fit_batch_size(2**40, 2**30, 16) == 16


def test_batched_sam_embedding_equals_set_image(tiny_sam):
    from medclipsam.sam_stage import SamSegmenter

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (40, 56, 3), dtype=np.uint8) for _ in range(2)]
    seg = SamSegmenter(tiny_sam)
    batch = seg.encode(imgs)
    for img, emb in zip(imgs, batch):
        seg.set_image(img)
        assert torch.allclose(seg.predictor.features, emb.features, atol=1e-5)
        assert emb.original_size == (40, 56)


def test_inspected_slices_keep_every_stage_and_render_a_montage(tiny_pipeline):
    from medclipsam.volume.montage import render_montage

    vol = _phantom()
    gated = VolumePipeline(tiny_pipeline, VolumeConfig(inspect=3, presence=PresenceConfig(threshold=-1.0)))
    r = gated.run(vol, ["lesion"])
    assert len(r.details) == 3 and all(d.present and d.saliency_map is not None for d in r.details)
    assert [d.index for d in r.details] == [0, 4, 7]                        # evenly spread over present slices
    d = r.details[1]
    assert d.rgb.shape == (48, 48, 3) and d.coarse_mask.shape == (48, 48) and d.mask.dtype == bool
    # the kept SAM mask is the slice's mask before 3D consistency: it contains what the label kept
    assert not (r.labels[d.index].astype(bool) & ~d.mask).any()
    montage = render_montage(r, banner=["demo"], width=300)
    assert montage.dtype == np.uint8 and montage.shape[1] == 300 and montage.shape[0] > 3 * 100
    absent = VolumePipeline(tiny_pipeline, VolumeConfig(inspect=2, presence=PresenceConfig(threshold=1.0))).run(
        vol, ["lesion"])
    assert len(absent.details) == 1 and not absent.details[0].present and absent.details[0].saliency_map is None
    assert render_montage(absent).shape[1] == 900
    with pytest.raises(ValueError, match="inspect"):
        render_montage(VolumePipeline(tiny_pipeline, VolumeConfig(presence=PresenceConfig(threshold=1.0))).run(
            vol, ["lesion"]))


# ---------------------------------------------------------------- overlaps with the demo models (issue 21)
PHANTOM_SERIES = "sample-data/phantoms/ct_chest"
PHANTOM_TRUTH = "sample-data/phantoms/ct_chest_labels.nii.gz"     # 1 tumor, 2 left lung, 3 right lung
TUMOUR_RANGE = (12, 21)                                            # the tumour (slices 14–18) and its neighbours


@pytest.fixture(scope="module")
def demo_pipeline():
    from medclipsam.demo import DEMO_CLIP, DEMO_SAM, check_demo_models, demo_pipeline_config
    from medclipsam.models import load_clip, load_sam
    from medclipsam.pipeline import Pipeline

    check_demo_models()
    clip, sam = load_clip(DEMO_CLIP), load_sam(DEMO_SAM)
    return Pipeline(clip, sam, demo_pipeline_config(clip, sam))


def test_a_tumour_inside_the_lungs_survives_either_prompt_order(demo_pipeline):
    """``lungs; tumor`` once lost the tumour to the lungs (the earlier prompt kept every shared voxel:
    Dice 0.82 alone, 0.044 after "lungs"). The smaller claim now wins, whatever the order."""
    from pathlib import Path

    from medclipsam.dicom import read_series
    from medclipsam.volume.itk_io import read_volume

    root = Path(__file__).resolve().parents[1]
    rows = slice(*TUMOUR_RANGE)
    truth = read_volume(root / PHANTOM_TRUTH).array[rows] == 1

    def tumour_dice(prompts):
        with read_series(root / PHANTOM_SERIES) as src:
            r = VolumePipeline(demo_pipeline, VolumeConfig(slice_range=TUMOUR_RANGE)).run(src, prompts)
        mask = r.labels[rows] == prompts.index("tumor") + 1
        return 2 * float((mask & truth).sum()) / max(int(mask.sum() + truth.sum()), 1), r

    alone, _ = tumour_dice(["tumor"])
    assert alone > 0.7
    for prompts in (["lungs", "tumor"], ["tumor", "lungs"]):
        dice, r = tumour_dice(prompts)
        assert dice > alone - 0.03, (prompts, dice, alone)
        t, lungs = prompts.index("tumor"), prompts.index("lungs")
        tumour = r.prompts[t].voxels
        [report] = r.overlap_report()
        # the test means something: most of the tumour lies inside the lungs' mask
        assert report["voxels"] > tumour / 2
        assert report["kept_label"] == t + 1 and report["sizes"][t] < report["sizes"][lungs]
        assert any(f"prompt {t + 1} keeps them (the smaller target" in n for n in r.notes), r.notes


# ---------------------------------------------------------------- batched saliency pass (issue 22, item 6)
def test_engine_batched_saliency_gives_the_per_slice_result(tiny_pipeline, monkeypatch):
    """(slice, prompt) pairs several per M2IB call: the same peaks and labels as one pair per call."""
    import medclipsam.volume.engine as engine_module

    calls: list[tuple[int, list[int]]] = []
    real = engine_module.saliency_grids

    def spy(clip, pixels, texts, method, params):
        calls.append((int(pixels.shape[0]), [c.seed for c in params]))
        return real(clip, pixels, texts, method, params)

    monkeypatch.setattr(engine_module, "saliency_grids", spy)
    prompts = ["lesion", ["body", "soft tissue"]]
    cfg = dict(presence=PresenceConfig(enabled=False))
    one = VolumePipeline(tiny_pipeline, VolumeConfig(saliency_batch=1, **cfg)).run(_phantom(), prompts)
    assert [n for n, _ in calls] == [1] * 16
    calls.clear()
    batched = VolumePipeline(tiny_pipeline, VolumeConfig(saliency_batch=5, **cfg)).run(_phantom(), prompts)
    assert [n for n, _ in calls] == [5, 5, 5, 1]                      # 8 slices × 2 prompts in batches of 5
    seed = tiny_pipeline.config.m2ib.seed
    assert [s for _, seeds in calls for s in seeds] == [seed + k for k in range(8) for _ in prompts]
    assert np.array_equal(one.labels, batched.labels) and one.labels.any()
    for a, b in zip(one.prompts, batched.prompts):
        assert [r.raw_saliency_peak for r in a.records] == pytest.approx([r.raw_saliency_peak for r in b.records],
                                                                         abs=1e-5)
        assert [r.mask_pixels for r in a.records] == [r.mask_pixels for r in b.records]
    assert "saliency" in batched.seconds


@dataclasses.dataclass
class _SliceSeedConfig:
    seed: int = 100


def test_engine_calls_a_method_without_batch_form_per_slice_with_its_seed(tiny_clip, tiny_sam):
    """An oracle-like method that knows the slice only from cfg.seed (params.seed + k) still gets one
    call per (slice, prompt), whatever saliency_batch says."""
    from medclipsam.config import PipelineConfig
    from medclipsam.pipeline import Pipeline
    from medclipsam.saliency import SALIENCY_METHODS, MethodOutput, register_saliency

    name = "slice-seed-test"
    if name not in SALIENCY_METHODS:
        @register_saliency(name, _SliceSeedConfig, "test method: remembers the seed of each call")
        def _slice_seed(clip, pixels, text, cfg):
            _slice_seed.calls.append((int(pixels.shape[0]), cfg.seed))
            g = torch.zeros(clip.vision.grid_size)
            g[2:5, 2:5] = 1.0 + cfg.seed
            return MethodOutput(raw_grid=g)

        _slice_seed.calls = []
    fn = SALIENCY_METHODS.get(name).fn
    fn.calls.clear()
    base = PipelineConfig.from_preset("v2")
    pipeline = Pipeline(tiny_clip, tiny_sam, PipelineConfig(**{**base.__dict__, "saliency": name}))
    cfg = VolumeConfig(presence=PresenceConfig(enabled=False), saliency_batch=4)
    r = VolumePipeline(pipeline, cfg).run(_phantom(), ["lesion", "liver"])
    assert fn.calls == [(1, 100 + k) for k in range(8) for _ in range(2)]
    assert [rec.raw_saliency_peak for rec in r.prompts[0].records] == [101.0 + k for k in range(8)]
