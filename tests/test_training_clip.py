"""The demo CLIP recipe (training/clip_demo.py) on a toy synthetic data set of its own.

The toy slices are gray "bodies" with up to two dark lungs, a mid-gray liver and a bright round
tumor, each with masks and a caption naming what is visible — the protocol the recipe takes
(``.rgb``, ``.caption``, ``.masks``), independent of ``medclipsam.phantoms``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training import clip_demo  # noqa: E402


@dataclass
class ToySlice:
    rgb: np.ndarray
    caption: str
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    kind: str = "ct-chest"


def _ellipse(yy, xx, cy, cx, ry, rx):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def toy_slices(seed: int, n: int, size: int = 128) -> list[ToySlice]:
    """Random toy slices: body ellipse, optional lungs (dark), liver (mid-gray), tumor (bright disk)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    s = size / 128.0
    out = []
    for _ in range(n):
        g = np.zeros((size, size), np.float32)
        body = _ellipse(yy, xx, size / 2 + rng.uniform(-4, 4) * s, size / 2 + rng.uniform(-4, 4) * s,
                        rng.uniform(44, 56) * s, rng.uniform(50, 60) * s)
        g[body] = rng.uniform(110, 140)
        masks = {"body": body}
        lungs = rng.choice(["none", "both", "left", "right"], p=[0.3, 0.4, 0.15, 0.15])
        named = []
        for side, present in (("left lung", lungs in ("both", "left")), ("right lung", lungs in ("both", "right"))):
            if not present:
                masks[side] = np.zeros_like(body)
                continue
            cx = (size * 0.68 if side == "left lung" else size * 0.32) + rng.uniform(-3, 3) * s  # radiological view
            m = _ellipse(yy, xx, size * 0.45 + rng.uniform(-4, 4) * s, cx, rng.uniform(18, 26) * s,
                         rng.uniform(10, 15) * s) & body
            g[m] = rng.uniform(25, 45)
            masks[side] = m
            named.append(side)
        liver = np.zeros_like(body)
        if lungs == "none" and rng.random() < 0.6:
            liver = _ellipse(yy, xx, size * 0.55, size * 0.36 + rng.uniform(-4, 4) * s, rng.uniform(16, 22) * s,
                             rng.uniform(20, 28) * s) & body
            g[liver] = rng.uniform(80, 95)
            named.append("liver")
        masks["liver"] = liver
        tumor = np.zeros_like(body)
        if rng.random() < 0.5:
            for _try in range(20):
                cy, cx = rng.uniform(0.25, 0.75, size=2) * size
                r = rng.uniform(5, 10) * s
                t = _ellipse(yy, xx, cy, cx, r, r * rng.uniform(0.8, 1.25))
                if (t & ~body).sum() == 0:
                    tumor = t
                    break
            g[tumor] = rng.uniform(200, 240)
            if tumor.any():
                named.append("tumor")
        masks["tumor"] = tumor
        g += rng.normal(0, 6, g.shape)
        rgb = np.repeat(np.clip(g, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        if lungs == "both":
            named = ["lungs"] + [x for x in named if "lung" not in x]
        caption = ("a ct slice showing " + " and ".join(named)) if named else "a ct slice of the body"
        out.append(ToySlice(rgb, caption, masks))
    return out


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "open_clip_pytorch_model.bin", map_location="cpu", weights_only=True)


def tiny_avg_architecture() -> dict:
    """The tiny architecture with the demo's pooling (average of the patch tokens, then LayerNorm)."""
    from medclipsam.models.clip import clip_architecture

    arch = json.loads(json.dumps(clip_architecture("tiny")))
    arch["open_clip_config"]["model_cfg"]["vision_cfg"]["timm_model_name"] = "vit_medclipsam_tinyavg_patch8_64"
    return arch


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short run of the recipe on toy slices with the tiny architecture (64 px, 8×8 tokens) for speed."""
    data = toy_slices(0, 160, size=64)
    out = tmp_path_factory.mktemp("demo") / "demo-clip"
    metrics = clip_demo.train_demo_clip(data, out, steps=60, batch_size=16, seed=0, lr=3e-3, log_every=20,
                                        architecture=tiny_avg_architecture(), check_saliency=2)
    return out, metrics


def test_dense_scores_are_the_first_order_effect_of_each_token_on_the_similarity(tmp_path):
    """dense_scores(t) = T · ∂cos(image, prompt)/∂w_t where the pooled mean is Σ w_t x_t / T (w = 1):
    checked against autograd on the demo pooling, for random tokens and prompts."""
    from medclipsam.models.clip import write_clip_folder

    folder = write_clip_folder(tmp_path / "m", tiny_avg_architecture(), None)
    model, _ = clip_demo._build_model(folder, seed=0)
    visual = model.visual
    trunk = visual.trunk
    torch.manual_seed(0)
    with torch.no_grad():
        trunk.fc_norm.weight.uniform_(0.5, 1.5)
        trunk.fc_norm.bias.uniform_(-0.3, 0.3)
    npre = int(trunk.num_prefix_tokens)
    tokens = torch.randn(2, npre + 64, trunk.embed_dim) + 0.3
    txt = torch.nn.functional.normalize(torch.randn(3, visual.head.proj.out_features), dim=-1)
    got = clip_demo.dense_scores(clip_demo.token_contributions(visual, tokens, npre),
                                 clip_demo._pooled(visual, tokens), txt)
    w = torch.ones(2, 64, 1, requires_grad=True)
    patches = tokens[:, npre:] * w
    img = visual.head(trunk.fc_norm(patches.mean(dim=1)))
    cos = torch.nn.functional.normalize(img, dim=-1) @ txt.T                 # B × P
    for p in range(3):
        grad, = torch.autograd.grad(cos[:, p].sum(), w, retain_graph=True)
        assert torch.allclose(got[..., p], 64 * grad[..., 0], atol=1e-4, rtol=1e-3)
    assert got.abs().max() > 1e-3                                            # not trivially zero


def test_focal_presence_loss_weights_the_hard_pairs():
    logits = torch.tensor([[4.0, -4.0, 0.5], [-0.5, 3.0, -3.0]])
    labels = torch.tensor([[1, 0, 0], [1, -1, 0]], dtype=torch.int8)
    plain = clip_demo.presence_loss(logits, labels)
    assert torch.allclose(clip_demo.presence_loss(logits, labels, focal=0.0), plain)
    focal = clip_demo.presence_loss(logits, labels, focal=2.0)
    # easy pairs (logit ±4 on the right side) almost vanish; the hard ones (wrong side) count more
    easy = clip_demo.presence_loss(torch.tensor([[4.0, -4.0]]), torch.tensor([[1, 0]], dtype=torch.int8), focal=2.0)
    hard = clip_demo.presence_loss(torch.tensor([[-0.5, 0.5]]), torch.tensor([[1, 0]], dtype=torch.int8), focal=2.0)
    assert easy < 1e-3 < hard
    assert focal != plain


def test_dense_scores_need_the_demo_pooling(tmp_path):
    from medclipsam.models.clip import write_clip_folder

    folder = write_clip_folder(tmp_path / "m", "tiny", None)
    model, _ = clip_demo._build_model(folder, seed=0)
    tokens = torch.randn(1, 65, model.visual.trunk.embed_dim)
    with pytest.raises(ValueError, match="fc_norm=True"):
        clip_demo.token_contributions(model.visual, tokens, 1)


def test_short_run_writes_a_folder_load_clip_reads(trained):
    from medclipsam.models import load_clip
    from medclipsam.saliency import M2IBConfig, compute_saliency, text_target

    out, metrics = trained
    names = {p.name for p in out.iterdir()}
    assert {"open_clip_config.json", "config.json", "vocab.txt", "tokenizer_config.json",
            "open_clip_pytorch_model.bin", "model_card.json", "README.txt", "medclipsam_presence.json"} <= names
    clip = load_clip(f"local-dir:{out}")
    assert not clip.random_weights and clip.architecture == "tiny"
    card = json.loads((out / "model_card.json").read_text())
    assert card["intended_use"] == "demo" and "not for clinical use" in card["notice"]
    assert card["pipeline_overrides"] == clip_demo.pipeline_recommendations(metrics["m2ib_layer"])
    assert "not for clinical use" in (out / "README.txt").read_text()
    vocab = (out / "vocab.txt").read_text().split("\n")
    assert "tumor" in vocab and "lungs" in vocab          # whole words, written by the project
    # the folder holds the trained weights: the loaded model reproduces the recipe's held-out AUC
    held_out = toy_slices(0, 160, size=64)[-metrics["n_val"]:]
    prompts = clip_demo.prompts_for(metrics["structures"])
    prep = clip_demo.prepare(held_out, prompts, clip.image_size, clip.vision.grid_size[0], clip.mean, clip.std)
    sims = clip_demo.similarities(clip.model, clip.tokenizer, prep.pixels, [p.text for p in prompts])
    assert clip_demo.calibrate_presence(sims, prep.labels.numpy(), prompts)["auc"] == metrics["retrieval_auc"]
    rgb = toy_slices(5, 1)[0].rgb
    res = compute_saliency(clip, rgb, text_target(clip, "tumor"), "m2ib", M2IBConfig(layer=metrics["m2ib_layer"]))
    assert res.saliency_map.shape == rgb.shape[:2] and np.isfinite(res.saliency_map).all()
    assert metrics["m2ib"]["tumor"]["slices"] >= 1


def test_short_run_improves_the_contrastive_loss(trained):
    _, metrics = trained
    # held-out loss of a fixed batch before any update vs after; the training loss of the first vs last 20 steps
    assert metrics["contrastive_loss_final"] < metrics["contrastive_loss_initial"]
    hist = metrics["history"]
    assert hist[-1]["contrastive"] < hist[0]["contrastive"] - 0.05
    assert metrics["retrieval_auc"] > 0.55


def test_calibration_file_is_read_by_the_presence_gate(trained):
    from medclipsam.models import load_clip
    from medclipsam.volume.presence import CALIBRATION_FILE, model_presence_threshold

    out, metrics = trained
    calib = json.loads((out / CALIBRATION_FILE).read_text())
    assert set(calib) >= {"presence_threshold", "auc", "calibrated_on"}
    assert -1.0 <= calib["presence_threshold"] <= 1.0 and calib["auc"] == metrics["retrieval_auc"]
    clip = load_clip(f"local-dir:{out}")
    assert model_presence_threshold(clip) == pytest.approx(calib["presence_threshold"])


def test_demo_architecture_same_seed_same_weights(tmp_path):
    """The demo architecture (configs/clip/demo.json): a few steps, twice with one seed, once with another."""
    from medclipsam.models import load_clip

    data = toy_slices(1, 12)
    kw = dict(steps=2, batch_size=4, lr=2e-3, log_every=10, check_saliency=0)
    clip_demo.train_demo_clip(data, tmp_path / "a", seed=3, **kw)
    clip_demo.train_demo_clip(data, tmp_path / "b", seed=3, **kw)
    clip_demo.train_demo_clip(data, tmp_path / "c", seed=4, **kw)
    a, b, c = _state(tmp_path / "a"), _state(tmp_path / "b"), _state(tmp_path / "c")
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    key = "visual.trunk.blocks.0.attn.qkv.weight"
    assert not torch.equal(a[key], c[key])
    assert (tmp_path / "a" / "vocab.txt").read_text() == (tmp_path / "b" / "vocab.txt").read_text()
    clip = load_clip(f"local-dir:{tmp_path / 'a'}")
    assert clip.architecture == "demo" and not clip.random_weights
    assert clip.image_size == 128 and clip.vision.grid_size == (16, 16) and clip.vision.num_blocks == 4


def test_calibration_helpers():
    y = np.array([0, 0, 1, 1, 1, 0, 0])
    s = np.array([0.1, 0.2, 0.5, 0.6, 0.4, 0.45, 0.05])
    assert clip_demo.roc_auc(s, y) == pytest.approx(11 / 12)
    assert clip_demo.roc_auc(-s, y) == pytest.approx(1 / 12)
    t, bacc = clip_demo.best_threshold(s, y)          # present: s >= t; best between 0.2 and 0.4
    assert t == pytest.approx(0.3) and bacc == pytest.approx(0.5 * (1 + 3 / 4))
    p = next(x for x in clip_demo.STRUCTURE_PROMPTS if x.text == "brain tumor")
    assert clip_demo.presence_label({"tumor": 3.0, "brain": 40.0}, p, "mr-brain") == 1
    assert clip_demo.presence_label({"tumor": 3.0}, p, "ct-chest") == 0
    assert clip_demo.presence_label({"tumor": 0.2, "brain": 40.0}, p, "mr-brain") == -1


def test_cli_without_phantoms_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(clip_demo, "_phantom_data", lambda *a: None)
    assert clip_demo.main(["--out", str(tmp_path / "m"), "--steps", "1"]) == 2
    assert "phantom module" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error is for machines without it")
    data = toy_slices(0, 8, size=64)
    with pytest.raises(ValueError, match="CUDA is not available"):
        clip_demo.train_demo_clip(data, tmp_path / "m", steps=1, batch_size=4, device="cuda",
                                  architecture=tiny_avg_architecture(), check_saliency=0)
    assert not (tmp_path / "m").exists()


def test_card_records_the_training_device(trained):
    _out, metrics = trained
    assert metrics["device"] == "cpu"


def test_a_target_hidden_by_the_window_is_neither_present_nor_absent():
    size, grid = 64, 8
    masks = {"tumor": np.zeros((size, size), bool), "liver": np.zeros((size, size), bool),
             "body": np.ones((size, size), bool)}
    masks["liver"][8:40, 8:40] = True
    masks["tumor"][16:32, 16:32] = True
    rgb = np.zeros((size, size, 3), np.uint8)
    shown = ToySlice(rgb, "a liver tumour", masks)
    hidden = ToySlice(rgb, "the abdomen", masks)
    hidden.hidden = ("liver", "tumor")
    prompts = clip_demo.prompts_for(masks)
    hidden.visible_caption = "the abdomen, nothing else visible"
    prep = clip_demo.prepare([shown, hidden], prompts, size, grid, (0.5,) * 3, (0.5,) * 3, "unknown")
    j = {p.text: i for i, p in enumerate(prompts)}
    for text in ("tumor", "liver tumor", "liver"):
        assert prep.labels[0, j[text]] == 1 and prep.known[0, j[text]], text
        assert prep.labels[1, j[text]] == -1 and not prep.known[1, j[text]], text
    # the body is not hidden: labelled and known on both
    assert prep.labels[1, j["body"]] == 1 and prep.known[1, j["body"]]
    assert prep.captions[1] == "the abdomen, nothing else visible"
    # the default (the shipped model's recipe) labels what the masks say
    default = clip_demo.prepare([shown, hidden], prompts, size, grid, (0.5,) * 3, (0.5,) * 3)
    assert default.labels[1, j["tumor"]] == 1 and default.known[1, j["tumor"]]
    assert default.captions[1] == "the abdomen"
    with pytest.raises(ValueError, match="hidden_targets"):
        clip_demo.prepare([shown], prompts, size, grid, (0.5,) * 3, (0.5,) * 3, "maybe")


def test_tune_beta_scores_each_candidate_and_picks_the_best(trained):
    out, _metrics = trained
    data = toy_slices(7, 12, size=64)
    r = clip_demo.tune_beta(out, data, {"tumor": "tumor"}, limit=3, layer=3,
                            settings={"postprocess.method": "otsu"}, betas=(1.0, 2.0))
    assert set(r["dice"]) == {"1", "2"} and r["slices"] == {"tumor": 3}
    for row in r["dice"].values():
        assert 0.0 <= row["tumor"] <= 1.0
    best = max(r["mean_dice"].values())
    assert r["mean_dice"][f"{r['beta']:g}"] == best
    # nothing to tune on: the default β stays
    assert clip_demo.tune_beta(out, data, {"spine": "spine"}, 3, 3, {})["beta"] is None


def test_card_recommends_the_tuned_beta():
    assert clip_demo.pipeline_recommendations(3, 2.0)["m2ib.beta"] == "2"
    assert "m2ib.beta" not in clip_demo.pipeline_recommendations(3)


def test_architecture_option_takes_a_bundled_name_or_a_json_file(tmp_path):
    from medclipsam.models.clip import clip_architecture

    assert clip_demo._architecture_arg("demo") == "demo"
    arch = clip_architecture("demo")
    arch["name"] = "demo-custom"
    path = tmp_path / "demo-custom.json"
    path.write_text(json.dumps(arch), encoding="utf-8")
    assert clip_demo._architecture_arg(str(path)) == arch


def test_laterality_loss_rewards_the_prompt_naming_the_tokens_side():
    # 1 image, 4 tokens, prompts (left lung, right lung, spine); tokens 0-1 left lung, 2 right lung, 3 spine
    cover = torch.zeros(1, 4, 3)
    cover[0, 0, 0] = cover[0, 1, 0] = 1.0
    cover[0, 2, 1] = 0.8
    cover[0, 3, 2] = 1.0
    pairs = clip_demo.lateral_pairs(["left lung", "right lung", "spine"])
    assert pairs == [(0, 1)]
    right_way = torch.tensor([[[4.0, -4.0, 0.0], [4.0, -4.0, 0.0], [-4.0, 4.0, 0.0], [0.0, 0.0, 9.0]]])
    swapped = right_way[..., [1, 0, 2]]
    same = torch.zeros(1, 4, 3)
    good, bad, flat = (float(clip_demo.laterality_loss(x, cover, pairs)) for x in (right_way, swapped, same))
    assert flat == pytest.approx(np.log(2.0), abs=1e-6)
    assert good < 0.05 < flat < bad
    # the spine token (neither lung) does not count: changing its logits changes nothing
    other = right_way.clone()
    other[0, 3] = torch.tensor([-9.0, 9.0, 0.0])
    assert float(clip_demo.laterality_loss(other, cover, pairs)) == pytest.approx(good)
    assert clip_demo.lateral_pairs(["lungs", "spine"]) == []
    assert float(clip_demo.laterality_loss(right_way, cover, [])) == 0.0


def test_mass_loss_ranks_the_targets_tokens_above_the_rest_of_the_slice():
    # 2 images, 8 tokens, prompts (tumor, lungs); a tumour on token 1, the lungs on tokens 0-5
    cover = torch.zeros(2, 8, 2)
    cover[:, 1, 0] = 1.0
    cover[:, :6, 1] = 1.0
    known = torch.ones(2, 2, dtype=torch.bool)
    on_target = torch.zeros(2, 8, 2)
    on_target[:, 1, 0] = 6.0
    mirrored = torch.zeros(2, 8, 2)
    mirrored[:, 4, 0] = 6.0                     # the peak on another lung token
    good, bad, flat = (float(clip_demo.mass_loss(x, cover, known)) for x in (on_target, mirrored, torch.zeros(2, 8, 2)))
    assert flat == pytest.approx(np.log(8.0), abs=1e-5)       # the lungs take 6 of 8 tokens: not counted
    assert good < 0.02 < flat < bad
    # a target not known, or absent, takes no part; with nothing left the loss is 0
    assert float(clip_demo.mass_loss(mirrored, cover, torch.zeros(2, 2, dtype=torch.bool))) == 0.0
    half = known.clone()
    half[1, 0] = False
    assert float(clip_demo.mass_loss(mirrored, cover, half)) == pytest.approx(bad)
    # max_share 1: the lungs' pairs count too (flat logits: cross-entropy log 8)
    assert float(clip_demo.mass_loss(mirrored, cover, known, max_share=1.0)) == pytest.approx((bad + np.log(8.0)) / 2,
                                                                                            abs=1e-5)
    # only the chosen prompts' maps count: the lungs' alone (flat, log 8), the tumour's alone (bad)
    only_lungs, only_tumour = torch.tensor([False, True]), torch.tensor([True, False])
    assert float(clip_demo.mass_loss(mirrored, cover, known, max_share=1.0, prompts=only_lungs)) == pytest.approx(
        np.log(8.0), abs=1e-5)
    assert float(clip_demo.mass_loss(mirrored, cover, known, max_share=1.0, prompts=only_tumour)) == pytest.approx(bad)
    assert float(clip_demo.mass_loss(mirrored, cover, known, prompts=only_lungs)) == 0.0     # lungs too large
    # the map must spread over the whole target: all of it on one of the lungs' six tokens costs more
    # than an even spread over the six
    lungs = torch.zeros(1, 8, 1)
    lungs[0, :6, 0] = 1.0
    one_lung, spread = torch.zeros(1, 8, 1), torch.zeros(1, 8, 1)
    one_lung[0, 0, 0] = 9.0
    spread[0, :6, 0] = 9.0
    ones = torch.ones(1, 1, dtype=torch.bool)
    assert (float(clip_demo.mass_loss(spread, lungs, ones, max_share=1.0))
            < float(clip_demo.mass_loss(one_lung, lungs, ones, max_share=1.0)) - 1.0)


def test_peak_loss_pays_for_the_best_token_away_from_the_target():
    # 1 image, a 4 x 4 token grid, prompts (tumor, lungs); the tumour on token (1, 1)
    cover = torch.zeros(1, 16, 2)
    cover[0, 5, 0] = 1.0
    cover[0, :9, 1] = 1.0                              # the lungs: over half the slice, not counted
    known = torch.ones(1, 2, dtype=torch.bool)
    on_peak, mirrored, beside = (torch.zeros(1, 16, 2) for _ in range(3))
    on_peak[0, 5, 0] = 6.0
    mirrored[0, 7, 0] = 6.0                            # (1, 3): two tokens away, the game is lost
    beside[0, 6, 0] = 6.0                              # (1, 2): touches the tumour, within the tolerance
    good, bad, near = (float(clip_demo.peak_loss(x, cover, known)) for x in (on_peak, mirrored, beside))
    assert good < 0.01 and bad > 5.9
    assert near == pytest.approx(float(torch.nn.functional.softplus(torch.tensor(0.0))))   # on 0, off max 0
    # only what wins counts: a second, lower token off the target changes nothing
    lower = on_peak.clone()
    lower[0, 15, 0] = 3.0
    assert float(clip_demo.peak_loss(lower, cover, known)) == pytest.approx(
        float(torch.nn.functional.softplus(torch.tensor(-3.0))))
    # unknown targets and the prompts not chosen take no part; the gradient reaches only the two tokens
    assert float(clip_demo.peak_loss(mirrored, cover, torch.zeros(1, 2, dtype=torch.bool))) == 0.0
    # lungs too large
    assert float(clip_demo.peak_loss(mirrored, cover, known, prompts=torch.tensor([False, True]))) == 0.0
    only_lungs = float(clip_demo.peak_loss(mirrored, cover, known, max_share=1.0, prompts=torch.tensor([False, True])))
    assert only_lungs == pytest.approx(np.log(2.0), abs=1e-5)                                   # flat lungs map
    only_tumour = float(clip_demo.peak_loss(mirrored, cover, known, max_share=1.0, prompts=torch.tensor([True, False])))
    assert only_tumour == pytest.approx(bad)
    x = mirrored.clone().requires_grad_(True)
    clip_demo.peak_loss(x, cover, known).backward()
    assert set(torch.nonzero(x.grad[0, :, 0]).flatten().tolist()) == {5, 7}
    assert float(x.grad[0, :, 1].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="square token grid"):
        clip_demo.peak_loss(torch.zeros(1, 15, 2), cover[:, :15], known)


def test_loss_weight_overrides_name_the_valid_terms():
    w = clip_demo.loss_weights_from_overrides(["laterality=0.3", " dense = 2"])
    assert w == {**clip_demo.LOSS_WEIGHTS, "laterality": 0.3, "dense": 2.0}
    assert clip_demo.loss_weights_from_overrides([]) == clip_demo.LOSS_WEIGHTS
    for bad, said in (("bogus=1", "laterality"), ("laterality", "TERM=W"), ("dense=-1", ">= 0"),
                      ("dense=x", ">= 0"), ("dense=nan", ">= 0")):
        with pytest.raises(ValueError, match=said):
            clip_demo.loss_weights_from_overrides([bad])


def test_init_fine_tunes_a_written_folder(trained, tmp_path):
    """``init``: the folder's weights replace the random ones; while only the heads learn the model's
    weights stay the folder's; afterwards they move; the card says what was fine-tuned."""
    out, _ = trained
    data = toy_slices(0, 160, size=64)          # the data the folder was trained on: same vocabulary
    kw = dict(batch_size=16, seed=0, lr=3e-3, log_every=20, architecture=tiny_avg_architecture(), check_saliency=0)
    start = _state(out)
    clip_demo.train_demo_clip(data, tmp_path / "heads", steps=2, init=out, head_steps=2, **kw)
    heads_only = _state(tmp_path / "heads")
    assert set(heads_only) == set(start) and all(torch.equal(heads_only[k], start[k]) for k in start)
    metrics = clip_demo.train_demo_clip(data, tmp_path / "tuned", steps=3, init=out, head_steps=2,
                                        weights={"peak": 0.5, "mass": 0.1}, mass_structures=("tumor",), **kw)
    tuned = _state(tmp_path / "tuned")
    key = "visual.trunk.blocks.0.attn.qkv.weight"
    assert not torch.equal(tuned[key], start[key])
    assert (tuned[key] - start[key]).abs().max() < 0.1           # one step at 3e-3 from the folder, not a fresh model
    assert metrics["init"] == str(out) and metrics["head_steps"] == 2
    assert metrics["loss_weights"]["peak"] == 0.5 and metrics["mass_structures"] == ["tumor"]
    assert all(np.isfinite(h["peak"]) and np.isfinite(h["mass"]) for h in metrics["history"])
    card = json.loads((tmp_path / "tuned" / "model_card.json").read_text())
    assert card["metrics"]["init"] == str(out)
    sha = hashlib.sha256((out / "open_clip_pytorch_model.bin").read_bytes()).hexdigest()
    assert card["metrics"]["init_weights_sha256"] == metrics["init_weights_sha256"] == sha
    readme = (tmp_path / "tuned" / "README.txt").read_text()
    assert f"fine-tuned from the demo CLIP in {out} (weights SHA-256 {sha[:16]}" in readme
    assert "trained from scratch" in (out / "README.txt").read_text()


def test_init_says_what_does_not_match(trained, tmp_path):
    from medclipsam.models.clip import write_clip_folder

    out, _ = trained
    data = toy_slices(0, 160, size=64)
    kw = dict(steps=2, batch_size=16, seed=0, log_every=20, architecture=tiny_avg_architecture(), check_saliency=0)
    other = write_clip_folder(tmp_path / "other", "demo")               # another architecture and vocabulary
    with pytest.raises(ValueError, match=r"its (vocab\.txt|open_clip_config\.json) differs .* --architecture"):
        clip_demo.train_demo_clip(data, tmp_path / "a", init=other, head_steps=1, **kw)
    bare = tmp_path / "bare"                                               # the right files, no weights
    bare.mkdir()
    for name in ("vocab.txt", "open_clip_config.json", "config.json"):
        (bare / name).write_bytes((out / name).read_bytes())
    with pytest.raises(ValueError, match="no weights file"):
        clip_demo.train_demo_clip(data, tmp_path / "b", init=bare, head_steps=1, **kw)
    with pytest.raises(ValueError, match="no such model folder"):
        clip_demo.train_demo_clip(data, tmp_path / "c", init=tmp_path / "missing", head_steps=1, **kw)
    with pytest.raises(ValueError, match=r"mass_structures \['kidney'\] are not structures"):
        clip_demo.train_demo_clip(data, tmp_path / "e", mass_structures=("kidney",), weights={"mass": 0.1}, **kw)
    with pytest.raises(ValueError, match="head_steps"):
        clip_demo.train_demo_clip(data, tmp_path / "d", init=out, head_steps=3, **kw)
    assert not any((tmp_path / d / "open_clip_pytorch_model.bin").exists() for d in "abcde")    # nothing written
