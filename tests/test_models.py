"""Model loading: bundled architectures, local-dir folders, the HF-layout converter, checkpoint errors."""

from __future__ import annotations

import json

import pytest
import torch

from medclipsam.errors import CheckpointError, ModelSpecError
from medclipsam.image import clip_input
from medclipsam.models import (
    clip_architecture,
    hf_to_open_clip,
    list_clip_architectures,
    list_sam_architectures,
    load_clip,
    load_sam,
    open_clip_to_hf,
    sam_architecture,
    save_sam_checkpoint,
    write_clip_folder,
)


def _outputs(clip, rgb):
    pixels, _ = clip_input(rgb, clip.image_size, clip.mean, clip.std)
    return clip.encode_image(pixels), clip.encode_text(["left lung", "a round tumor in the liver"])


def test_bundled_architectures():
    assert {"biomedclip", "tiny"} <= set(list_clip_architectures())
    assert {"vit_b", "vit_l", "vit_h", "tiny"} <= set(list_sam_architectures())
    full = clip_architecture("biomedclip")
    assert full["open_clip_config"]["model_cfg"]["vision_cfg"]["timm_model_name"] == "vit_base_patch16_224"
    assert full["open_clip_config"]["model_cfg"]["text_cfg"]["context_length"] == 256
    assert sam_architecture("vit_h").encoder_embed_dim == 1280


def test_registered_small_vits_build_their_token_grids():
    import timm

    from medclipsam.models.timm_vits import SMALL_VITS

    for name, kwargs in SMALL_VITS.items():
        vit = timm.create_model(name, pretrained=False, num_classes=0)
        side = kwargs["img_size"] // kwargs["patch_size"]
        assert tuple(vit.patch_embed.grid_size) == (side, side), name
        assert len(vit.blocks) == kwargs["depth"] and vit.embed_dim == kwargs["embed_dim"], name
        with pytest.raises(ValueError, match="no pretrained weights"):
            timm.create_model(name, pretrained=True)


def test_tiny_random_clip_uses_biomedclip_code_paths(tiny_clip):
    import open_clip

    assert isinstance(tiny_clip.model, open_clip.CustomTextCLIP)
    assert type(tiny_clip.model.visual).__name__ == "TimmModel"
    assert type(tiny_clip.model.text).__name__ == "HFTextEncoder"
    assert tiny_clip.random_weights and any("RANDOM WEIGHTS" in n for n in tiny_clip.identity()["notes"])
    assert tiny_clip.vision.grid_size == (8, 8)
    emb = tiny_clip.encode_text(["left lung"])
    assert torch.allclose(emb.norm(dim=-1), torch.ones(1), atol=1e-5)


def test_random_init_is_seeded():
    a = load_clip("random:tiny", seed=1).model.state_dict()
    b = load_clip("random:tiny", seed=1).model.state_dict()
    c = load_clip("random:tiny", seed=2).model.state_dict()
    key = "visual.trunk.blocks.0.attn.qkv.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


def test_local_dir_round_trip(tmp_path, tiny_clip, disk_image):
    folder = write_clip_folder(tmp_path / "model", "tiny", state_dict=tiny_clip.model.state_dict())
    assert {"open_clip_config.json", "config.json", "vocab.txt", "tokenizer_config.json",
            "open_clip_pytorch_model.bin"} <= {p.name for p in folder.iterdir()}
    loaded = load_clip(f"local-dir:{folder}")
    assert not loaded.random_weights and loaded.architecture == "tiny"
    for x, y in zip(_outputs(tiny_clip, disk_image), _outputs(loaded, disk_image)):
        assert torch.equal(x, y)


def test_hf_layout_export_and_conversion_back(tmp_path, tiny_clip, disk_image):
    state = tiny_clip.model.state_dict()
    hf = open_clip_to_hf(state)
    # the HF layout of chuhac/BiomedCLIP-vit-bert-hf: split q/k/v, flat class embedding, 2-D positions
    assert "vision_model.encoder.layers.0.self_attn.q_proj.weight" in hf
    assert not any(".qkv." in k for k in hf)
    assert hf["vision_model.embeddings.class_embedding"].ndim == 1
    assert hf["vision_model.embeddings.position_embedding.weight"].ndim == 2
    assert "text_projection.fc1.weight" in hf and "text_model.encoder.layers.1.self_attn.k_proj.weight" in hf
    assert "visual_projection.weight" in hf and "logit_scale" in hf
    back = hf_to_open_clip(hf)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)

    # as distributed: pytorch_model.bin with the tokenizer files beside it
    folder = tmp_path / "medclipsamv2"
    folder.mkdir()
    torch.save(hf, folder / "pytorch_model.bin")
    ref = write_clip_folder(tmp_path / "ref", "tiny")
    for name in ("vocab.txt", "tokenizer_config.json"):
        (folder / name).write_bytes((ref / name).read_bytes())
    converted = load_clip(f"hf-biomedclip:{folder}", architecture="tiny")
    for x, y in zip(_outputs(tiny_clip, disk_image), _outputs(converted, disk_image)):
        assert torch.allclose(x, y, atol=0, rtol=0)
    # also when given the file itself
    load_clip(f"hf-biomedclip:{folder / 'pytorch_model.bin'}", architecture="tiny")


def test_hf_conversion_reports_missing_projection():
    hf = open_clip_to_hf(load_clip("random:tiny").model.state_dict())
    del hf["vision_model.encoder.layers.2.self_attn.v_proj.bias"]
    with pytest.raises(KeyError, match="block 2"):
        hf_to_open_clip(hf)


