"""Rendering a series as the 8-bit RGB slices the models take (docs/algorithms.md §Rendering).

The pipeline was built for 8-bit figures, so a CT/MR series has to be windowed first. The window is
chosen **once per series** — never per slice, which would change contrast from slice to slice — from
a registry of presets:

====================  =========================================================================
``ct-lung``           CT, centre −600 HU, width 1500 (lungs, airways, nodules)
``ct-soft-tissue``    CT, centre 40 HU, width 400 (abdomen, mediastinum, organs, most tumours)
``ct-brain``          CT, centre 40 HU, width 80
``ct-bone``           CT, centre 400 HU, width 1800
``mr-percentile``     0.5th–99.5th percentile of the series (MR and other unscaled data)
``dicom``             the window stored in the DICOM files (WindowCenter/Width)
``as-stored``         8-bit data as stored (ultrasound, X-ray, RGB); wider data: the stored window,
                      else the series' 0.5th–99.5th percentiles
====================  =========================================================================

:func:`choose_window` picks one from the prompt vocabulary and the modality (``lung`` → ``ct-lung``,
``brain``/``haemorrhage`` → ``ct-brain``, ``bone``/``fracture``/``vertebra`` → ``ct-bone``, other CT
→ ``ct-soft-tissue``; MR → ``mr-percentile``; everything else → ``as-stored``), unless the user names
one. Percentiles are estimated from a sample of at most 32 evenly spaced slices (every 4th pixel),
so choosing a window never reads a long series into memory. MONOCHROME1 images are inverted after
windowing so that dense tissue is bright, as on the viewer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ConfigError
from ..registry import Registry
from ..rgb8 import to_rgb8
from .source import VolumeSource

SAMPLE_SLICES = 32
SAMPLE_STRIDE = 4


@dataclass(frozen=True)
class Window:
    """A resolved rendering: ``low``/``high`` in the series' units, or None for 8-bit as stored."""

    preset: str
    low: float | None
    high: float | None
    invert: bool = False
    reason: str = ""

    def describe(self) -> str:
        rng = "as stored" if self.low is None else f"[{self.low:g}, {self.high:g}]"
        return f"{self.preset} {rng}" + (" inverted (MONOCHROME1)" if self.invert else "") + \
            (f" — {self.reason}" if self.reason else "")


WindowFn = Callable[[VolumeSource], tuple[float | None, float | None]]
WINDOW_PRESETS: Registry[WindowFn] = Registry("window preset")


def _centre_width(centre: float, width: float) -> WindowFn:
    return lambda _src: (centre - width / 2.0, centre + width / 2.0)


for _name, (_c, _w) in {"ct-lung": (-600.0, 1500.0), "ct-soft-tissue": (40.0, 400.0),
                         "ct-brain": (40.0, 80.0), "ct-bone": (400.0, 1800.0)}.items():
    WINDOW_PRESETS.register(_name)(_centre_width(_c, _w))


def sample_values(src: VolumeSource, max_slices: int = SAMPLE_SLICES, stride: int = SAMPLE_STRIDE) -> np.ndarray:
    """Pixel values from up to ``max_slices`` evenly spaced slices (every ``stride``-th pixel)."""
    n = len(src)
    idx = np.unique(np.linspace(0, n - 1, num=min(n, max_slices)).round().astype(int))
    parts = [np.asarray(src.read_slice(int(k)), dtype=np.float32)[::stride, ::stride].ravel() for k in idx]
    values = np.concatenate(parts)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ConfigError("the series has no finite pixel values to choose a window from")
    return finite


@WINDOW_PRESETS.register("mr-percentile")
def _percentile_window(src: VolumeSource) -> tuple[float, float]:
    values = sample_values(src)
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    return float(lo), float(hi if hi > lo else lo + 1.0)


@WINDOW_PRESETS.register("dicom")
def _dicom_window(src: VolumeSource) -> tuple[float, float]:
    if src.window_hint is None:
        raise ConfigError("--window dicom: the series stores no WindowCenter/WindowWidth; choose a preset "
                          f"({', '.join(WINDOW_PRESETS.names())})")
    return src.window_hint


@WINDOW_PRESETS.register("as-stored")
def _as_stored(src: VolumeSource) -> tuple[float | None, float | None]:
    if src.is_rgb:
        return None, None
    values = sample_values(src)
    if values.min() >= 0 and values.max() <= 255 and np.all(values == np.round(values)):
        return None, None                      # 8-bit data: shown as stored
    if src.window_hint is not None:
        return src.window_hint
    return _percentile_window(src)


_PROMPT_WINDOWS: list[tuple[str, str]] = [
    (r"\b(lungs?|pulmonary|airways?|bronch\w*|nodules?|pneumo\w*|emphysema)\b", "ct-lung"),
    (r"\b(brain|cerebr\w*|intracranial|ha?emorrhage|h(a)?ematoma|stroke|ventricles?)\b", "ct-brain"),
    (r"\b(bones?|fractures?|vertebra\w*|ribs?|skull|femur|pelvis|spine|osseous)\b", "ct-bone"),
]


def looks_like_ct(src: VolumeSource) -> bool:
    """Unlabelled volumes (NIfTI) are taken for CT when their values look like Hounsfield units."""
    values = sample_values(src)
    low, high = np.percentile(values, [1, 99])
    return bool(low < -500 and high > -200)          # air and some tissue


def choose_window(src: VolumeSource, prompts: list[str], preset: str | None = None) -> Window:
    """Resolve the window for a series: the user's preset, else one chosen from modality and prompts."""
    invert = getattr(src, "photometric", "") == "MONOCHROME1"
    modality = (src.modality or "OT").upper()
    if preset is not None and preset != "auto":
        fn = WINDOW_PRESETS.get(preset)
        lo, hi = fn(src)
        return Window(preset, lo, hi, invert, "chosen by the user")
    if src.is_rgb:
        return Window("as-stored", None, None, False, "colour images are shown as stored")
    reason = f"{modality} series"
    if modality == "OT" and looks_like_ct(src):
        modality, reason = "CT", "values look like Hounsfield units"
    if modality == "CT":
        text = " ".join(prompts).lower()
        name = next((w for pattern, w in _PROMPT_WINDOWS if re.search(pattern, text)), "ct-soft-tissue")
        lo, hi = WINDOW_PRESETS.get(name)(src)
        return Window(name, lo, hi, invert, f"{reason}, prompt {' | '.join(prompts)!r}")
    if modality == "MR":
        lo, hi = WINDOW_PRESETS.get("mr-percentile")(src)
        return Window("mr-percentile", lo, hi, invert, reason)
    lo, hi = WINDOW_PRESETS.get("as-stored")(src)
    return Window("as-stored", lo, hi, invert, reason)


def render_slice(values: np.ndarray, window: Window) -> np.ndarray:
    """One slice (float gray or uint8 RGB) → uint8 H×W×3 with the series' window."""
    a = np.asarray(values)
    if a.ndim == 3:
        rgb = to_rgb8(a.astype(np.uint8, copy=False) if a.dtype == np.uint8 else a)
    elif window.low is None:
        rgb = to_rgb8(np.clip(a, 0, 255).astype(np.uint8))
    else:
        rgb = to_rgb8(a, window=(float(window.low), float(window.high)))
    return 255 - rgb if window.invert else rgb


__all__ = ["Window", "WINDOW_PRESETS", "choose_window", "render_slice", "sample_values", "looks_like_ct"]
