"""BiomedCLIP (and BiomedCLIP-shaped models) through open_clip.

Model specifications (``--clip``):

``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``
    the published weights, where internet exists.
``local-dir:PATH``
    an offline folder with ``open_clip_config.json``, weights (``open_clip_pytorch_model.bin``),
    tokenizer files (``vocab.txt``) and the text tower's BERT ``config.json``: a copy of the
    Hugging Face repository plus the PubMedBERT ``config.json``, or a folder written by
    :func:`write_clip_folder` (our demo and test models).
``hf-biomedclip:PATH``
    the MedCLIP-SAMv2 DHN-NCE fine-tuned checkpoint in the Hugging Face layout of
    ``chuhac/BiomedCLIP-vit-bert-hf`` (``pytorch_model.bin`` with ``vocab.txt`` beside it),
    converted to the open_clip layout by :mod:`medclipsam.models.hf_convert`.
``demo``
    the demo CLIP shipped with the package (:mod:`.shipped`), i.e. ``local-dir:`` its folder.
``random[:ARCH]``
    a bundled architecture (``biomedclip`` = full size, ``tiny`` = unit tests) with random
    weights: for measuring cost only; every result made with it says so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import CheckpointError, InputError, ModelSpecError
from . import timm_vits  # noqa: F401  (registers our small ViTs with timm)
from .cards import DEMO_NOTICE, MODEL_CARD, is_demo, read_card
from .checkpoints import load_strict, read_state_dict
from .shipped import expand_clip_spec
from .towers import VisionTower
from .vocab import build_wordpiece_vocab, write_tokenizer_files

log = logging.getLogger(__name__)

CLIP_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "clip"
BIOMEDCLIP_HUB = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
WEIGHT_FILE_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)
# Words added to the vocabulary of models we build (random or demo) so common prompts are whole tokens.
DEFAULT_VOCAB_WORDS = (
    "a an the of in with and or on showing scan image medical ct mri x-ray ultrasound chest brain breast "
    "lung lungs left right tumor tumour mass lesion liver kidney spine bone heart body nodule cyst "
    "malignant benign suspicious round irregular dark bright region area organ"
).split()

LOCAL_DIR_HELP = (
    "A local-dir folder must hold open_clip_config.json, the weights (open_clip_pytorch_model.bin), the "
    "tokenizer files (vocab.txt, tokenizer_config.json) and the text tower's BERT config.json; for BiomedCLIP "
    "copy the files of the Hugging Face repository microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 and "
    "the config.json of microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract into one folder."
)


@dataclass
class ClipModel:
    """A loaded CLIP model with its tokenizer and pre-processing constants."""

    model: torch.nn.Module
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    spec: str
    architecture: str
    random_weights: bool
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    notes: list[str] = field(default_factory=list)
    card: dict[str, Any] = field(default_factory=dict)     # model_card.json of a local-dir: folder

    @property
    def demo(self) -> bool:
        return is_demo(self.card)

    @property
    def vision(self) -> VisionTower:
        return VisionTower(self.model.visual)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        clean = [p.strip() for p in prompts]
        if not clean or any(not p for p in clean):
            raise InputError("the text prompt is empty; give the target in words, e.g. \"left lung\"")
        return self.tokenizer(clean).to(self.device)

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, one row per prompt."""
        return self.model.encode_text(self.tokenize(prompts), normalize=True)

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels.to(self.device), normalize=True)

    def identity(self) -> dict[str, Any]:
        """What produced a result: recorded in every summary."""
        out = {"spec": self.spec, "architecture": self.architecture, "random_weights": self.random_weights,
               "notes": list(self.notes)}
        if self.card:
            out["model_card"] = dict(self.card)
        return out


# ---------------------------------------------------------------------------------------------
# bundled architectures and folders we write ourselves


def list_clip_architectures() -> list[str]:
    return sorted(p.stem for p in CLIP_CONFIG_DIR.glob("*.json"))


def clip_architecture(name: str) -> dict[str, Any]:
    path = CLIP_CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ModelSpecError(
            f"unknown CLIP architecture '{name}'; bundled ones: {', '.join(list_clip_architectures())}")
    return json.loads(path.read_text(encoding="utf-8"))


