"""Segment Anything models built from JSON architecture configs.

``--sam`` specifications: ``ARCH:PATH`` (``vit_b:/models/sam_vit_b_01ec64.pth``) or ``ARCH:random``,
where ARCH is a bundled architecture (``vit_b``, ``vit_l``, ``vit_h``, ``tiny``) or the path of a
JSON architecture file. The model is assembled from segment-anything's own classes
(``ImageEncoderViT``, ``PromptEncoder``, ``MaskDecoder``, ``TwoWayTransformer``), so the official
checkpoints load unchanged and smaller variants (tests, demo models) use the same code paths.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelSpecError
from .cards import DEMO_NOTICE, is_demo, read_card, sam_card_path
from .checkpoints import load_strict, read_state_dict

SAM_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "sam"


@dataclass
class SamArchitecture:
    name: str
    image_size: int = 1024
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: list[int] = field(default_factory=lambda: [2, 5, 8, 11])
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    description: str = ""
    checkpoint: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, path: str | Path) -> "SamArchitecture":
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ModelSpecError(f"cannot read SAM architecture file {p}: {e}") from None
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ModelSpecError(f"SAM architecture file {p} has unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_sam_architectures() -> list[str]:
    return sorted(p.stem for p in SAM_CONFIG_DIR.glob("*.json"))


def sam_architecture(name_or_path: str) -> SamArchitecture:
    p = SAM_CONFIG_DIR / f"{name_or_path}.json"
    if p.is_file():
        return SamArchitecture.from_json(p)
    if name_or_path.endswith(".json") and Path(name_or_path).is_file():
        return SamArchitecture.from_json(name_or_path)
    raise ModelSpecError(f"unknown SAM architecture '{name_or_path}'; bundled: {', '.join(list_sam_architectures())} "
                         "(or give the path of a JSON architecture file)")


def build_sam(arch: SamArchitecture) -> torch.nn.Module:
    """Assemble an (untrained) SAM from segment-anything's classes."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    embed = arch.image_size // arch.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.encoder_depth, embed_dim=arch.encoder_embed_dim, img_size=arch.image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=arch.encoder_num_heads,
            patch_size=arch.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(arch.encoder_global_attn_indexes), window_size=arch.window_size,
            out_chans=arch.prompt_embed_dim),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim, image_embedding_size=(embed, embed),
            input_image_size=(arch.image_size, arch.image_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=arch.decoder_depth, embedding_dim=arch.prompt_embed_dim,
                                          mlp_dim=arch.decoder_mlp_dim, num_heads=arch.decoder_num_heads),
            transformer_dim=arch.prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=arch.iou_head_hidden_dim),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


@dataclass
class SamModel:
    model: torch.nn.Module
    spec: str
    architecture: str
    random_weights: bool
    device: torch.device
    card: dict[str, Any] = field(default_factory=dict)     # X.json beside the checkpoint X.pth

    @property
    def demo(self) -> bool:
        return is_demo(self.card)

    def identity(self) -> dict[str, Any]:
        notes = (["RANDOM WEIGHTS: masks are meaningless; use only to measure cost"] if self.random_weights else [])
        if self.demo:
            notes.append(DEMO_NOTICE.upper())
        out = {"spec": self.spec, "architecture": self.architecture, "random_weights": self.random_weights,
               "notes": notes}
        if self.card:
            out["model_card"] = dict(self.card)
        return out


def _describe_checkpoint(state: dict[str, torch.Tensor]) -> str:
    w = state.get("image_encoder.patch_embed.proj.weight")
    if w is None:
        return "not a SAM checkpoint (no image_encoder.patch_embed.proj.weight)"
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    width = int(w.shape[0])
    for name in list_sam_architectures():
        a = sam_architecture(name)
        if a.encoder_embed_dim == width and a.encoder_depth == depth:
            return f"a SAM {name} checkpoint (image encoder width {width}, {depth} blocks)"
    return f"a SAM checkpoint with image encoder width {width} and {depth} blocks"


def load_sam(spec: str, device: str | torch.device = "cpu", seed: int = 0) -> SamModel:
    """Load SAM from ``ARCH:PATH`` or ``ARCH:random`` (see the module docstring)."""
    device = torch.device(device)
    if ":" not in spec:
        raise ModelSpecError(
            f"cannot understand the SAM specification '{spec}'; use ARCH:PATH (e.g. vit_b:/models/sam_vit_b_01ec64.pth) "
            f"or ARCH:random, with ARCH in {list_sam_architectures()} or a JSON architecture file")
    arch_name, source = spec.split(":", 1)
    arch = sam_architecture(arch_name)
    ck = arch.checkpoint or {}
    expected = (f"{ck['file']} (≈{ck['size_mb']} MB)" if ck else f"a checkpoint saved from the '{arch.name}' architecture")
    where = (f"Download it from {ck['url']}." if ck.get("url") else
             "Train or export it with the project's recipes (training/).")
    if source == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_sam(arch)
        return SamModel(model.to(device).eval(), spec, arch.name, True, device)
    min_bytes = int(ck["size_mb"] * 0.9e6) if ck.get("size_mb") else None
    state = read_state_dict(source, what=f"SAM {arch.name} checkpoint", expected=expected, where=where,
                            min_bytes=min_bytes)
    model = build_sam(arch)
    load_strict(model, state, what=f"SAM {arch.name} checkpoint", path=source,
                hint=f"The file is {_describe_checkpoint(state)}; expected {expected}. {where}")
    return SamModel(model.to(device).eval(), spec, arch.name, False, device, read_card(sam_card_path(source)))


def save_sam_checkpoint(model: torch.nn.Module, path: str | Path) -> Path:
    """Save a SAM state dict in the official ``.pth`` format (what :func:`load_sam` reads)."""
    import os

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".partial")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, p)
    return p
