"""Geometry and shape primitives shared by the phantoms.

A 3D phantom is defined in **patient space** (DICOM LPS: +x patient left, +y posterior, +z
superior) and sampled on the voxel grid of its :class:`~medclipsam.volume.Geometry`, so labels stay
anatomically right whatever ImageOrientationPatient or slice order a seed picks.
:func:`patient_grid` gives the LPS position of every voxel centre divided by the half-extents of
the field of view ("normalised" coordinates, ≈ −1…1 inside the scanned box), which is where the
anatomy is drawn; :class:`Orientation` names the orientation variants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..geometry import Geometry


def rotation(axis: str, degrees: float) -> np.ndarray:
    """3×3 right-handed rotation about the patient ``x``, ``y`` or ``z`` axis."""
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    if axis == "z":
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    raise ValueError(f"axis must be x, y or z, got {axis!r}")


@dataclass(frozen=True)
class Orientation:
    """How the voxel grid lies in the patient.

    ``direction`` has the LPS unit vectors of the column (i), row (j) and slice (k) axes as its
    columns and is always a proper rotation (det +1: the slice axis is row × column, so sorting
    by ImagePositionPatient along the normal keeps the array's slice order). ``slice_axis`` is the
    patient axis (0 x, 1 y, 2 z) the slices are stacked along before any oblique tilt; the other two
    patient axes span the image plane.
    """

    name: str                 # "axial", "oblique", "axial-ffs", "coronal"
    plane: str                # word for captions: "axial", "oblique axial", "coronal"
    direction: np.ndarray
    slice_axis: int = 2
    patient_position: str = "HFS"

    @property
    def iop(self) -> np.ndarray:
        """ImageOrientationPatient: row direction then column direction."""
        return np.concatenate([self.direction[:, 0], self.direction[:, 1]])


AXIAL = np.eye(3)
AXIAL_FFS = np.diag([-1.0, 1.0, -1.0])                              # feet first: slices run superior → inferior
CORONAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])   # rows down = inferior; slices → posterior


def axial() -> Orientation:
    return Orientation("axial", "axial", AXIAL.copy())


def axial_feet_first() -> Orientation:
    return Orientation("axial-ffs", "axial", AXIAL_FFS.copy(), 2, "FFS")


def coronal() -> Orientation:
    return Orientation("coronal", "coronal", CORONAL.copy(), 1)


def oblique(rng: np.random.Generator, spin: tuple[float, float] = (10.0, 20.0),
            tilt: tuple[float, float] = (3.0, 6.0), tilt_axis: str = "x") -> Orientation:
    """An axial grid spun about z by ±spin° and tilted about ``tilt_axis`` by ±tilt°."""
    sz = rng.uniform(*spin) * rng.choice([-1.0, 1.0])
    sx = rng.uniform(*tilt) * rng.choice([-1.0, 1.0])
    return Orientation("oblique", "oblique axial", rotation("z", sz) @ rotation(tilt_axis, sx))


def make_geometry(shape: tuple[int, int, int], spacing: tuple[float, float, float], orientation: Orientation,
                  centre: tuple[float, float, float]) -> Geometry:
    """The grid of ``shape`` (slices, rows, cols) whose centre voxel lies at ``centre`` (LPS mm)."""
    d = orientation.direction
    half = (np.array([shape[2], shape[1], shape[0]], dtype=np.float64) - 1.0) / 2.0 * np.asarray(spacing)
    origin = np.asarray(centre, dtype=np.float64) - d @ half
    return Geometry(shape=tuple(int(n) for n in shape), spacing=tuple(float(s) for s in spacing),
                    origin=tuple(float(v) for v in origin), direction=tuple(float(v) for v in d.reshape(-1)))


def half_extents(geometry: Geometry, orientation: Orientation) -> np.ndarray:
    """Half-size (mm) of the scanned box along patient x, y, z in the un-tilted orientation.

    In-plane: half the field of view; across slices: half of slices × slice spacing (so slice
    centres fall at normalised −1 + 1/n … 1 − 1/n).
    """
    n, rows, cols = geometry.shape
    sx, sy, sz = geometry.spacing
    in_plane = [a for a in range(3) if a != orientation.slice_axis]
    out = np.empty(3)
    out[in_plane[0]] = cols * sx / 2.0
    out[in_plane[1]] = rows * sy / 2.0
    out[orientation.slice_axis] = n * sz / 2.0
    return out


def patient_grid(geometry: Geometry, centre, half) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised LPS coordinates (x, y, z) of every voxel centre, float32 slices×rows×cols each.

    ``(p − centre) / half`` for the LPS position ``p`` of each voxel centre.
    """
    n, rows, cols = geometry.shape
    a = geometry.affine_lps()
    i = np.arange(cols, dtype=np.float64)
    j = np.arange(rows, dtype=np.float64)
    k = np.arange(n, dtype=np.float64)
    out = []
    for axis in range(3):
        scale = 1.0 / float(half[axis])
        base = (a[axis, 3] - float(centre[axis])) * scale
        ci = (a[axis, 0] * scale * i).astype(np.float32)
        cj = (a[axis, 1] * scale * j).astype(np.float32)
        ck = (a[axis, 2] * scale * k + base).astype(np.float32)
        out.append(ck[:, None, None] + cj[None, :, None] + ci[None, None, :])
    return out[0], out[1], out[2]


def rotate2d(x: np.ndarray, y: np.ndarray, cx: float, cy: float, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of (x, y) in a frame centred at (cx, cy) and turned by ``degrees``."""
    a = np.radians(degrees)
    c, s = np.float32(np.cos(a)), np.float32(np.sin(a))
    dx, dy = x - np.float32(cx), y - np.float32(cy)
    return c * dx + s * dy, -s * dx + c * dy


def ellipse_q(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float,
              degrees: float = 0.0) -> np.ndarray:
    """Squared normalised radius of an ellipse (≤ 1 inside)."""
    u, v = rotate2d(x, y, cx, cy, degrees) if degrees else (x - np.float32(cx), y - np.float32(cy))
    return (u / np.float32(ax)) ** 2 + (v / np.float32(ay)) ** 2


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean and unit standard deviation (float32)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="reflect")
    field -= field.mean()
    std = float(field.std())
    return field / np.float32(std if std > 0 else 1.0)


def blur_in_plane(values: np.ndarray, sigma: float) -> np.ndarray:
    """Partial-volume blur: a Gaussian of ``sigma`` pixels along rows and columns only."""
    if values.ndim == 2:
        return ndimage.gaussian_filter(values, sigma, mode="nearest")
    return ndimage.gaussian_filter(values, (0.0, sigma, sigma), mode="nearest")


def to_gray_rgb(gray: np.ndarray) -> np.ndarray:
    """uint8 H×W → uint8 H×W×3 (the same value in every channel)."""
    g = np.asarray(gray, dtype=np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


__all__ = ["Orientation", "axial", "axial_feet_first", "coronal", "oblique", "rotation", "make_geometry",
           "half_extents", "patient_grid", "rotate2d", "ellipse_q", "smooth_noise", "blur_in_plane",
           "to_gray_rgb"]
