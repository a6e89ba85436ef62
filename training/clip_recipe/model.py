"""Building the model (as ``load_clip`` does), loading ``--init`` weights, and the learning-rate schedule."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch


def _build_model(folder: Path, seed: int):
    """Build the architecture of a written folder exactly as ``load_clip`` does, seeded."""
    from medclipsam.models.clip import _create_from_folder  # the loader's own builder: same modules, same keys

    torch.manual_seed(seed)
    model, tokenizer, _ = _create_from_folder(folder, f"local-dir:{folder}")
    return model, tokenizer


HEAD_LR = 3e-2       # the training heads' learning rate while they are fitted alone (``init``): six scalars


def load_init_weights(model: torch.nn.Module, staged: Path, init: Path) -> str:
    """Load the weights of the demo CLIP folder ``init`` into ``model`` (built from ``staged``, the
    folder this data gives); says what differs when the two do not match. Returns the weights
    file's SHA-256 (the card records it: a folder path alone does not say which model it held)."""
    from medclipsam.models.checkpoints import load_strict, read_state_dict
    from medclipsam.models.clip import WEIGHT_FILE_NAMES

    if not init.is_dir():
        raise ValueError(f"--init {init}: no such model folder; give a folder written by training/clip_demo.py")
    for name in ("vocab.txt", "open_clip_config.json", "config.json"):
        mine, theirs = staged / name, init / name
        if not theirs.is_file() or mine.read_bytes() != theirs.read_bytes():
            raise ValueError(f"--init {init}: its {name} differs from (or lacks) the one this data and architecture "
                             "give; fine-tune with the data (--seed, --n-train) and --architecture it was trained with")
    weights = next((init / n for n in WEIGHT_FILE_NAMES if (init / n).is_file()), None)
    if weights is None:
        raise ValueError(f"--init {init}: no weights file ({', '.join(WEIGHT_FILE_NAMES)}) in the folder")
    hint = "Give a folder written by training/clip_demo.py with the same --architecture."
    state = read_state_dict(weights, what="--init demo CLIP weights", expected=f"the {weights.name} of a demo CLIP",
                            where=hint)
    load_strict(model, state, what="--init demo CLIP weights", path=weights, hint=hint)
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def make_optimiser(model: torch.nn.Module, heads: torch.nn.Module, lr: float, fine_tune: bool) -> torch.optim.Optimizer:
    """AdamW over the model (weight decay 0.05 on matrices except the logit scale) and the training heads:
    from scratch the heads share the no-decay group and its schedule; when fine-tuning (``init``) they are
    a third group, so that they can be fitted alone first (:data:`HEAD_LR`)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "logit_scale" not in n)]
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}]
    if not fine_tune:      # the shipped recipe: heads in the no-decay group, on the same schedule
        groups[1]["params"] = no_decay + list(heads.parameters())
    else:
        groups.append({"params": list(heads.parameters()), "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
