"""Pipeline configuration (presets, overrides) and the pipeline's outcomes, incl. 'target not found'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medclipsam.config import PRESETS, PipelineConfig, apply_overrides, parse_overrides
from medclipsam.errors import ConfigError
from medclipsam.pipeline import Pipeline
from medclipsam.saliency import SALIENCY_METHODS, MethodOutput, register_saliency


def test_presets_follow_the_papers():
    v1 = PipelineConfig.from_preset("v1")
    assert v1.saliency == "gscorecam" and v1.gscorecam.topk == 300 and v1.gscorecam.layer == -1
    assert v1.postprocess.method == "crf" and v1.postprocess.crf.bilateral_sxy == 60
    assert v1.postprocess.crf.iterations == 1 and v1.postprocess.num_components == 1
    v2 = PipelineConfig.from_preset("v2")
    assert v2.saliency == "m2ib" and v2.m2ib.layer == 9 and v2.m2ib.init_alpha == 5.0
    assert (v2.m2ib.steps, v2.m2ib.lr, v2.m2ib.samples) == (10, 1.0, 10)
    assert v2.postprocess.method == "otsu" and v2.prompts.kind == "boxes"
    # the reference keeps K = 1 component, 2 for lungs
    assert v2.postprocess.num_components == 1 and v2.postprocess.num_components_paired == 2
    assert set(PRESETS.names()) == {"v1", "v2"}


def test_overrides_convert_types_and_validate():
    cfg = PipelineConfig.from_preset("v2", parse_overrides(
        ["m2ib.beta=2", "m2ib.layer=7", "postprocess.method=kmeans", "sam.multimask=true", "prompts.kind=points"]))
    assert cfg.m2ib.beta == 2.0 and cfg.m2ib.layer == 7 and cfg.postprocess.method == "kmeans"
    assert cfg.sam.multimask is True and cfg.prompts.kind == "points"
    cfg = apply_overrides(cfg, {"postprocess.crf.bilateral_srgb": "3", "saliency": "gradcam"})
    assert cfg.postprocess.crf.bilateral_srgb == 3.0 and cfg.saliency == "gradcam"
    with pytest.raises(ConfigError, match="beta"):
        apply_overrides(cfg, {"m2ib.betta": "1"})
    with pytest.raises(ConfigError, match="expected a int"):
        apply_overrides(cfg, {"m2ib.layer": "nine"})
    with pytest.raises(ConfigError, match="boolean"):
        apply_overrides(cfg, {"sam.multimask": "maybe"})
    with pytest.raises(ConfigError):
        apply_overrides(cfg, {"m2ib.steps": "0"})  # validated by the dataclass
    with pytest.raises(ConfigError, match="m2ib"):
        apply_overrides(cfg, {"saliency": "lime"})
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["m2ib.beta"])
    with pytest.raises(ConfigError, match="preset"):
        PipelineConfig.from_preset("v3")


@pytest.mark.parametrize("preset", ["v1", "v2"])
@pytest.mark.parametrize("kind", ["boxes", "box", "points", "boxes+points"])
def test_pipeline_runs_every_preset_and_prompt_type(tiny_clip, tiny_sam, disk_image, preset, kind):
    cfg = PipelineConfig.from_preset(preset, {"m2ib.layer": 2, "gscorecam.topk": 16, "prompts.kind": kind})
    r = Pipeline(tiny_clip, tiny_sam, cfg).segment(disk_image, "bright round lesion")
    assert r.found and r.mask.shape == disk_image.shape[:2] and r.coarse_mask.any()
    assert set(r.seconds) >= {"text", "saliency", "postprocess", "sam_encoder", "sam_decoder", "total"}
    summary = r.summary()
    assert summary["found"] and summary["visual_prompts"]["num_components"] >= 1


def test_saliency_map_is_aligned_with_the_image_pixels(tiny_clip, disk_image):
    """A method whose raw map lights one token: after pad-to-square, upsampling and un-padding the
    peak must sit on the image pixel under that token's centre (x/y order and padding inverted)."""
    from medclipsam.saliency import compute_saliency, text_target

    name = "one-hot-token-test"
    if name not in SALIENCY_METHODS:
        @register_saliency(name, dict, "test method: one hot token at grid (3, 5)")
        def _one_hot(clip, pixels, text, cfg):
            g = torch.zeros(clip.vision.grid_size)
            g[3, 5] = 1.0
            return MethodOutput(raw_grid=g)

    r = compute_saliency(tiny_clip, disk_image, text_target(tiny_clip, "x"), name, {})
    # 90×160 image → padded to 160×160 (35 rows above); 8×8 tokens of 20×20 padded pixels each
    row, col = np.unravel_index(np.argmax(r.saliency_map), r.saliency_map.shape)
    assert abs(row - (3.5 * 20 - 35)) <= 2 and abs(col - 5.5 * 20) <= 2
    portrait = np.ascontiguousarray(disk_image.transpose(1, 0, 2))   # 160×90 → 45 columns of padding
    r = compute_saliency(tiny_clip, portrait, text_target(tiny_clip, "x"), name, {})
    row, col = np.unravel_index(np.argmax(r.saliency_map), r.saliency_map.shape)
    assert abs(row - 3.5 * 20) <= 2 and abs(col - (5.5 * 20 - 35)) <= 2


