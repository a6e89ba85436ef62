"""Saliency methods on the tiny model: M2IB efficient == literal naive form, CAMs, maps, prompts."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medclipsam.errors import ConfigError, InputError, ModelSpecError
from medclipsam.image import clip_input
from medclipsam.saliency import (
    SALIENCY_METHODS,
    GradCAMConfig,
    GScoreCAMConfig,
    M2IBConfig,
    MethodOutput,
    compute_saliency,
    gscorecam,
    load_prompt_file,
    m2ib,
    m2ib_batch,
    m2ib_naive,
    prompts_for_task,
    register_saliency,
    saliency_grid,
    saliency_grids,
    text_target,
)
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


# ---------------------------------------------------------------- batched saliency (issue 22, item 6)
def _slices(clip, n):
    """n different CT-like slices (a bright disk that moves, noise of its own) as n×3×S×S CLIP input."""
    rng = np.random.default_rng(1)
    out = []
    for k in range(n):
        yy, xx = np.mgrid[:64, :64]
        g = (40 + 30 * rng.random((64, 64))).astype(np.float32)
        g[(yy - 20 - 8 * k) ** 2 + (xx - 40 + 6 * k) ** 2 < 10 ** 2] = 210
        out.append(_pixels(clip, np.repeat(g.astype(np.uint8)[..., None], 3, axis=2)))
    return torch.cat(out)


def test_batched_m2ib_equals_per_slice_runs_at_the_same_seeds(tiny_clip):
    """The engine's batch: slice k seeded seed + k, one prompt; each map as if the slice ran alone."""
    pixels = _slices(tiny_clip, 4)
    text = text_target(tiny_clip, "bright round lesion")
    cfg = M2IBConfig(layer=2, beta=1.0, seed=12)
    cfgs = [M2IBConfig(layer=2, beta=1.0, seed=12 + k) for k in range(4)]
    alone = [m2ib(tiny_clip, pixels[k:k + 1], text, cfgs[k]).raw_grid for k in range(4)]
    batched = m2ib_batch(tiny_clip, pixels, text.expand(4, -1), cfgs)
    assert len(batched) == 4
    for k in range(4):
        assert batched[k].raw_grid.shape == (8, 8)
        assert float((batched[k].raw_grid - alone[k]).abs().max()) <= 1e-5, k
    # the comparison can fail: the maps differ between slices, and a slice's map depends on its seed
    assert float((alone[0] - alone[1]).abs().max()) > 1e-3
    other_seed = m2ib(tiny_clip, pixels[1:2], text, cfg).raw_grid
    assert float((other_seed - batched[1].raw_grid).abs().max()) > 1e-4


def test_batched_m2ib_pairs_each_with_its_own_text_embedding(tiny_clip):
    """(slice, prompt) pairs: one slice with two prompts, another with a prompt ensemble."""
    pixels = _slices(tiny_clip, 2)
    targets = [text_target(tiny_clip, "bright round lesion"), text_target(tiny_clip, "left lung"),
               text_target(tiny_clip, ["a round mass", "tumor"])]
    pairs = [(0, 0), (0, 1), (1, 2)]
    cfgs = [M2IBConfig(layer=1, beta=0.1, seed=30 + i) for i, _ in pairs]     # β small: the text matters
    batched = m2ib_batch(tiny_clip, torch.cat([pixels[i:i + 1] for i, _ in pairs]),
                         torch.cat([targets[t] for _, t in pairs]), cfgs)
    for (i, t), cfg, out in zip(pairs, cfgs, batched):
        alone = m2ib(tiny_clip, pixels[i:i + 1], targets[t], cfg).raw_grid
        assert float((out.raw_grid - alone).abs().max()) <= 1e-5, (i, t)
    # same slice, same seed, another prompt: another map (the text reaches each pair's own loss)
    same_seed = m2ib_batch(tiny_clip, pixels[:1].expand(2, -1, -1, -1), torch.cat(targets[:2]),
                           [cfgs[0], cfgs[0]])
    assert float((same_seed[0].raw_grid - same_seed[1].raw_grid).abs().max()) > 1e-3


