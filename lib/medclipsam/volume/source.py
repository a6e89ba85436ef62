"""What the slice engine reads: a volume that hands out one slice at a time.

A :class:`VolumeSource` knows its :class:`~medclipsam.geometry.Geometry` and modality and
reads slice ``k`` on demand, so a long series is streamed rather than held in memory (DICOM series
read their files lazily). :class:`ArrayVolume` wraps an in-memory array (NIfTI/NRRD input, tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..geometry import Geometry


@runtime_checkable
class VolumeSource(Protocol):
    geometry: Geometry
    modality: str                 # DICOM Modality ("CT", "MR", "US", "DX", ...) or "OT" when unknown
    is_rgb: bool                  # slices are uint8 rows×cols×3 (ultrasound, photographs)
    window_hint: tuple[float, float] | None   # (low, high) from the source (DICOM WindowCenter/Width)
    notes: list[str]              # what the reader skipped or handled (shown to the user)
    description: str              # one line naming the input (series description, file name)

    def __len__(self) -> int: ...

    def read_slice(self, k: int) -> np.ndarray:
        """Slice ``k`` in sorted order: float32 rows×cols in physical units (CT: HU, after
        RescaleSlope/Intercept), or uint8 rows×cols×3 when :attr:`is_rgb`."""
        ...


@dataclass
class ArrayVolume:
    """A volume held in memory: ``array`` is slices×rows×cols (or ×3 for RGB)."""

    array: np.ndarray
    geometry: Geometry
    modality: str = "OT"
    window_hint: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)
    description: str = "array"

    def __post_init__(self) -> None:
        a = np.asarray(self.array)
        if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[3] != 3):
            raise ValueError(f"expected slices×rows×cols (or ×3 RGB), got shape {a.shape}")
        if tuple(a.shape[:3]) != tuple(self.geometry.shape):
            raise ValueError(f"array shape {a.shape[:3]} does not match geometry shape {self.geometry.shape}")
        self.array = a

    @property
    def is_rgb(self) -> bool:
        return self.array.ndim == 4

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def read_slice(self, k: int) -> np.ndarray:
        s = self.array[k]
        return np.ascontiguousarray(s if self.is_rgb else s.astype(np.float32, copy=False))
