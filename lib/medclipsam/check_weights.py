"""``medclipsam check-weights``: load the CLIP and SAM models a server or command would use and say
whether they work — before a radiologist's first request finds out.

For each model: the specification, what it resolved to (architecture; demo or random weights),
the checkpoint files with size and SHA-256 (to compare with the published ones), and for CLIP a
forward pass (two prompts and a blank image give finite, unit-length embeddings). SAM is checked
by loading its checkpoint strictly (every tensor present with its shape). A missing, truncated or
mismatched checkpoint stops with the loader's message (the file, what was expected, where to get it)
and exit code 2. Last line: ``clip=ok sam=ok``.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

from .errors import CheckpointError

HASH_CHUNK = 1 << 20


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_files(spec: str) -> list[Path]:
    """The weight files a spec points at (none for hub or random specs)."""
    kind, _, rest = spec.partition(":")
    p = Path(rest).expanduser()
    if kind in ("hf-hub", "random") or rest in ("random", ""):
        return []
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.suffix in (".bin", ".pth", ".pt", ".safetensors"))
    return [p] if p.is_file() else []


def _describe(label: str, model, spec: str, seconds: float) -> None:
    kind = "RANDOM WEIGHTS" if model.random_weights else ("DEMO MODEL" if getattr(model, "demo", False) else "weights")
    print(f"{label}: {spec} -> architecture {model.architecture}, {kind}, loaded in {seconds:.1f} s on {model.device}")
    for f in checkpoint_files(spec):
        print(f"  {f} ({f.stat().st_size / 1e6:.1f} MB) sha256 {sha256(f)}")


def check_clip(clip) -> None:
    import numpy as np
    import torch

    from .image import clip_input

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
    from .cli import _device
    from .models import load_clip, load_sam

    device = _device(args.device)
    t0 = time.perf_counter()
    clip = load_clip(args.clip, device=device)
    _describe("clip", clip, args.clip, time.perf_counter() - t0)
    check_clip(clip)
    t0 = time.perf_counter()
    sam = load_sam(args.sam, device=device)
    _describe("sam", sam, args.sam, time.perf_counter() - t0)
    for m in (clip, sam):
        for note in m.identity().get("notes", []):
            print(f"  note: {note}")
    print("clip=ok sam=ok")
    return 0


def add_parser(sub, defaults: dict[str, str]) -> None:
    p = sub.add_parser("check-weights", help="load the CLIP and SAM models and check that they work",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", default=defaults["clip"], help="CLIP model spec (as for 'segment')")
    p.add_argument("--sam", default=defaults["sam"], help="SAM model spec (as for 'segment')")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(func=cmd_check_weights)