def test_text_embedding_computed_once_per_prompt(tiny_clip, tiny_sam, disk_image, monkeypatch):
    p = Pipeline(tiny_clip, tiny_sam, PipelineConfig.from_preset("v2", {"m2ib.layer": 2}))
    calls = []
    original = tiny_clip.encode_text
    monkeypatch.setattr(tiny_clip, "encode_text", lambda prompts: calls.append(1) or original(prompts))
    for _ in range(3):
        p.segment(disk_image, "lesion")
    assert len(calls) == 1


def test_target_not_found_is_a_result_not_a_crash(tiny_clip, tiny_sam, disk_image):
    """A saliency method registered from outside (stage replaced without touching the others) that
    finds nothing: every map is constant, Otsu gives an empty coarse mask, SAM is not called."""
    name = "nothing-salient-test"
    if name not in SALIENCY_METHODS:
        @register_saliency(name, dict, "test method: constant map")
        def _nothing(clip, pixels, text, cfg):
            g = clip.vision.grid_size
            return MethodOutput(raw_grid=torch.zeros(g))

    cfg = PipelineConfig.from_preset("v2")
    cfg = PipelineConfig(**{**cfg.__dict__, "saliency": name})
    calls = []
    h = tiny_sam.model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        r = Pipeline(tiny_clip, tiny_sam, cfg).segment(disk_image, "lesion")
    finally:
        h.remove()
    assert not r.found and not r.mask.any() and r.visual_prompts.empty and r.sam is None
    assert r.summary()["message"].startswith("target not found") and calls == []


def test_the_pipeline_keeps_two_components_for_lungs_and_one_for_a_tumour(tiny_clip, tiny_sam, disk_image, monkeypatch):
    import medclipsam.pipeline as pipeline_module

    seen = []
    real = pipeline_module.make_coarse_mask

    def spy(saliency_map, rgb, cfg):
        seen.append(cfg.num_components)
        return real(saliency_map, rgb, cfg)

    monkeypatch.setattr(pipeline_module, "make_coarse_mask", spy)
    pipe = Pipeline(tiny_clip, tiny_sam, PipelineConfig.from_preset("v2", {"m2ib.layer": 2}))
    for prompt in ("lungs", "tumor", ("both lungs", "lungs")):
        pipe.segment(disk_image, prompt)
    assert seen == [2, 1, 2]


def test_a_2d_image_and_a_one_slice_volume_give_the_same_mask(tiny_pipeline, disk_image):
    """One per-slice chain (``pipeline.chain_from_saliency``) serves ``segment`` and the volume engine:
    the same image, seen as a one-slice volume (as ``open_volume`` reads a PNG), gives the same coarse
    mask, visual prompts and final mask (gate, 3D consistency and propagation off: they are the
    engine's, not the chain's)."""
    from medclipsam.volume import ArrayVolume, Geometry
    from medclipsam.volume.config import VolumeConfig
    from medclipsam.volume.consistency import ConsistencyConfig
    from medclipsam.volume.engine import VolumePipeline
    from medclipsam.volume.presence import PresenceConfig

    two_d = tiny_pipeline.segment(disk_image, "bright disk")
    assert two_d.found and two_d.mask.any()          # a chain that ran to SAM, not two empty results
    src = ArrayVolume(disk_image[None], Geometry((1,) + disk_image.shape[:2], has_patient_geometry=False),
                      modality="OT", description="the same image")
    cfg = VolumeConfig(presence=PresenceConfig(enabled=False), consistency=ConsistencyConfig(enabled=False),
                       inspect=1)
    volume = VolumePipeline(tiny_pipeline, cfg).run(src, ["bright disk"])
    [detail] = volume.details
    assert np.array_equal(detail.coarse_mask, two_d.coarse_mask)
    assert np.array_equal(detail.visual_prompts.boxes, two_d.visual_prompts.boxes)
    assert np.array_equal(volume.labels[0] == 1, two_d.mask)
