"""The phantom data types: one rendered 2D example (:class:`PhantomSlice`) and a 3D series with its
truth (:class:`PhantomSeries`), plus the structure names and their aliases.

Label conventions: ``body`` holds everything inside the skin; an organ's label **includes** a
tumour inside it (as in LiTS/BraTS-style truth), so organs and their tumour overlap; all other
structures are disjoint. :meth:`PhantomSeries.label_volume` paints names in the order given, so
put containing structures first (``["body", "liver", "tumor"]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..geometry import Geometry

STRUCTURES = ("body", "left lung", "right lung", "liver", "spine", "tumor", "brain", "lesion")

# other names callers may use for a structure (or a union of structures)
ALIASES: dict[str, tuple[str, ...]] = {
    "lungs": ("left lung", "right lung"),
    "both lungs": ("left lung", "right lung"),
    "lung": ("left lung", "right lung"),
    "tumour": ("tumor",),
    "mass": ("tumor",),
    "vertebra": ("spine",),
    "head": ("body",),
}


def resolve(name: str, available: Sequence[str]) -> tuple[str, ...]:
    """The structures ``name`` stands for that exist in ``available`` (empty when none exist).

    Raises KeyError for a name that is neither a structure nor an alias.
    """
    key = name.strip().lower()
    if key in STRUCTURES:
        parts: tuple[str, ...] = (key,)
    elif key in ALIASES:
        parts = ALIASES[key]
    else:
        raise KeyError(f"unknown structure {name!r}; known: {', '.join(STRUCTURES + tuple(ALIASES))}")
    return tuple(p for p in parts if p in available)


# Grey levels (of 255) between a structure and its surroundings below which a rendering hides it: a
# hepatic tumour (25–40 HU against the liver) shows 9–18 levels in the soft-tissue window, 2–5 in the
# lung and bone windows, where nobody could point at it; its label there would teach a model to
# guess it from context.
VISIBLE_LEVELS = 6.0


def rendered_contrast(value: float, surround: float, window) -> float:
    """|rendered(value) − rendered(surround)| in grey levels (0–255) under ``window``; a window
    without bounds (values shown as stored) scales 0–255 values as they are."""
    if window.low is None or window.high is None:
        lo, hi = 0.0, 255.0
    else:
        lo, hi = float(window.low), float(window.high)
    def rendered(v: float) -> float:
        return min(max((float(v) - lo) / max(hi - lo, 1e-6), 0.0), 1.0) * 255.0

    return abs(rendered(value) - rendered(surround))


@dataclass(eq=False)
class PhantomSlice:
    """One 2D training/evaluation example with its truth."""

    rgb: np.ndarray                    # uint8 H×W×3, rendered as the pipeline sees it
    masks: dict[str, np.ndarray]       # structure → bool H×W (the phantom's structures; all-False where absent)
    caption: str                       # names what is visible on this image
    modality: str                      # "CT", "MR", "US", "DX"
    kind: str                          # "ct-chest", "mr-brain", "us-breast", "xray-chest"
    target: str | None = None          # the target the rendering window was chosen for (CT/MR), if any
    window: str = "as-stored"          # the window preset used for rgb
    hidden: tuple[str, ...] = ()       # structures present in ``masks`` but not visible in this window
    visible_caption: str = ""          # the caption naming only what this rendering shows ("" = caption)

    def mask(self, name: str) -> np.ndarray:
        """The mask of a structure or alias (``"lungs"`` = left ∪ right); all-False when absent."""
        out = np.zeros(self.rgb.shape[:2], dtype=bool)
        for part in resolve(name, tuple(self.masks)):
            out |= self.masks[part]
        return out

    def present(self, name: str) -> bool:
        return bool(self.mask(name).any())


@dataclass(eq=False)
class PhantomSeries:
    """A 3D phantom series: values in physical units, boolean labels, geometry and captions."""

    values: np.ndarray                 # float32 slices×rows×cols (CT: HU; MR: arbitrary units), integer-valued
    labels: dict[str, np.ndarray]      # structure → bool slices×rows×cols
    geometry: Geometry
    modality: str
    kind: str
    captions: list[str]                # one per slice
    seed: int = 0
    plane: str = "axial"
    patient_position: str = "HFS"
    design: dict[str, float] = field(default_factory=dict)   # design value per tissue (CT: HU)
    description: str = ""              # e.g. "T2-weighted", tumour host
    # structure → the tissue around it (keys of ``design``): a structure whose design value differs
    # from its surroundings' by less than VISIBLE_LEVELS grey levels in a rendering is hidden there
    hosts: dict[str, str] = field(default_factory=dict)
    # (slice index, hidden structures) → the caption of that slice naming only what is visible
    captioner: Callable[[int, tuple[str, ...]], str] | None = None
    _windows: dict = field(default_factory=dict, init=False, repr=False)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def label(self, name: str) -> np.ndarray:
        """The bool volume of a structure or alias (all-False when the phantom lacks it)."""
        out = np.zeros(self.values.shape, dtype=bool)
        for part in resolve(name, tuple(self.labels)):
            out |= self.labels[part]
        return out

    def label_volume(self, names: Sequence[str]) -> np.ndarray:
        """uint8 slices×rows×cols with label ``i + 1`` where ``names[i]`` is (later names win)."""
        if len(names) > 255:
            raise ValueError("at most 255 names fit a uint8 label volume")
        out = np.zeros(self.values.shape, dtype=np.uint8)
        for i, name in enumerate(names):
            out[self.label(name)] = i + 1
        return out

    def present_slices(self, name: str) -> np.ndarray:
        """Indices of the slices where ``name`` has voxels."""
        return np.flatnonzero(self.label(name).reshape(len(self), -1).any(axis=1))

    def source(self):
        """The series as a :class:`~medclipsam.volume.ArrayVolume` (what the slice engine reads)."""
        from ..volume.source import ArrayVolume

        return ArrayVolume(self.values, self.geometry, modality=self.modality,
                           description=f"{self.kind} phantom seed {self.seed}")

    def window(self, target: str | None = None):
        """The :class:`~medclipsam.volume.render.Window` the engine would choose for ``target``."""
        from ..volume.render import choose_window

        key = (target or "").strip().lower()
        if key not in self._windows:
            self._windows[key] = choose_window(self.source(), [key] if key else [])
        return self._windows[key]

    def slice(self, k: int, target: str | None = None) -> PhantomSlice:
        """Slice ``k`` rendered with the window :func:`choose_window` picks for ``target``, in the
        radiological display orientation the volume engine shows the models (image and masks alike;
        :mod:`medclipsam.volume.display`)."""
        from ..volume.display import display_orientation
        from ..volume.render import render_slice

        n = len(self)
        if not -n <= k < n:
            raise IndexError(f"slice {k} is outside 0..{n - 1}")
        k %= n
        window = self.window(target)
        shown = display_orientation(self.geometry)
        rgb = shown.apply(render_slice(self.values[k], window))
        masks = {name: shown.apply(vol[k]) for name, vol in self.labels.items()}
        hidden = tuple(name for name in sorted(self.hosts) if masks.get(name) is not None and masks[name].any()
                       and rendered_contrast(self.design[name], self.design[self.hosts[name]], window) < VISIBLE_LEVELS)
        visible = self.captioner(k, hidden) if hidden and self.captioner is not None else ""
        return PhantomSlice(rgb=rgb, masks=masks, caption=self.captions[k], modality=self.modality, kind=self.kind,
                            target=target, window=window.preset, hidden=hidden, visible_caption=visible)

    def write_dicom(self, folder: str | Path) -> list[Path]:
        """Write a classic single-frame series (one file per slice, in array order); see :mod:`.dicom_io`."""
        from .dicom_io import write_series

        return write_series(self, folder)


__all__ = ["STRUCTURES", "ALIASES", "resolve", "PhantomSlice", "PhantomSeries", "VISIBLE_LEVELS", "rendered_contrast"]
