"""Radiological display orientation of a slice: how a viewer shows it, and how the models see it.

A series stores its pixels in whatever order the scanner wrote them: ImageOrientationPatient may run
the rows right → left (a feet-first axial series: the patient's left on the image's left), or down
the patient's side (a transposed plane). A viewer (Slicer, OHIF) reorients the slice before showing
it, and the images CLIP and SAM learnt from are shown the same way, so "left lung" only means one
side of the picture if the slice is reoriented first. The convention (radiological):

* axial: the patient's right on the image's left, anterior at the top (screen → is +x, ↓ is +y in LPS);
* coronal: the patient's right on the image's left, superior at the top (→ +x, ↓ −z);
* sagittal: anterior on the left, superior at the top (→ +y, ↓ −z).

The plane is the one the slice normal is closest to; oblique slices get the nearest of the eight
in-plane flips/transposes (no resampling, so nothing is interpolated and the inverse is exact).
:class:`DisplayOrientation` applies that to a 2D (or H×W×C) array and inverts it for masks, which go
back to the stored grid. Images without patient geometry (2D ultrasound, X-ray) stay as stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import Geometry

# LPS unit vectors of the screen's → and ↓ directions, per plane
SCREEN_AXES: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "axial": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),
    "coronal": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])),
    "sagittal": (np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])),
}
_PLANE_BY_NORMAL_AXIS = ("sagittal", "coronal", "axial")      # normal along x, y, z


@dataclass(frozen=True)
class DisplayOrientation:
    """In-plane transpose then flips that turn a stored slice into its radiological display."""

    transpose: bool = False      # swap rows and columns first
    flip_rows: bool = False      # then flip top ↔ bottom
    flip_cols: bool = False      # then flip left ↔ right
    plane: str = "as stored"

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Stored slice (H×W or H×W×C) → displayed slice."""
        a = np.swapaxes(array, 0, 1) if self.transpose else array
        if self.flip_rows:
            a = a[::-1]
        if self.flip_cols:
            a = a[:, ::-1]
        return np.ascontiguousarray(a)

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Displayed slice (e.g. a mask made on it) → the stored slice's pixel order."""
        a = array[:, ::-1] if self.flip_cols else array
        if self.flip_rows:
            a = a[::-1]
        if self.transpose:
            a = np.swapaxes(a, 0, 1)
        return np.ascontiguousarray(a)

    def describe(self) -> str:
        steps = [s for s, on in (("transposed", self.transpose), ("flipped top-bottom", self.flip_rows),
                                 ("flipped left-right", self.flip_cols)) if on]
        return f"{self.plane}: " + (", ".join(steps) if steps else "as stored")


AS_STORED = DisplayOrientation()


def display_orientation(geometry: Geometry) -> DisplayOrientation:
    """The reorientation that shows slices of ``geometry`` in radiological convention (module docstring)."""
    if not geometry.has_patient_geometry:
        return AS_STORED
    d = geometry.direction_matrix()
    row_dir, col_dir = d[:, 0], d[:, 1]          # LPS direction of increasing column index / row index
    normal = np.cross(row_dir, col_dir)
    plane = _PLANE_BY_NORMAL_AXIS[int(np.argmax(np.abs(normal)))]
    right, down = SCREEN_AXES[plane]
    transpose = bool(abs(float(col_dir @ right)) > abs(float(row_dir @ right)))
    across, along = (col_dir, row_dir) if transpose else (row_dir, col_dir)
    return DisplayOrientation(transpose=transpose, flip_rows=bool(float(along @ down) < 0),
                              flip_cols=bool(float(across @ right) < 0), plane=plane)


__all__ = ["DisplayOrientation", "AS_STORED", "SCREEN_AXES", "display_orientation"]
