"""Text targets: one prompt or a prompt ensemble, and prompt files.

A prompt ensemble (MedCLIP-SAMv2's P4/P5) is the mean of the L2-normalised text embeddings of
several prompts, normalised again. A prompt file maps a task name to its prompts::

    {"breast tumor": ["breast tumor", "A medical breast ultrasound showing ..."],
     "lungs": "lungs"}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError

PROMPT_DIR = Path(__file__).resolve().parent.parent / "configs" / "prompts"


def text_target(clip, prompts: str | Sequence[str]) -> torch.Tensor:
    """1×D normalised text embedding of one prompt or the mean of several (an ensemble)."""
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    if not items:
        raise InputError("no text prompt given; pass --prompt TEXT (or --prompt-file FILE --task NAME)")
    emb = clip.encode_text(items)
    return F.normalize(emb.mean(dim=0, keepdim=True), dim=-1)


def load_prompt_file(path: str | Path) -> dict[str, list[str]]:
    """Read a prompt file (task → prompt or list of prompts)."""
    p = Path(path)
    if not p.is_file():
        bundled = PROMPT_DIR / f"{p.name}" if p.suffix else PROMPT_DIR / f"{p.name}.json"
        if bundled.is_file():
            p = bundled
        else:
            raise InputError(f"prompt file not found: {path}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"prompt file {p} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"prompt file {p} must be a JSON object mapping a task name to a prompt or a list of prompts")
    out: dict[str, list[str]] = {}
    for task, value in data.items():
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(s, str) and s.strip() for s in items):
            raise InputError(f"prompt file {p}: task '{task}' must map to a non-empty prompt "
                             "or list of non-empty prompts")
        out[str(task)] = [s.strip() for s in items]
    return out


def prompts_for_task(path: str | Path, task: str) -> list[str]:
    table = load_prompt_file(path)
    if task not in table:
        raise InputError(f"task '{task}' is not in prompt file {path}; it has: {', '.join(sorted(table))}")
    return table[task]
