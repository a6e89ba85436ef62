"""Inference with the checkpoint ensemble: the mean of the members' class probabilities, its label,
a per-voxel entropy map and one uncertainty number per study (the members' mutual information per
labelled voxel, :mod:`.uncertainty`).

:class:`EnsemblePredictor` reloads the published ensemble when its manifest changes (a newly
trained ensemble is used by the next request, without a restart) and serialises requests.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data import normalise_volume, resize_slices
from .train import MANIFEST, load_members
from .uncertainty import entropy_map, mutual_information, study_uncertainty

SLICE_BATCH = 16


@dataclass
class EnsembleResult:
    labels: np.ndarray            # uint8 (slices, rows, cols): class index = vocabulary value
    entropy: np.ndarray           # float32 (slices, rows, cols), 0..1: entropy of the mean probabilities
    uncertainty: float            # summed mutual information per labelled voxel (uncertainty.py)
    mean_entropy: float           # mean entropy over the labelled voxels
    members: int
    member_agreement: float       # mean pairwise Dice of the members' foregrounds (1: identical)


def predict_volume(nets: list[torch.nn.Module], volume: np.ndarray, size: int,
                   device: torch.device | str = "cpu") -> EnsembleResult:
    """Ensemble prediction on a raw volume (slices, rows, cols) in its own grid."""
    device = torch.device(device)
    x_all = torch.from_numpy(normalise_volume(volume))[:, None]
    n, rows, cols = volume.shape
    labels = np.zeros((n, rows, cols), np.uint8)
    entropy = np.zeros((n, rows, cols), np.float32)
    mi_sum = 0.0
    member_fg = np.zeros((len(nets), n, rows, cols), bool)
    amp = device.type == "cuda"
    with torch.no_grad():
        for s in range(0, n, SLICE_BATCH):
            x = resize_slices(x_all[s:s + SLICE_BATCH], size, "bilinear").to(device)
            probs = []
            for net in nets:
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                    logits = net(x)
                p = torch.softmax(logits.float(), dim=1)
                if (rows, cols) != (size, size):
                    p = F.interpolate(p, size=(rows, cols), mode="bilinear", align_corners=False)
                probs.append(p.cpu())
            stack = torch.stack(probs)                                  # (M, B, C, H, W)
            mean = stack.mean(0)
            labels[s:s + SLICE_BATCH] = mean.argmax(1).numpy().astype(np.uint8)
            entropy[s:s + SLICE_BATCH] = entropy_map(mean.transpose(0, 1)).numpy()
            mi_sum += float(mutual_information(stack.transpose(1, 2)).sum(dtype=torch.float64))
            member_fg[:, s:s + SLICE_BATCH] = (stack.argmax(2) > 0).numpy()
    labelled = labels > 0
    uncertainty = study_uncertainty(mi_sum, int(labelled.sum()))
    mean_entropy = float(entropy[labelled].mean()) if labelled.any() else 0.0
    return EnsembleResult(labels, entropy, uncertainty, mean_entropy, len(nets), _agreement(member_fg))


def _agreement(fg: np.ndarray) -> float:
    m = fg.shape[0]
    if m < 2:
        return 1.0
    flat = fg.reshape(m, -1)
    dices = []
    for i in range(m):
        for j in range(i + 1, m):
            denom = flat[i].sum() + flat[j].sum()
            dices.append(1.0 if denom == 0 else 2.0 * (flat[i] & flat[j]).sum() / denom)
    return float(np.mean(dices))


class EnsemblePredictor:
    """The published ensemble in ``folder``, reloaded when ``ensemble.json`` changes (module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._loaded: dict[str, tuple[float, dict[str, Any], list[torch.nn.Module]]] = {}
        self.loads = 0

    def available(self) -> bool:
        return (self.folder / MANIFEST).is_file()

    def _members(self, device: torch.device) -> tuple[dict[str, Any], list[torch.nn.Module]]:
        stamp = (self.folder / MANIFEST).stat().st_mtime_ns if self.available() else -1
        key = str(device)
        cached = self._loaded.get(key)
        if cached is None or cached[0] != stamp:
            manifest, nets = load_members(self.folder, device)
            self._loaded[key] = (stamp, manifest, nets)
            self.loads += 1
        return self._loaded[key][1], self._loaded[key][2]

    def __call__(self, volume: np.ndarray, device: torch.device | str = "cpu") -> tuple[EnsembleResult, dict[str, Any]]:
        device = torch.device(device)
        with self._lock:
            manifest, nets = self._members(device)
            return predict_volume(nets, volume, int(manifest["size"]), device), manifest