def test_m2ib_is_the_batch_of_one(tiny_clip, disk_image):
    pixels = _pixels(tiny_clip, disk_image)
    text = text_target(tiny_clip, "bright round lesion")
    cfg = M2IBConfig(layer=2, seed=7)
    [one] = m2ib_batch(tiny_clip, pixels, text, [cfg])
    assert torch.equal(one.raw_grid, m2ib(tiny_clip, pixels, text, cfg).raw_grid)
    assert one.extras == {"layer": 2, "beta": 1.0}
    naive = m2ib_naive(tiny_clip, pixels, ["bright round lesion"], cfg).raw_grid       # the independent reference
    assert float((one.raw_grid - naive).abs().max()) <= 1e-5
    assert m2ib_batch(tiny_clip, pixels[:0], text[:0], []) == []


def test_batched_m2ib_refuses_mismatched_inputs(tiny_clip):
    pixels = _slices(tiny_clip, 2)
    text = text_target(tiny_clip, "lesion").expand(2, -1)
    with pytest.raises(ConfigError, match="only in their seed"):
        m2ib_batch(tiny_clip, pixels, text, [M2IBConfig(layer=2, seed=1), M2IBConfig(layer=2, beta=2.0, seed=2)])
    with pytest.raises(ValueError, match="one of each per pair"):
        m2ib_batch(tiny_clip, pixels, text[:1], [M2IBConfig(layer=2), M2IBConfig(layer=2)])


@dataclass
class _SeededConfig:
    seed: int = 0


_PER_IMAGE_CALLS: list[tuple[int, int]] = []


def _seed_echo(clip, pixels, text, cfg):
    """A per-image method with no batch form (like an oracle that knows the slice from cfg.seed)."""
    _PER_IMAGE_CALLS.append((int(pixels.shape[0]), cfg.seed))
    return MethodOutput(raw_grid=torch.full(clip.vision.grid_size, float(cfg.seed)), extras={"seed": cfg.seed})


if "seed-echo-test" not in SALIENCY_METHODS:
    register_saliency("seed-echo-test", _SeededConfig, "test method: a map filled with cfg.seed")(_seed_echo)


def test_registry_batch_form_and_per_image_fallback(tiny_clip):
    assert SALIENCY_METHODS.get("m2ib").batched
    assert not SALIENCY_METHODS.get("gradcam").batched and not SALIENCY_METHODS.get("gscorecam").batched
    entry = SALIENCY_METHODS.get("seed-echo-test")
    assert not entry.batched
    pixels = _slices(tiny_clip, 3)
    text = text_target(tiny_clip, "lesion").expand(3, -1)
    _PER_IMAGE_CALLS.clear()
    outs = saliency_grids(tiny_clip, pixels, text, "seed-echo-test", [_SeededConfig(seed=s) for s in (5, 9, 2)])
    assert _PER_IMAGE_CALLS == [(1, 5), (1, 9), (1, 2)]          # one call per pair, each with its own config
    assert [float(o.raw_grid[0, 0]) for o in outs] == [5.0, 9.0, 2.0]
    # a CAM has no batch form: pair by pair, equal to saliency_grid on each pair
    outs = saliency_grids(tiny_clip, pixels, text, "gradcam", [GradCAMConfig()] * 3)
    for k, out in enumerate(outs):
        assert torch.allclose(out.raw_grid, saliency_grid(tiny_clip, pixels[k:k + 1], text[k:k + 1], "gradcam",
                                                          GradCAMConfig()).raw_grid, atol=1e-6)
    # a method with a batch form goes through it and matches the per-image form
    cfgs = [M2IBConfig(layer=2, samples=2, seed=s) for s in (1, 2)]
    outs = saliency_grids(tiny_clip, pixels[:2], text[:2], "m2ib", cfgs)
    for k in range(2):
        alone = saliency_grid(tiny_clip, pixels[k:k + 1], text[k:k + 1], "m2ib", cfgs[k]).raw_grid
        assert float((outs[k].raw_grid - alone).abs().max()) <= 1e-5
    with pytest.raises(TypeError, match="M2IBConfig"):
        saliency_grids(tiny_clip, pixels[:1], text[:1], "m2ib", [GradCAMConfig()])
    with pytest.raises(ValueError, match="one of each per pair"):
        saliency_grids(tiny_clip, pixels, text[:2], "seed-echo-test", [_SeededConfig()] * 3)


@pytest.mark.parametrize("bad", [-1, 1.5, "4", True, None])
def test_volume_config_rejects_a_bad_saliency_batch(bad):
    from medclipsam.volume.engine import VolumeConfig

    with pytest.raises(ConfigError, match="saliency_batch"):
        VolumeConfig(saliency_batch=bad)
    assert VolumeConfig(saliency_batch=0).saliency_batch == 0 and VolumeConfig(saliency_batch=3).saliency_batch == 3