def write_clip_folder(dest: str | os.PathLike, architecture: str | dict[str, Any],
                      state_dict: dict[str, torch.Tensor] | None = None,
                      vocab_words: Sequence[str] = DEFAULT_VOCAB_WORDS) -> Path:
    """Write a ``local-dir:`` folder for a bundled (or given) architecture.

    Holds ``open_clip_config.json``, the BERT ``config.json``, ``vocab.txt`` and
    ``tokenizer_config.json``, plus ``open_clip_pytorch_model.bin`` when ``state_dict`` is given.
    """
    arch = clip_architecture(architecture) if isinstance(architecture, str) else architecture
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    text_config = dict(arch["text_config"])
    size = text_config.get("vocab_size") or None
    tokens = build_wordpiece_vocab(vocab_words, size=size)
    text_config["vocab_size"] = len(tokens)
    context = arch["open_clip_config"]["model_cfg"]["text_cfg"].get("context_length", 77)
    write_tokenizer_files(dest, tokens, model_max_length=context)
    (dest / "config.json").write_text(json.dumps(text_config, indent=2), encoding="utf-8")
    oc = json.loads(json.dumps(arch["open_clip_config"]))
    oc["medclipsam_architecture"] = arch["name"]
    (dest / "open_clip_config.json").write_text(json.dumps(oc, indent=2), encoding="utf-8")
    if state_dict is not None:
        tmp = dest / "open_clip_pytorch_model.bin.partial"
        torch.save(state_dict, tmp)
        os.replace(tmp, dest / "open_clip_pytorch_model.bin")
    return dest


# ---------------------------------------------------------------------------------------------
# loading


def load_clip(spec: str = BIOMEDCLIP_HUB, device: str | torch.device = "cpu", architecture: str = "biomedclip",
              seed: int = 0) -> ClipModel:
    """Load a CLIP model from a specification string (see the module docstring).

    ``architecture`` is the bundled architecture used by ``random`` and ``hf-biomedclip:`` specs;
    ``seed`` makes random initialisation reproducible.
    """
    device = torch.device(device)
    spec = expand_clip_spec(spec).strip()
    if spec == "random" or spec.startswith("random:"):
        arch = spec.split(":", 1)[1] if ":" in spec else architecture
        return _load_random(arch, device, seed, spec)
    if spec.startswith("local-dir:"):
        return _load_local_dir(Path(spec[len("local-dir:"):]).expanduser(), device, spec)
    if spec.startswith("hf-biomedclip:"):
        return _load_hf_layout(Path(spec[len("hf-biomedclip:"):]).expanduser(), device, spec, architecture)
    if spec.startswith("hf-hub:"):
        return _load_hf_hub(spec, device)
    if Path(spec).expanduser().is_dir():
        return _load_local_dir(Path(spec).expanduser(), device, f"local-dir:{spec}")
    raise ModelSpecError(
        f"cannot understand the CLIP model specification '{spec}'. Use one of: '{BIOMEDCLIP_HUB}' (internet), "
        "'local-dir:PATH' (offline folder), 'demo' (the shipped demo model), 'hf-biomedclip:PATH' (MedCLIP-SAMv2 "
        "fine-tuned pytorch_model.bin), "
        f"'random:ARCH' with ARCH in {list_clip_architectures()} (random weights, cost measurements only)")


def _finish(model: torch.nn.Module, tokenizer, spec: str, architecture: str, random_weights: bool,
            device: torch.device, notes: list[str] | None = None) -> ClipModel:
    model = model.to(device).eval()
    model.requires_grad_(False)
    visual = model.visual
    size = getattr(visual, "image_size", (224, 224))
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean = tuple(getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))
    std = tuple(getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))
    VisionTower(visual)  # fails early with a clear message if the image tower is not a timm ViT
    notes = list(notes or [])
    if random_weights:
        notes.append("RANDOM WEIGHTS: saliency maps and masks are meaningless; use only to measure cost")
    return ClipModel(model=model, tokenizer=tokenizer, spec=spec, architecture=architecture,
                     random_weights=random_weights, image_size=size, mean=mean, std=std, device=device, notes=notes)


