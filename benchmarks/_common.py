"""Shared helpers for the benchmarks: machine description, RSS sampling, a synthetic CT-like slice."""

from __future__ import annotations

import os
import platform
import threading
import time

import numpy as np


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"GPU: {gpu}")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


class RssSampler:
    """Samples the process RSS every few milliseconds in a thread; ``peak`` since the last reset."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval)

    def reset(self) -> None:
        self.peak = rss_mb()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def ct_like_slice(size: int = 512, seed: int = 0) -> np.ndarray:
    """A CT-like axial slice rendered in a soft-tissue window, uint8 H×W×3 (body, lungs, spine, a lesion)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    hu = np.full((size, size), -1000.0)
    body = ((xx - 0.5) / 0.42) ** 2 + ((yy - 0.5) / 0.32) ** 2 < 1
    hu[body] = 40
    for cx in (0.33, 0.67):
        hu[((xx - cx) / 0.12) ** 2 + ((yy - 0.47) / 0.2) ** 2 < 1] = -820
    hu[((xx - 0.5) / 0.05) ** 2 + ((yy - 0.72) / 0.05) ** 2 < 1] = 700
    hu[((xx - 0.62) / 0.03) ** 2 + ((yy - 0.42) / 0.03) ** 2 < 1] = 60
    hu += rng.normal(0, 15, hu.shape)
    lo, hi = -160.0, 240.0
    g = (np.clip((hu - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)
