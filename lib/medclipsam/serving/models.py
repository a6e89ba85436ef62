"""CLIP and SAM for a server: loaded on first use, once per device, thread-safe.

MONAI Label rebuilds the whole app in every training, scoring and batch-infer subprocess
(``docs/monailabel.md`` §Subprocesses), so nothing is loaded when the app is built: the first
inference on a device loads both models under a lock; a second request waiting on the lock finds
them loaded.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError


def default_clip_spec() -> str:
    from ..demo import DEMO_CLIP

    return os.environ.get("MEDCLIPSAM_CLIP") or DEMO_CLIP


def default_sam_spec() -> str:
    from ..demo import DEMO_SAM

    return os.environ.get("MEDCLIPSAM_SAM") or DEMO_SAM


@dataclass
class LoadedModels:
    clip: Any
    sam: Any
    device: torch.device


def resolve_device(name: str | None) -> torch.device:
    """A device name as clients send it: "cpu", "cuda", "cuda:1", or a GPU's name from MONAI Label's
    device list (which stands for its index); CUDA asked for where there is none is an error."""
    text = (name or "").strip()
    if not text:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {text!r} was asked for but CUDA is not available on the server; choose cpu")
        return torch.device(text)
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if torch.cuda.get_device_name(i) == text:
                return torch.device(f"cuda:{i}")
    raise InputError(f"unknown device {text!r}; choose cpu or cuda")


class ModelCache:
    """Lazily loaded CLIP + SAM per device (module docstring)."""

    def __init__(self, clip_spec: str | None = None, sam_spec: str | None = None) -> None:
        self.clip_spec = clip_spec or default_clip_spec()
        self.sam_spec = sam_spec or default_sam_spec()
        self._lock = threading.Lock()
        self._models: dict[str, LoadedModels] = {}
        self.loads = 0                              # how many times models were loaded (tests read it)

    def loaded_devices(self) -> list[str]:
        return sorted(self._models)

    def get(self, device: torch.device) -> LoadedModels:
        key = str(device)
        with self._lock:
            if key not in self._models:
                from ..models import load_clip, load_sam

                clip = load_clip(self.clip_spec, device=device)
                sam = load_sam(self.sam_spec, device=device)
                self._models[key] = LoadedModels(clip, sam, device)
                self.loads += 1
            return self._models[key]
