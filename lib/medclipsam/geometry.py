"""The voxel grid of a volume in patient space (DICOM LPS), in ITK's conventions.

* ``shape`` is ``(slices, rows, columns)`` — the order of the numpy arrays (``array[k, j, i]``);
* ``spacing`` is ``(column spacing, row spacing, slice spacing)`` in mm — ITK's ``(x, y, z)`` order;
* ``origin`` is the LPS position (mm) of the centre of voxel ``[0, 0, 0]`` — DICOM's
  ImagePositionPatient of the first slice in sorted order;
* ``direction`` is the 3×3 matrix whose **columns** are the LPS unit vectors of the index axes
  ``i`` (along a row: ImageOrientationPatient[0:3]), ``j`` (down a column: IOP[3:6]) and ``k``
  (from slice 0 to slice 1), flattened row-major exactly as SimpleITK's ``GetDirection()``.

``slice_positions`` optionally keeps the per-slice ImagePositionPatient when the slices are not on
a regular grid (non-uniform spacing, missing slices, gantry tilt); :attr:`Geometry.regular` is then
False and formats that need a regular grid (NIfTI, NRRD) refuse to write, while DICOM SEG, which
stores one position per frame, still can.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPACING_TOLERANCE_MM = 0.01      # slice gaps may differ by this much (absolute) ...
SPACING_TOLERANCE_REL = 0.01     # ... or by this fraction of the median gap, and still count as uniform
TILT_TOLERANCE_DEG = 0.5         # angle between the slice normal and the slice-to-slice step


@dataclass(frozen=True)
class Geometry:
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    slice_positions: tuple[tuple[float, float, float], ...] | None = field(default=None, compare=False)
    irregular_reason: str | None = field(default=None, compare=False)
    has_patient_geometry: bool = True   # False for 2D images without IPP/IOP/PixelSpacing (US, X-ray)

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(n) < 1 for n in self.shape):
            raise ValueError(f"shape must be 3 positive sizes (slices, rows, columns), got {self.shape}")
        if len(self.spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be 3 positive numbers (mm), got {self.spacing}")
        if len(self.direction) != 9:
            raise ValueError(f"direction must have 9 numbers (3×3 row-major), got {len(self.direction)}")

    @property
    def regular(self) -> bool:
        """True when every voxel centre is ``origin + direction @ (spacing * index)``."""
        return self.irregular_reason is None

    @property
    def num_slices(self) -> int:
        return int(self.shape[0])

    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def affine_lps(self) -> np.ndarray:
        """4×4 matrix from (i, j, k, 1) voxel indices to LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction_matrix() * np.asarray(self.spacing, dtype=np.float64)[None, :]
        a[:3, 3] = self.origin
        return a

    def affine_ras(self) -> np.ndarray:
        """The same in RAS (what NIfTI stores): LPS → RAS flips x and y."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()

    def slice_position(self, k: int) -> tuple[float, float, float]:
        """LPS position of voxel (0, 0) of slice ``k`` (its ImagePositionPatient)."""
        if self.slice_positions is not None:
            return self.slice_positions[k]
        p = np.asarray(self.origin) + self.direction_matrix()[:, 2] * self.spacing[2] * k
        return (float(p[0]), float(p[1]), float(p[2]))

    def with_slices(self, start: int, stop: int) -> "Geometry":
        """The geometry of slices ``start:stop`` (a slice range)."""
        if not 0 <= start < stop <= self.shape[0]:
            raise ValueError(f"slice range {start}:{stop} is outside 0:{self.shape[0]}")
        positions = self.slice_positions[start:stop] if self.slice_positions is not None else None
        return Geometry((stop - start, self.shape[1], self.shape[2]), self.spacing, self.slice_position(start),
                        self.direction, positions, self.irregular_reason, self.has_patient_geometry)

    def same_grid(self, other: "Geometry", atol: float = 1e-3) -> bool:
        return (tuple(self.shape) == tuple(other.shape)
                and np.allclose(self.spacing, other.spacing, atol=atol)
                and np.allclose(self.origin, other.origin, atol=atol)
                and np.allclose(self.direction, other.direction, atol=atol))

    def describe(self) -> str:
        sp = "×".join(f"{s:g}" for s in self.spacing)
        text = f"{self.shape[2]}×{self.shape[1]}×{self.shape[0]} voxels, spacing {sp} mm"
        return text if self.regular else f"{text} (irregular: {self.irregular_reason})"


def geometry_from_positions(rows: int, columns: int, row_direction, column_direction,
                            pixel_spacing: tuple[float, float], positions: list) -> Geometry:
    """The geometry of slices at ``positions`` (IPP, already sorted along the slice normal).

    ``row_direction``/``column_direction`` are IOP[0:3]/IOP[3:6]; ``pixel_spacing`` is DICOM's
    PixelSpacing ``(row spacing, column spacing)``. Irregular stacks (non-uniform gaps, missing
    slices, gantry tilt) are flagged in ``irregular_reason`` and keep their per-slice positions;
    one slice gets a nominal slice spacing of 1 mm (callers may pass SliceThickness instead).
    """
    r = np.asarray(row_direction, dtype=np.float64)
    c = np.asarray(column_direction, dtype=np.float64)
    normal = np.cross(r, c)
    normal /= np.linalg.norm(normal)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = len(pos)
    reason = None
    if n > 1:
        steps = np.diff(pos, axis=0)
        gaps = np.linalg.norm(steps, axis=1)
        along = steps @ normal
        median_gap = float(np.median(gaps))
        if (gaps < 1e-6).any():
            raise ValueError("two slices share one position")
        cosines = np.clip(along / gaps, -1.0, 1.0)
        tilt = float(np.degrees(np.arccos(np.abs(cosines))).max())
        tol = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_REL * median_gap)
        if tilt > TILT_TOLERANCE_DEG:
            reason = f"gantry tilt or sheared stack: slices step {tilt:.1f}° off the slice normal"
        elif float(np.abs(gaps - median_gap).max()) > tol:
            smallest, largest = float(gaps.min()), float(gaps.max())
            kind = "missing slices" if largest > 1.5 * median_gap else "non-uniform slice spacing"
            reason = f"{kind}: gaps between slices range {smallest:.3g}–{largest:.3g} mm"
        k_dir = steps.sum(axis=0)
        k_dir /= np.linalg.norm(k_dir)
        slice_spacing = float(np.linalg.norm(pos[-1] - pos[0]) / (n - 1)) if reason is None else median_gap
        if reason is None:
            k_dir = normal if float(k_dir @ normal) > 0 else -normal
    else:
        k_dir = normal
        slice_spacing = 1.0
    direction = np.stack([r, c, k_dir], axis=1)
    return Geometry(
        shape=(n, int(rows), int(columns)),
        spacing=(float(pixel_spacing[1]), float(pixel_spacing[0]), slice_spacing),
        origin=tuple(float(v) for v in pos[0]),
        direction=tuple(float(v) for v in direction.reshape(-1)),
        slice_positions=tuple(tuple(float(v) for v in p) for p in pos) if reason else None,
        irregular_reason=reason,
    )
