"""Saliency methods on the tiny model: M2IB efficient == literal naive form, CAMs, maps, prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medclipsam.errors import InputError, ModelSpecError
from medclipsam.image import clip_input
from medclipsam.saliency import (SALIENCY_METHODS, GradCAMConfig, GScoreCAMConfig, M2IBConfig, compute_saliency,
                                 gscorecam, load_prompt_file, m2ib, m2ib_naive, prompts_for_task, text_target)
from medclipsam.saliency.m2ib import capacity


def _pixels(clip, rgb):
    return clip_input(rgb, clip.image_size, clip.mean, clip.std)[0]


@pytest.mark.parametrize("layer,beta", [(1, 1.0), (2, 2.0), (3, 0.1)])
def test_efficient_m2ib_equals_literal_naive_form(tiny_clip, disk_image, layer, beta):
    cfg = M2IBConfig(layer=layer, beta=beta, seed=12)
    pixels = _pixels(tiny_clip, disk_image)
    ours = m2ib(tiny_clip, pixels, text_target(tiny_clip, "bright round lesion"), cfg).raw_grid
    naive = m2ib_naive(tiny_clip, pixels, ["bright round lesion"], cfg).raw_grid
    assert ours.shape == naive.shape == (8, 8)
    assert float((ours - naive).abs().max()) <= 1e-5
    assert float(ours.std()) > 0  # a real map, not a constant


def test_efficient_m2ib_equals_naive_for_prompt_ensemble(tiny_clip, disk_image):
    prompts = ["bright round lesion", "a round mass", "tumor"]
    cfg = M2IBConfig(layer=2, seed=3)
    pixels = _pixels(tiny_clip, disk_image)
    ours = m2ib(tiny_clip, pixels, text_target(tiny_clip, prompts), cfg).raw_grid
    naive = m2ib_naive(tiny_clip, pixels, prompts, cfg).raw_grid
    assert float((ours - naive).abs().max()) <= 1e-5


def test_m2ib_does_not_touch_model_weights_and_is_seeded(tiny_clip, disk_image):
    before = {k: v.clone() for k, v in tiny_clip.model.state_dict().items()}
    pixels = _pixels(tiny_clip, disk_image)
    text = text_target(tiny_clip, "lesion")
    a = m2ib(tiny_clip, pixels, text, M2IBConfig(layer=2, seed=5)).raw_grid
    b = m2ib(tiny_clip, pixels, text, M2IBConfig(layer=2, seed=5)).raw_grid
    c = m2ib(tiny_clip, pixels, text, M2IBConfig(layer=2, seed=6)).raw_grid
    assert torch.equal(a, b) and not torch.equal(a, c)
    m2ib_naive(tiny_clip, pixels, ["lesion"], M2IBConfig(layer=2, seed=5))
    after = tiny_clip.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in tiny_clip.model.parameters())


def test_capacity_is_the_gaussian_kl():
    alpha = torch.tensor([[5.0, 0.0, -2.0]])
    x = torch.tensor([[0.3, -1.0, 2.0]])
    lam = torch.sigmoid(alpha)
    mu, var = lam * x, (1 - lam) ** 2
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, var.sqrt()), torch.distributions.Normal(0, 1))
    assert torch.allclose(capacity(alpha, x), kl, atol=1e-6)


def test_gscorecam_weights_are_softmax_of_masked_image_scores(tiny_clip, disk_image):
    """Recompute gScoreCAM from its definition with plain loops and compare."""
    pixels = _pixels(tiny_clip, disk_image)
    text = text_target(tiny_clip, "lesion")
    out = gscorecam(tiny_clip, pixels, text, GScoreCAMConfig(layer=-1, topk=10, batch_size=4)).raw_grid

    vision = tiny_clip.vision
    acts = {}
    h = vision.block_module(-1).norm2.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    x = pixels.clone().requires_grad_(True)
    emb = F.normalize(tiny_clip.model.encode_image(x), dim=-1)
    a = acts["a"]
    (grad,) = torch.autograd.grad(tiny_clip.logit_scale * (emb * text).sum(), a)
    h.remove()
    maps = a.detach()[0, 1:].T.reshape(-1, 8, 8)
    top = torch.topk(grad[0, 1:].mean(0), 10).indices
    scores = torch.zeros(maps.shape[0])
    with torch.no_grad():
        for c in top.tolist():
            up = F.interpolate(maps[c][None, None], size=pixels.shape[-2:], mode="bilinear", align_corners=False)
            m = (up - up.min()) / (up.max() - up.min() + 1e-6)
            e = F.normalize(tiny_clip.model.encode_image(pixels * m), dim=-1)
            scores[c] = tiny_clip.logit_scale * (e * text).sum()
    expected = torch.relu((torch.softmax(scores, 0)[:, None, None] * maps).sum(0))
    assert torch.allclose(out, expected, atol=1e-5)


def test_topk_larger_than_channels_is_clamped(tiny_clip, disk_image):
    out = gscorecam(tiny_clip, _pixels(tiny_clip, disk_image), text_target(tiny_clip, "x"),
                    GScoreCAMConfig(topk=10_000))
    assert out.extras["topk"] == tiny_clip.vision.width


@pytest.mark.parametrize("method,params", [("m2ib", M2IBConfig(layer=2)), ("gscorecam", GScoreCAMConfig(topk=16)),
                                           ("gradcam", GradCAMConfig())])
def test_compute_saliency_contract(tiny_clip, disk_image, method, params):
    text = text_target(tiny_clip, "bright round lesion")
    r = compute_saliency(tiny_clip, disk_image, text, method, params)
    assert r.saliency_map.shape == disk_image.shape[:2] and r.saliency_map.dtype == np.float32
    assert 0.0 <= r.saliency_map.min() and r.saliency_map.max() <= 1.0
    assert r.saliency_map.max() in (0.0, 1.0)  # min-max over the image's own pixels (or all-zero if constant)
    assert r.raw_grid.shape == (8, 8) and (r.raw_grid >= 0).all()
    pixels = _pixels(tiny_clip, disk_image)
    cos = float((tiny_clip.encode_image(pixels) * text).sum())
    assert r.similarity == pytest.approx(cos, abs=1e-6)
    assert r.method == method and set(r.summary()) >= {"similarity", "raw_max", "raw_mean"}


def test_saliency_registry_lists_methods(tiny_clip, disk_image):
    assert {"m2ib", "gscorecam", "gradcam"} <= set(SALIENCY_METHODS.names())
    with pytest.raises(Exception, match="m2ib"):
        compute_saliency(tiny_clip, disk_image, text_target(tiny_clip, "x"), "lime")


def test_layer_out_of_range_says_what_to_choose(tiny_clip, disk_image):
    with pytest.raises(ModelSpecError, match="from 0 to 3"):
        compute_saliency(tiny_clip, disk_image, text_target(tiny_clip, "x"), "m2ib", M2IBConfig(layer=9))


def test_prompt_ensemble_is_normalised_mean(tiny_clip):
    prompts = ["left lung", "right lung"]
    e = tiny_clip.encode_text(prompts)
    expected = F.normalize(e.mean(0, keepdim=True), dim=-1)
    assert torch.allclose(text_target(tiny_clip, prompts), expected, atol=1e-6)
    with pytest.raises(InputError, match="empty"):
        text_target(tiny_clip, "   ")
    with pytest.raises(InputError):
        text_target(tiny_clip, [])


def test_prompt_files(tmp_path):
    f = tmp_path / "prompts.json"
    f.write_text(json.dumps({"lungs": "lungs", "breast tumor": ["breast tumor", "A breast ultrasound with a mass."]}))
    table = load_prompt_file(f)
    assert table == {"lungs": ["lungs"], "breast tumor": ["breast tumor", "A breast ultrasound with a mass."]}
    assert prompts_for_task(f, "lungs") == ["lungs"]
    with pytest.raises(InputError, match="lungs"):
        prompts_for_task(f, "liver")
    for bad in ("[1, 2]", "{\"x\": []}", "{\"x\": [\"\"]}", "not json"):
        f.write_text(bad)
        with pytest.raises(InputError):
            load_prompt_file(f)
    with pytest.raises(InputError, match="not found"):
        load_prompt_file(tmp_path / "missing.json")


def test_bundled_prompt_file_is_found_by_name():
    table = load_prompt_file("medclipsamv2-examples")
    assert table["lungs, chest X-ray (P0)"] == ["lungs"]
    assert len(table["breast tumor, benign and malignant (ensemble)"]) == 2
