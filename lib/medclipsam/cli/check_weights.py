"""``medclipsam check-weights``: load the CLIP and SAM models a server or command would use and say
whether they work — before a radiologist's first request finds out.

Only the models given are checked (``--sam litemedsam`` alone checks LiteMedSAM); with neither
``--clip`` nor ``--sam``, both defaults are. For each model: the specification, what it resolved to
(architecture; demo or random weights), the checkpoint files with size and SHA-256 (to compare with
the published ones), its model card, and a forward pass: for CLIP two prompts and a blank image
give finite, unit-length embeddings; for SAM one box on a blank image gives finite mask logits.
SAM's checkpoint is loaded strictly (every tensor present with its shape). A missing, truncated or
mismatched checkpoint stops with the loader's message (the file, what was expected, where to get it)
and exit code 2. Last line: ``clip=ok sam=ok`` (only the checked models).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import CheckpointError
from .common import pick_device


def checkpoint_files(spec: str) -> list[Path]:
    """The weight files a spec points at (none for hub or random specs)."""
    kind, _, rest = spec.partition(":")
    p = Path(rest).expanduser()
    if kind in ("hf-hub", "random") or rest in ("random", ""):
        return []
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.suffix in (".bin", ".pth", ".pt", ".safetensors"))
    return [p] if p.is_file() else []


def _describe(label: str, model, spec: str, seconds: float, files: list[Path] | None = None) -> None:
    from ..models.checkpoints import (
        file_sha256,  # imports torch: not at module level (the CLI parser imports this)
    )

    kind = "RANDOM WEIGHTS" if model.random_weights else ("DEMO MODEL" if getattr(model, "demo", False) else "weights")
    print(f"{label}: {spec} -> architecture {model.architecture}, {kind}, loaded in {seconds:.1f} s on {model.device}")
    for f in checkpoint_files(spec) if files is None else files:
        print(f"  {f} ({f.stat().st_size / 1e6:.1f} MB) sha256 {file_sha256(f)}")
    card = getattr(model, "card", None) or {}
    for key in ("name", "source", "licence", "license", "training", "intended_use", "notice"):
        if card.get(key):
            print(f"  card {key}: {card[key]}")


def sam_files(spec: str) -> list[Path]:
    """The weight file of a SAM spec, packaged weights included (``litemedsam``)."""
    from ..models.sam import _parse_spec, packaged_checkpoint

    arch, source = _parse_spec(spec)
    return [packaged_checkpoint(arch)] if source is None else checkpoint_files(spec)


def check_sam(sam) -> None:
    import numpy as np

    from ..prompts import VisualPrompts
    from ..sam_stage import SamSegmenter

    seg = SamSegmenter(sam)
    image = np.zeros((96, 128, 3), np.uint8)
    image[30:70, 40:90] = 200
    seg.set_image(image)
    out = seg.segment(VisualPrompts(boxes=[[40, 30, 89, 69]], num_components=1))
    if out.mask.shape != (96, 128) or not all(np.isfinite(out.scores)):
        raise CheckpointError(f"SAM {sam.spec}: a box on a test image gives no finite mask after loading; "
                              "the weights are damaged — get them again")
    print(f"  forward: one box on a 96×128 test image -> mask of {int(out.mask.sum())} pixels, "
          f"predicted IoU {out.scores[0]:.2f} (input recipe '{sam.preprocess}')")


def check_clip(clip) -> None:
    import numpy as np
    import torch

    from ..image import clip_input

    text = clip.encode_text(["left lung", "tumor"]).float()
    image = clip.encode_image(clip_input(np.full((64, 64, 3), 128, np.uint8), clip.image_size, clip.mean,
                                         clip.std)[0]).float()
    for name, t in (("text", text), ("image", image)):
        norms = t.norm(dim=-1)
        if not torch.isfinite(t).all() or not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
            raise CheckpointError(f"CLIP {clip.spec}: the {name} embedding is not finite and unit-length after "
                                  "loading; the weights are damaged — download them again")
    print(f"  forward: text {tuple(text.shape)}, image {tuple(image.shape)}, cos(image, 'left lung') = "
          f"{float(image[0] @ text[0]):.3f}")


def cmd_check_weights(args: argparse.Namespace) -> int:
    from ..models import load_clip, load_sam

    device = pick_device(args.device)
    clip_spec, sam_spec = args.clip, args.sam
    if clip_spec is None and sam_spec is None:
        clip_spec, sam_spec = args.default_clip, args.default_sam
    checked = []
    if clip_spec is not None:
        t0 = time.perf_counter()
        clip = load_clip(clip_spec, device=device)
        _describe("clip", clip, clip_spec, time.perf_counter() - t0)
        check_clip(clip)
        _notes(clip)
        checked.append("clip=ok")
    if sam_spec is not None:
        t0 = time.perf_counter()
        sam = load_sam(sam_spec, device=device)
        _describe("sam", sam, sam_spec, time.perf_counter() - t0, sam_files(sam_spec))
        check_sam(sam)
        _notes(sam)
        checked.append("sam=ok")
    print(" ".join(checked))
    return 0


def _notes(model) -> None:
    for note in model.identity().get("notes", []):
        print(f"  note: {note}")


def add_parser(sub, defaults: dict[str, str]) -> None:
    p = sub.add_parser("check-weights", help="load the CLIP and SAM models and check that they work",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", help="CLIP model spec (as for 'segment'); only the models given are checked")
    p.add_argument("--sam", help="SAM model spec (as for 'segment'), e.g. litemedsam")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(func=cmd_check_weights, default_clip=defaults["clip"], default_sam=defaults["sam"])