def _find_weights(folder: Path) -> Path | None:
    for name in WEIGHT_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def _create_from_folder(folder: Path, spec: str) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Build the architecture described by a local-dir folder (no weights loaded yet) and its tokenizer."""
    import open_clip

    cfg_path = folder / "open_clip_config.json"
    if not folder.is_dir():
        raise CheckpointError(f"CLIP model folder not found: {folder}. {LOCAL_DIR_HELP}")
    if not cfg_path.is_file():
        raise CheckpointError(f"{folder} has no open_clip_config.json, so it is not a CLIP model folder. "
                              f"{LOCAL_DIR_HELP}")
    try:
        oc = json.loads(cfg_path.read_text(encoding="utf-8"))
        text_cfg = dict(oc["model_cfg"]["text_cfg"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{cfg_path} is not a valid open_clip config ({e}). {LOCAL_DIR_HELP}") from None
    if "hf_model_name" in text_cfg:
        if not (folder / "config.json").is_file():
            raise CheckpointError(
                f"{folder} lacks the text tower's config.json (a BERT config). Offline, the text tower "
                f"'{text_cfg['hf_model_name']}' cannot be fetched. {LOCAL_DIR_HELP}")
        text_cfg["hf_model_name"] = str(folder)
        text_cfg["hf_model_pretrained"] = False
    if not ((folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file()):
        raise CheckpointError(f"{folder} has no tokenizer files (vocab.txt or tokenizer.json). {LOCAL_DIR_HELP}")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns about the weights we load ourselves right after
    try:
        model = open_clip.create_model(f"local-dir:{folder}", load_weights=False, pretrained_text=False,
                                       text_cfg=text_cfg)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    except Exception as e:  # open_clip / timm / transformers raise many kinds
        raise CheckpointError(f"could not build the CLIP model described in {folder}: {type(e).__name__}: {e}. "
                              f"{LOCAL_DIR_HELP}") from e
    finally:
        root.setLevel(level)
    return model, tokenizer, oc


def _load_local_dir(folder: Path, device: torch.device, spec: str) -> ClipModel:
    model, tokenizer, oc = _create_from_folder(folder, spec)
    weights = _find_weights(folder)
    if weights is None:
        raise CheckpointError(
            f"no CLIP weights in {folder}: expected one of {', '.join(WEIGHT_FILE_NAMES)}. {LOCAL_DIR_HELP}")
    hint = f"Expected the open_clip weights of the architecture in {folder / 'open_clip_config.json'}. {LOCAL_DIR_HELP}"
    state = read_state_dict(weights, what="CLIP weights", expected="open_clip weights matching open_clip_config.json",
                            where=LOCAL_DIR_HELP)
    load_strict(model, state, what="CLIP weights", path=weights, hint=hint)
    arch = oc.get("medclipsam_architecture", folder.name)
    card = read_card(folder / MODEL_CARD)
    clip = _finish(model, tokenizer, spec, arch, False, device, [DEMO_NOTICE.upper()] if is_demo(card) else None)
    clip.card = card
    return clip


def _load_random(arch: str, device: torch.device, seed: int, spec: str) -> ClipModel:
    clip_architecture(arch)  # validates the name
    with tempfile.TemporaryDirectory(prefix="medclipsam-clip-") as tmp:
        folder = write_clip_folder(Path(tmp) / arch, arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, tokenizer, _ = _create_from_folder(folder, spec)
    return _finish(model, tokenizer, spec if ":" in spec else f"random:{arch}", arch, True, device)


def _load_hf_layout(path: Path, device: torch.device, spec: str, architecture: str) -> ClipModel:
    from .hf_convert import hf_to_open_clip

    folder = path if path.is_dir() else path.parent
    weights = path
    if path.is_dir():
        weights = next((path / n for n in ("pytorch_model.bin", "model.safetensors") if (path / n).is_file()),
                       path / "pytorch_model.bin")
    where = ("The MedCLIP-SAMv2 fine-tuned BiomedCLIP is distributed by its authors as pytorch_model.bin "
             "(Hugging Face layout of chuhac/BiomedCLIP-vit-bert-hf); put it in a folder together with that "
             "repository's tokenizer files (vocab.txt, tokenizer_config.json).")
    expected = "pytorch_model.bin (≈784 MB for BiomedCLIP)"
    state = read_state_dict(weights, what="MedCLIP-SAMv2 BiomedCLIP checkpoint", expected=expected, where=where)
    tok_files = [n for n in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
                 if (folder / n).is_file()]
    if not any(n in tok_files for n in ("vocab.txt", "tokenizer.json")):
        raise CheckpointError(f"no tokenizer files (vocab.txt) next to {weights}. {where}")
    with tempfile.TemporaryDirectory(prefix="medclipsam-clip-") as tmp:
        built = write_clip_folder(Path(tmp) / architecture, architecture)
        for name in tok_files:
            shutil.copy(folder / name, built / name)
        vocab_lines = ((built / "vocab.txt").read_text(encoding="utf-8").splitlines()
                       if (built / "vocab.txt").is_file() else None)
        if vocab_lines:
            text_config = json.loads((built / "config.json").read_text(encoding="utf-8"))
            text_config["vocab_size"] = len(vocab_lines)
            (built / "config.json").write_text(json.dumps(text_config), encoding="utf-8")
        model, tokenizer, _ = _create_from_folder(built, spec)
    converted = hf_to_open_clip(state)
    load_strict(model, converted, what="MedCLIP-SAMv2 BiomedCLIP checkpoint (converted to open_clip)", path=weights,
                hint=f"Expected {expected} for the '{architecture}' architecture. {where}")
    return _finish(model, tokenizer, spec, architecture, False, device,
                   notes=["converted from the Hugging Face layout (MedCLIP-SAMv2 fine-tuned BiomedCLIP)"])


def _load_hf_hub(spec: str, device: torch.device) -> ClipModel:
    import open_clip

    try:
        model = open_clip.create_model(spec, require_pretrained=True)
        tokenizer = open_clip.get_tokenizer(spec)
    except Exception as e:
        raise CheckpointError(
            f"could not load '{spec}' from the Hugging Face Hub ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            f"Without internet, download the repository elsewhere and use --clip local-dir:PATH. {LOCAL_DIR_HELP}"
        ) from None
    return _finish(model, tokenizer, spec, "biomedclip", False, device)
