"""The SAM demo-model recipe (training/sam_demo.py) on a toy data set of its own.

The toy generator below stands in for ``medclipsam.phantoms``: textured grey images with a body
ellipse, a pair of dark "lungs" (two components), a bright irregular organ and a small spot, with
their masks. The tests train the ``tiny`` architecture for a few steps so that they stay fast.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]


def _load_recipe():
    name = "medclipsam_training_sam_demo"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "training" / "sam_demo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


sam_demo = _load_recipe()
STEPS = 60  # the short training run (tiny architecture, 2 images a step, 1 thread: a few CPU seconds)


# ------------------------------------------------------------------------------------------------
# toy data


@dataclass
class ToySlice:
    rgb: np.ndarray
    masks: dict[str, np.ndarray]


def _blob(shape, cy, cx, ry, rx, rng, wobble=0.15, angle=None):
    """An ellipse with a few random radial harmonics (an irregular blob)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float32)
    a = rng.uniform(0, np.pi) if angle is None else angle
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(a) + dy * np.sin(a)) / rx
    v = (-dx * np.sin(a) + dy * np.cos(a)) / ry
    r = np.sqrt(u ** 2 + v ** 2)
    theta = np.arctan2(v, u)
    edge = 1.0
    for k in (2, 3, 5):
        edge = edge + wobble / k * rng.uniform(-1, 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return r < edge


def toy_slices(seed: int, n: int, size: int = 96) -> list[ToySlice]:
    """``n`` toy slices (some non-square) with structures body, pair (two components), organ, spot."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h = size
        w = size if rng.random() < 0.7 else int(size * rng.uniform(1.1, 1.4))
        shape = (h, w)
        bg = rng.uniform(0, 40)
        body_level = bg + rng.uniform(50, 110)
        body = _blob(shape, h / 2 + rng.uniform(-3, 3), w / 2 + rng.uniform(-3, 3),
                     h * rng.uniform(0.36, 0.46), w * rng.uniform(0.36, 0.46), rng, 0.08, angle=0.0)
        img = np.full(shape, bg, np.float32)
        img[body] = body_level
        dark = body_level - rng.uniform(45, 90)
        sep = w * rng.uniform(0.14, 0.2)
        ry, rx = h * rng.uniform(0.15, 0.22), w * rng.uniform(0.08, 0.12)
        cy = h / 2 - h * rng.uniform(0.0, 0.08)
        pair = (_blob(shape, cy, w / 2 - sep, ry, rx, rng, 0.1, angle=0.0)
                | _blob(shape, cy, w / 2 + sep, ry, rx, rng, 0.1, angle=0.0)) & body
        img[pair] = dark
        organ = _blob(shape, h / 2 + h * rng.uniform(0.12, 0.22), w / 2 + rng.uniform(-0.15, 0.15) * w,
                      h * rng.uniform(0.07, 0.11), w * rng.uniform(0.1, 0.16), rng, 0.25) & body & ~pair
        bright = body_level + rng.choice([-1, 1]) * rng.uniform(35, 70)
        img[organ] = bright
        host = pair if rng.random() < 0.5 else organ
        ys, xs = np.nonzero(ndimage.binary_erosion(host, iterations=4))
        masks = {"body": body, "pair": pair, "organ": organ}
        if len(ys):
            j = int(rng.integers(len(ys)))
            spot = _blob(shape, ys[j], xs[j], rng.uniform(3.5, 7), rng.uniform(3.5, 7), rng, 0.2) & host
            img[spot] = img[ys[j], xs[j]] + rng.choice([-1, 1]) * rng.uniform(50, 90)
            masks["spot"] = spot
        noise = ndimage.gaussian_filter(rng.normal(0, 1, shape), rng.uniform(0.6, 1.5)).astype(np.float32)
        img = img + noise / (noise.std() + 1e-6) * rng.uniform(4, 10)
        img = ndimage.gaussian_filter(img, 0.6)
        g = np.clip(img, 0, 255).astype(np.uint8)
        out.append(ToySlice(np.repeat(g[..., None], 3, axis=2), {k: v.astype(bool) for k, v in masks.items()}))
    return out


# ------------------------------------------------------------------------------------------------
# tests


@pytest.fixture(scope="module")
def toy():
    return toy_slices(0, 12, size=64)


@pytest.fixture(scope="module")
def short_run(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo-sam.pth"
    metrics = sam_demo.train_demo_sam(toy[:10], out, steps=STEPS, batch_size=2, seed=3, lr=5e-3, log_every=0,
                                      architecture="tiny", val_data=toy[10:], log=None, threads=1)
    return out, metrics


def test_toy_data_is_well_formed(toy):
    for s in toy:
        assert s.rgb.dtype == np.uint8 and s.rgb.ndim == 3 and s.rgb.shape[2] == 3
        assert s.masks["pair"].any() and s.masks["body"].any()
        assert ndimage.label(s.masks["pair"], structure=np.ones((3, 3)))[1] == 2
        for m in s.masks.values():
            assert m.shape == s.rgb.shape[:2] and m.dtype == bool


def test_demo_architecture_is_bundled():
    from medclipsam.models import list_sam_architectures, sam_architecture

    assert "demo" in list_sam_architectures()
    a = sam_architecture("demo")
    assert a.image_size // a.patch_size == 32 and a.decoder_depth == 2   # a 32×32 embedding grid
    assert 128 <= a.encoder_embed_dim <= 192 and 4 <= a.encoder_depth <= 6
    assert 64 <= a.prompt_embed_dim <= 128
    assert all(0 <= i < a.encoder_depth for i in a.encoder_global_attn_indexes)


def test_box_jitter_is_loose_but_near_the_structure():
    cfg = sam_demo.PromptSampling()
    rng = np.random.default_rng(0)
    mask = np.zeros((100, 120), bool)
    mask[30:70, 40:90] = True
    box = sam_demo.bounding_box(mask)
    assert box.tolist() == [40, 30, 90, 70]
    jit = np.stack([sam_demo.jitter_box(box, mask.shape, rng, cfg) for _ in range(400)])
    size = np.array([50, 40, 50, 40])
    dev = np.abs(jit - box) / size
    assert (jit[:, 2] > jit[:, 0]).all() and (jit[:, 3] > jit[:, 1]).all()
    assert dev.max() <= cfg.box_jitter_max + cfg.enlarge_max + 1e-6
    assert dev.mean() > 0.03                                   # really jittered
    assert (jit[:, 0] < box[0] - 5).mean() > 0.05              # sometimes enlarged


def test_prompt_sampling_covers_all_kinds_and_shapes(toy):
    cfg = sam_demo.PromptSampling()
    rng = np.random.default_rng(1)
    kinds, inside, outside = {}, [], []
    for i in range(200):
        s = toy[i % len(toy)]
        p = sam_demo.sample_image_prompts(s.masks, rng, cfg)
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
        n, h, w = p.targets.shape
        assert (h, w) == s.rgb.shape[:2] and 1 <= n <= cfg.max_prompts_per_image
        if p.boxes is not None:
            assert p.boxes.shape == (n, 4)
        if p.points is not None:
            assert p.points.shape[:2] == p.labels.shape == (n, p.points.shape[1])
            assert (p.labels[:, 0] == 1).all()
            inside += [p.targets[j][int(y), int(x)] for j in range(n)
                       for (x, y), lab in zip(p.points[j], p.labels[j]) if lab == 1]
            outside += [not p.targets[j][int(y), int(x)] for j in range(n)
                        for (x, y), lab in zip(p.points[j], p.labels[j]) if lab == 0]
        if p.kind == "component_boxes":
            assert all(ndimage.label(t, structure=np.ones((3, 3)))[1] == 1 for t in p.targets)
    assert set(kinds) == {"box", "component_boxes", "points", "box+points"}
    assert 0.85 < np.mean(inside) < 1.0          # positives inside, a few spilled just outside
    assert outside and all(outside)              # negatives always outside


def test_unions_add_two_component_targets():
    a = np.zeros((20, 30), bool)
    b = np.zeros((20, 30), bool)
    a[2:8, 2:8] = True
    b[10:18, 20:28] = True
    out = sam_demo.with_unions({"l": a, "r": b, "x": np.zeros_like(a)}, {"both": ("l", "r"), "none": ("x", "l")})
    assert set(out) == {"l", "r", "x", "both"}            # "none" has one non-empty part only
    assert np.array_equal(out["both"], a | b)
    assert len(sam_demo.components(out["both"], 9)) == 2


def test_model_input_matches_sam_predictor(toy, tiny_sam):
    from segment_anything import SamPredictor
    from segment_anything.utils.transforms import ResizeLongestSide

    model = tiny_sam.model
    rgb = next(s.rgb for s in toy if s.rgb.shape[0] != s.rgb.shape[1])
    x, size = sam_demo.model_input(model, ResizeLongestSide(model.image_encoder.img_size), rgb)
    pred = SamPredictor(model)
    pred.set_image(rgb)
    assert size == tuple(pred.input_size)
    with torch.no_grad():
        assert torch.equal(model.image_encoder(x), pred.features)


def test_short_run_writes_a_checkpoint_that_load_sam_reads(short_run):
    from medclipsam.models import load_sam
    from medclipsam.models.sam import sam_architecture
    from medclipsam.prompts import VisualPrompts
    from medclipsam.sam_stage import SamSegmenter

    out, metrics = short_run
    assert out.is_file() and not out.with_name(out.name + ".partial").exists()
    sam = load_sam(f"tiny:{out}")
    assert sam.random_weights is False and sam.architecture == "tiny"
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert set(state) == set(sam.model.state_dict())
    for k, v in sam.model.state_dict().items():
        assert torch.equal(v, state[k])
    # a freshly built random tiny model differs from the trained one
    random = load_sam("tiny:random", seed=3).model.state_dict()
    assert any(not torch.equal(random[k], state[k]) for k in state if k.startswith("mask_decoder"))
    assert metrics["steps"] == STEPS and len(metrics["loss_history"]) == STEPS
    for key in ("box_dice", "point_dice", "component_box_dice"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["pairs"] > 0
    seg = SamSegmenter(sam)
    seg.set_image(np.zeros((40, 50, 3), np.uint8))
    assert seg.segment(VisualPrompts(boxes=[[5, 5, 30, 30]])).mask.shape == (40, 50)
    assert sam_architecture("tiny").encoder_embed_dim == sam.model.image_encoder.patch_embed.proj.weight.shape[0]


def test_loss_decreases(short_run):
    _, metrics = short_run
    h = metrics["loss_history"]
    assert np.mean(h[-10:]) < 0.9 * np.mean(h[:10]), h
    assert metrics["loss_last"] < metrics["loss_first"]


def test_model_card(short_run):
    out, metrics = short_run
    card_path = out.with_suffix(".json")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    assert "not for clinical use" in card["notice"] and "not for clinical use" in card["description"]
    assert "synthetic" in card["notice"]
    assert card["intended_use"] == "demo"
    assert card["pipeline_overrides"] == sam_demo.RECOMMENDED_SETTINGS      # the pipeline applies them (demo.py)
    from medclipsam.models import load_sam

    sam = load_sam(f"tiny:{out}")            # the card beside the checkpoint marks the model as a demo
    assert sam.demo and sam.card["notice"] == card["notice"]
    assert any("NOT FOR CLINICAL USE" in n for n in sam.identity()["notes"])
    assert card["architecture"]["name"] == "tiny"
    assert card["architecture"]["encoder_embed_dim"] == 64
    assert card["training"]["steps"] == STEPS and card["training"]["seed"] == 3
    assert card["training"]["batch_size"] == 2
    assert card["metrics"]["box_dice"] == pytest.approx(metrics["box_dice"])
    assert card["metrics"]["point_dice"] == pytest.approx(metrics["point_dice"])
    assert card["load"] == f'load_sam("tiny:{out}")'


def _short(toy, path, seed):
    sam_demo.train_demo_sam(toy[:6], path, steps=3, batch_size=2, seed=seed, log_every=0, architecture="tiny",
                            val_data=toy[11:], log=None, threads=1)
    return torch.load(path, map_location="cpu", weights_only=True)


def test_same_seed_same_weights(toy, tmp_path):
    a = _short(toy, tmp_path / "a.pth", 5)
    b = _short(toy, tmp_path / "b.pth", 5)
    c = _short(toy, tmp_path / "c.pth", 6)
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_trains_the_bundled_demo_architecture_and_loads_as_demo(toy, tmp_path):
    from medclipsam.models import load_sam

    out = tmp_path / "demo-sam.pth"
    before = torch.get_num_threads()
    metrics = sam_demo.train_demo_sam(toy[:4], out, steps=1, batch_size=2, seed=0, log_every=0,
                                      val_data=toy[11:], log=None, threads=1 if before != 1 else 2)
    assert torch.get_num_threads() == before      # the recipe's thread setting does not leak
    sam = load_sam(f"demo:{out}")
    assert sam.architecture == "demo" and sam.random_weights is False
    assert json.loads(out.with_suffix(".json").read_text())["architecture"]["name"] == "demo"
    assert metrics["steps"] == 1


def test_cli_says_when_phantoms_are_missing(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec

    def fake(name, *a, **k):
        return None if name == "medclipsam.phantoms" else real(name, *a, **k)

    monkeypatch.setattr(sam_demo.importlib.util, "find_spec", fake)
    rc = sam_demo.main(["--out", str(tmp_path / "x.pth"), "--steps", "1"])
    assert rc == 2
    assert "medclipsam.phantoms is missing" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()


def test_sampling_overrides_change_only_the_named_fields():
    cfg = sam_demo.sampling_from_overrides(["p_enlarge=0.5", "favoured=tumor", "point_counts=1,3", "max_negatives=2"])
    default = sam_demo.PromptSampling()
    assert cfg.p_enlarge == 0.5 and cfg.favoured == ("tumor",) and cfg.point_counts == (1, 3)
    assert cfg.max_negatives == 2 and isinstance(cfg.max_negatives, int)
    assert cfg.box_jitter == default.box_jitter and cfg.p_favoured == default.p_favoured
    assert sam_demo.sampling_from_overrides([]) == default
    with pytest.raises(ValueError, match="p_enlarge"):        # the message lists the valid keys
        sam_demo.sampling_from_overrides(["p_enlarg=0.5"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        sam_demo.sampling_from_overrides(["p_enlarge"])
    with pytest.raises(ValueError, match="max_negatives takes a int"):
        sam_demo.sampling_from_overrides(["max_negatives=many"])


def test_cli_rejects_a_bad_sampling_override_before_generating_data(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        sam_demo.main(["--out", str(tmp_path / "x.pth"), "--sampling", "nonsense=1"])
    assert e.value.code == 2
    assert "nonsense" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()


def test_cuda_without_a_gpu_is_a_clear_error(toy, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error is for machines without it")
    with pytest.raises(ValueError, match="CUDA is not available"):
        sam_demo.train_demo_sam(toy[:4], tmp_path / "x.pth", steps=1, batch_size=2, architecture="tiny",
                                val_data=toy[11:], log=None, threads=1, device="cuda")
    assert not (tmp_path / "x.pth").exists()


def test_card_records_the_device_and_the_prompt_sampling(short_run):
    out, _metrics = short_run
    training = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))["training"]
    assert training["device"] == "cpu"
    assert training["prompt_sampling"]["p_favoured"] == sam_demo.PromptSampling().p_favoured


def test_init_fine_tunes_from_a_checkpoint_and_the_card_says_so(short_run, toy, tmp_path):
    out, _metrics = short_run
    start = torch.load(out, map_location="cpu", weights_only=True)
    tuned = tmp_path / "tuned.pth"
    sam_demo.train_demo_sam(toy[:6], tuned, steps=2, batch_size=2, seed=9, lr=1e-4, log_every=0, architecture="tiny",
                            val_data=toy[11:], log=None, threads=1, init=out)
    after = torch.load(tuned, map_location="cpu", weights_only=True)
    # a fine-tune starts from the checkpoint: two small steps stay close to it, far closer than a random start
    from medclipsam.models import load_sam

    random = load_sam("tiny:random", seed=123).model.state_dict()
    near = max(float((after[k].float() - start[k].float()).abs().max()) for k in start if start[k].is_floating_point())
    far = max(float((random[k].float() - start[k].float()).abs().max()) for k in start if start[k].is_floating_point())
    assert 0 < near < 0.1 * far
    assert torch.load(out, map_location="cpu", weights_only=True).keys() == start.keys()   # the start is untouched
    assert all(torch.equal(start[k], v) for k, v in torch.load(out, map_location="cpu", weights_only=True).items())
    init = json.loads(tuned.with_suffix(".json").read_text(encoding="utf-8"))["training"]["init"]
    assert init["checkpoint"] == out.name
    assert init["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert init["training"]["seed"] == 3 and init["training"]["steps"] == STEPS     # the start's own history
    assert "fine-tuned from " + out.name in json.loads(tuned.with_suffix(".json").read_text())["description"]
    assert "from scratch" in json.loads(out.with_suffix(".json").read_text())["description"]
    scratch = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))["training"]["init"]
    assert scratch.startswith("random")


def test_init_with_another_architecture_or_a_missing_file_is_a_clear_error(short_run, toy, tmp_path, capsys):
    from medclipsam.errors import MedClipSamError

    out, _metrics = short_run
    with pytest.raises(MedClipSamError, match="tiny"):       # a tiny checkpoint is not a demo one
        sam_demo.train_demo_sam(toy[:4], tmp_path / "x.pth", steps=1, batch_size=2, architecture="demo",
                                val_data=toy[11:], log=None, threads=1, init=out)
    assert not (tmp_path / "x.pth").exists()
    with pytest.raises(SystemExit) as e:
        sam_demo.main(["--out", str(tmp_path / "y.pth"), "--init", str(tmp_path / "nope.pth")])
    assert e.value.code == 2
    assert "nope.pth" in capsys.readouterr().err and not (tmp_path / "y.pth").exists()
