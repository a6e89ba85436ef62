"""Streaming writers for uint8 label volumes: NIfTI-1 and NRRD, one slice at a time.

SimpleITK copies a numpy array into an ``itk::Image`` before writing, which doubles the label
volume in memory at the end of a long series; these writers stream ``labels[k]`` slice by slice
straight into the (gzip) file, so writing costs one slice of memory. They write the same grid
SimpleITK would (the round-trip tests read the files back with SimpleITK):

* **NIfTI-1** (``.nii``/``.nii.gz``): RAS world coordinates — LPS ``affine`` with x and y negated —
  stored both as sform and as qform (quaternion, ``qfac`` −1 for a left-handed grid), codes
  "scanner anatomical" (1), units mm.
* **NRRD** (``.nrrd``): ``space: left-posterior-superior``, ``space directions`` = direction
  columns × spacing, ``space origin``, gzip encoding, plus ``key:=value`` lines (3D Slicer's
  segment names and colours).
"""

from __future__ import annotations

import gzip
import struct
from typing import BinaryIO

import numpy as np

from ..geometry import Geometry

GZIP_LEVEL = 6


def _write_slices(f: BinaryIO, labels: np.ndarray) -> None:
    for k in range(labels.shape[0]):
        f.write(np.ascontiguousarray(labels[k], dtype=np.uint8).tobytes())


def quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(b, c, d, qfac) of a 3×3 orthonormal matrix, as NIfTI-1 stores it (a = sqrt(1 − b² − c² − d²) ≥ 0)."""
    r = np.array(rotation, dtype=np.float64)
    qfac = 1.0
    if np.linalg.det(r) < 0:
        qfac = -1.0
        r[:, 2] = -r[:, 2]
    # closest rotation (removes float noise)
    u, _s, vt = np.linalg.svd(r)
    r = u @ vt
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        a, b, c, d = 0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        a, b, c, d = (r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        a, b, c, d = (r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        a, b, c, d = (r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s
    if a < 0:
        b, c, d = -b, -c, -d
    return float(b), float(c), float(d), qfac


def nifti_header(geometry: Geometry, description: str = "medclipsam label") -> bytes:
    """The 348-byte NIfTI-1 header plus the 4-byte extension flag (data start at byte 352)."""
    n, rows, cols = geometry.shape
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    h[38] = ord("r")                                               # "regular", as most writers set it
    struct.pack_into("<8h", h, 40, 3, cols, rows, n, 1, 1, 1, 1)   # dim
    struct.pack_into("<hh", h, 70, 2, 8)                          # datatype uint8, bitpix
    ras = geometry.affine_ras()
    rot = ras[:3, :3] / np.asarray(geometry.spacing)[None, :]
    b, c, d, qfac = quaternion(rot)
    struct.pack_into("<8f", h, 76, qfac, *geometry.spacing, 0.0, 0.0, 0.0, 0.0)   # pixdim
    struct.pack_into("<f", h, 108, 352.0)                         # vox_offset
    struct.pack_into("<ff", h, 112, 1.0, 0.0)                     # scl_slope, scl_inter
    h[123] = 2                                                    # xyzt_units: mm
    desc = description.encode("ascii", "replace")[:79]
    h[148:148 + len(desc)] = desc
    struct.pack_into("<hh", h, 252, 1, 1)                         # qform_code, sform_code: scanner
    struct.pack_into("<6f", h, 256, b, c, d, *ras[:3, 3])
    for i in range(3):
        struct.pack_into("<4f", h, 280 + 16 * i, *ras[i])
    h[344:348] = b"n+1\0"
    return bytes(h) + b"\0\0\0\0"


def write_nifti(tmp: str, labels: np.ndarray, geometry: Geometry, compress: bool) -> None:
    opener = (lambda p: gzip.open(p, "wb", compresslevel=GZIP_LEVEL)) if compress else (lambda p: open(p, "wb"))
    with opener(tmp) as f:
        f.write(nifti_header(geometry))
        _write_slices(f, labels)


def _vector(v) -> str:
    return "(" + ",".join(f"{float(x):.17g}" for x in v) + ")"


def nrrd_header(geometry: Geometry, metadata: dict[str, str] | None = None) -> bytes:
    n, rows, cols = geometry.shape
    d = geometry.direction_matrix() * np.asarray(geometry.spacing)[None, :]
    lines = ["NRRD0004", "# written by medclipsam", "type: uint8", "dimension: 3",
             "space: left-posterior-superior", f"sizes: {cols} {rows} {n}",
             "space directions: " + " ".join(_vector(d[:, i]) for i in range(3)),
             "kinds: domain domain domain", "endian: little", "encoding: gzip",
             f"space origin: {_vector(geometry.origin)}"]
    for key, value in (metadata or {}).items():
        if any(ch in key + value for ch in "\n\r") or ":=" in key:
            raise ValueError(f"NRRD metadata {key!r} cannot hold line breaks or ':='")
        lines.append(f"{key}:={value}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def write_nrrd(tmp: str, labels: np.ndarray, geometry: Geometry, metadata: dict[str, str] | None = None) -> None:
    with open(tmp, "wb") as raw:
        raw.write(nrrd_header(geometry, metadata))
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL) as f:
            _write_slices(f, labels)