def test_clip_checkpoint_errors(tmp_path, tiny_clip):
    with pytest.raises(CheckpointError, match="not found"):
        load_clip(f"local-dir:{tmp_path / 'nowhere'}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="open_clip_config.json"):
        load_clip(f"local-dir:{empty}")
    folder = write_clip_folder(tmp_path / "noweights", "tiny")
    with pytest.raises(CheckpointError, match="no CLIP weights"):
        load_clip(f"local-dir:{folder}")
    folder = write_clip_folder(tmp_path / "trunc", "tiny", state_dict=tiny_clip.model.state_dict())
    w = folder / "open_clip_pytorch_model.bin"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_clip(f"local-dir:{folder}")
    folder = write_clip_folder(tmp_path / "mismatch", "tiny", state_dict={"visual.trunk.cls_token": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="does not match the model architecture"):
        load_clip(f"local-dir:{folder}")
    folder = write_clip_folder(tmp_path / "nobert", "tiny", state_dict=tiny_clip.model.state_dict())
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="text tower's config.json"):
        load_clip(f"local-dir:{folder}")
    with pytest.raises(CheckpointError, match="tokenizer files"):
        (tmp_path / "hfonly").mkdir()
        torch.save(open_clip_to_hf(tiny_clip.model.state_dict()), tmp_path / "hfonly" / "pytorch_model.bin")
        load_clip(f"hf-biomedclip:{tmp_path / 'hfonly'}", architecture="tiny")
    with pytest.raises(ModelSpecError, match="random:ARCH"):
        load_clip("nonsense-spec")
    with pytest.raises(ModelSpecError, match="unknown CLIP architecture"):
        load_clip("random:vit_giant")


def test_hf_hub_without_internet_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="local-dir:PATH"):
        load_clip("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")


def test_sam_round_trip_and_errors(tmp_path, tiny_sam):
    path = save_sam_checkpoint(tiny_sam.model, tmp_path / "sam_tiny.pth")
    loaded = load_sam(f"tiny:{path}")
    assert not loaded.random_weights
    for k, v in tiny_sam.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])

    with pytest.raises(CheckpointError, match=r"sam_vit_b_01ec64\.pth.*dl\.fbaipublicfiles\.com"):
        load_sam(f"vit_b:{tmp_path / 'missing.pth'}")
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_sam(f"tiny:{trunc}")
    # a tiny checkpoint given as vit_b: the error says what the file is and what was expected
    with pytest.raises(CheckpointError, match=r"SAM tiny checkpoint.*sam_vit_b_01ec64\.pth"):
        load_sam(f"vit_b:{path}")
    notsam = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, notsam)
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        load_sam(f"tiny:{notsam}")
    with pytest.raises(ModelSpecError, match="ARCH:PATH"):
        load_sam("sam_vit_b.pth")
    with pytest.raises(ModelSpecError, match="unknown SAM architecture"):
        load_sam("vit_x:random")


def test_sam_architecture_from_json_file(tmp_path):
    arch = sam_architecture("tiny").to_dict()
    arch.update(name="custom", encoder_depth=1, encoder_global_attn_indexes=[0])
    f = tmp_path / "custom.json"
    f.write_text(json.dumps(arch))
    sam = load_sam(f"{f}:random")
    assert len(sam.model.image_encoder.blocks) == 1
    f.write_text(json.dumps({**arch, "bogus": 1}))
    with pytest.raises(ModelSpecError, match="unknown keys"):
        load_sam(f"{f}:random")


def test_demo_model_cards_are_said_everywhere(tmp_path, tiny_clip, tiny_sam):
    """A card with intended_use "demo" next to the weights: the loader reads it, the pipeline says it,
    and the SEG series description is the demo notice."""
    from medclipsam.config import PipelineConfig
    from medclipsam.errors import CheckpointError
    from medclipsam.models import load_clip, load_sam
    from medclipsam.models.cards import DEMO_NOTICE, MODEL_CARD, demo_card, sam_card_path
    from medclipsam.models.clip import write_clip_folder
    from medclipsam.models.sam import save_sam_checkpoint
    from medclipsam.pipeline import Pipeline

    folder = write_clip_folder(tmp_path / "clip", "tiny", tiny_clip.model.state_dict())
    ckpt = save_sam_checkpoint(tiny_sam.model, tmp_path / "sam.pth")
    plain = Pipeline(load_clip(f"local-dir:{folder}"), load_sam(f"tiny:{ckpt}"), PipelineConfig.from_preset("v2"))
    assert not plain.demo and not any("DEMO" in w for w in plain.warnings())
    assert plain.series_description() == "medclipsam v2 tiny + SAM tiny"
    (folder / MODEL_CARD).write_text(json.dumps(demo_card("demo-clip", steps=1)))
    sam_card_path(ckpt).write_text(json.dumps(demo_card("demo-sam")))
    clip, sam = load_clip(f"local-dir:{folder}"), load_sam(f"tiny:{ckpt}")
    assert clip.demo and sam.demo and clip.identity()["model_card"]["steps"] == 1
    demo = Pipeline(clip, sam, PipelineConfig.from_preset("v2"))
    assert demo.warnings() == [f"DEMO MODEL (CLIP and SAM): {DEMO_NOTICE}"]
    assert demo.series_description() == DEMO_NOTICE and len(DEMO_NOTICE) <= 64
    assert DEMO_NOTICE.upper() in sam.identity()["notes"]
    sam_card_path(ckpt).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        load_sam(f"tiny:{ckpt}")
