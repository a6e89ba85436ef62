"""Reading checkpoint files with errors that name the file, what was expected and where to get it."""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks (to compare weights with the published digest)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | os.PathLike, *, what: str, expected: str, where: str,
                    min_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Load a PyTorch state dict from ``path`` (``.pth`` / ``.bin`` / ``.pt`` / ``.safetensors``).

    ``what`` names the model ("SAM vit_b checkpoint"), ``expected`` the file one should have
    (name and size), ``where`` how to get it. Missing, empty, truncated or non-checkpoint files
    raise :class:`CheckpointError` with all three; ``min_bytes`` (the least a complete file has) is
    reported when a file that fails to load is too short. A file that loads but belongs to another
    architecture is reported by :func:`load_strict`, which names the mismatch.
    """
    p = Path(path).expanduser()
    hint = f"Expected {expected}. {where}"
    if not p.exists():
        raise CheckpointError(f"{what} not found: {p}. {hint}")
    if p.is_dir():
        raise CheckpointError(f"{what} path is a folder, not a file: {p}. {hint}")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"{what} is empty (0 bytes): {p}. {hint}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p), device="cpu")
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        short = f" ({size / 1e6:.1f} MB, expected at least {min_bytes / 1e6:.0f} MB)" if (
            min_bytes is not None and size < min_bytes) else f" ({size / 1e6:.1f} MB)"
        raise CheckpointError(
            f"{what} is truncated or not a PyTorch checkpoint: {p}{short}: "
            f"{type(e).__name__}: {str(e).splitlines()[0].rstrip('.') if str(e) else ''}. Download it again. {hint}"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{what} does not hold a state dict of tensors: {p}. {hint}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], *, what: str, path: str | os.PathLike,
                hint: str) -> None:
    """``load_state_dict(strict=True)`` whose failure lists the first mismatches in plain words."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if shape:
            parts.append(f"{len(shape)} shape mismatches (e.g. {'; '.join(shape[:2])})")
        raise CheckpointError(f"{what} at {path} does not match the model architecture: {'; '.join(parts)}. {hint}")
    module.load_state_dict(state, strict=True)
