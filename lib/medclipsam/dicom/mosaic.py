"""Siemens mosaics: several slices of one acquisition tiled into a single 2D image.

Siemens MR scanners store fMRI and diffusion series as "mosaics": one DICOM image (ImageType value
``MOSAIC``) holding ``NumberOfImagesInMosaic`` slices as tiles on a square grid of
``ceil(sqrt(n))`` × ``ceil(sqrt(n))``, filled row by row (unused tiles are blank). Segmenting the
picture of tiles as one slice would be meaningless, so the reader unpacks it:

* **how many slices**: the private element NumberOfImagesInMosaic (0019,xx0A, creator
  ``SIEMENS MR HEADER``), else the same field of the CSA image header (0029,xx10, creator
  ``SIEMENS CSA HEADER``). Without either the file is refused: the number of tiles cannot be
  guessed safely.
* **where each tile lies**: ImagePositionPatient of a mosaic is the corner of a mosaic-sized image
  centred on the slice, not of a tile. The first tile's corner is moved back by half the size
  difference along the row and column directions::

      corner = IPP + row_dir · col_spacing · (Columns − tile_columns) / 2
                   + col_dir · row_spacing · (Rows − tile_rows) / 2

  and tile ``k`` lies ``k`` × slice spacing (SpacingBetweenSlices, else SliceThickness) further
  along the slice normal: the CSA header's SliceNormalVector when present, else the cross product
  of the row and column directions (the rule nibabel and dcm2niix use). Without the CSA normal the
  direction is assumed and a note says so.

Everything else about the file (pixel data, rescale, window) is the mosaic's own. A DICOM SEG
cannot reference the tiles of a mosaic as slices (:mod:`.seg` refuses mosaics up front);
NIfTI/NRRD output works.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

MOSAIC_IMAGE_TYPE = "MOSAIC"
CONVERT_ADVICE = ("convert the mosaic series to NIfTI with dcm2niix (`dcm2niix -o OUT_FOLDER SERIES_FOLDER`) "
                  "and segment the NIfTI file instead")


@dataclass(frozen=True)
class MosaicLayout:
    """How the slices of one mosaic image are tiled, and where the first one lies."""

    count: int                 # slices in the mosaic (NumberOfImagesInMosaic)
    grid: int                  # tiles per row and per column
    tile_rows: int
    tile_columns: int
    first_position: tuple[float, float, float]     # ImagePositionPatient of tile 0
    slice_step: tuple[float, float, float]         # from tile k to tile k+1, in mm (patient space)
    normal_from_csa: bool                          # False: the slice direction was assumed


class MosaicError(ValueError):
    """A file marked MOSAIC that cannot be unpacked; the message says what is missing."""


def is_mosaic(image_type: tuple[str, ...] | list[str]) -> bool:
    return MOSAIC_IMAGE_TYPE in image_type


def mosaic_layout(ds: Any, rows: int, columns: int, ipp: tuple[float, ...] | None, iop: tuple[float, ...] | None,
                  pixel_spacing: tuple[float, float] | None, thickness: float | None) -> MosaicLayout:
    """The layout of the mosaic ``ds`` (a pydicom dataset, pixel data not needed) whose header values
    ``rows``, ``columns``, ``ipp``, ``iop``, ``pixel_spacing``, ``thickness`` the caller has read.
    Raises :class:`MosaicError` when a value the unpacking needs is missing or inconsistent."""
    csa = _csa_fields(ds)
    count = _private_count(ds)
    if count is None:
        count = _csa_int(csa.get("NumberOfImagesInMosaic"))
    if count is None or count < 1:
        raise MosaicError("its number of slices (NumberOfImagesInMosaic, in the private Siemens header) is missing")
    grid = math.ceil(math.sqrt(count))
    if rows % grid or columns % grid:
        raise MosaicError(f"its {rows}×{columns} pixels do not split into a {grid}×{grid} grid of tiles for "
                          f"{count} slices")
    missing = [name for name, v in (("ImagePositionPatient", ipp), ("ImageOrientationPatient", iop),
                                    ("PixelSpacing", pixel_spacing)) if v is None]
    if missing:
        raise MosaicError(f"it has no {', '.join(missing)}, which placing its tiles as slices needs")
    tile_rows, tile_columns = rows // grid, columns // grid
    row_dir = np.asarray(iop[:3], dtype=np.float64)
    col_dir = np.asarray(iop[3:], dtype=np.float64)
    row_spacing, col_spacing = float(pixel_spacing[0]), float(pixel_spacing[1])
    corner = (np.asarray(ipp, dtype=np.float64)
              + row_dir * col_spacing * (columns - tile_columns) / 2.0
              + col_dir * row_spacing * (rows - tile_rows) / 2.0)
    normal = np.cross(row_dir, col_dir)
    csa_normal = _csa_floats(csa.get("SliceNormalVector"), 3)
    from_csa = csa_normal is not None and np.linalg.norm(csa_normal) > 0.5
    if from_csa:
        normal = np.asarray(csa_normal, dtype=np.float64)
    normal = normal / np.linalg.norm(normal)
    spacing = _spacing(ds, thickness)
    if spacing is None:
        if count > 1:
            raise MosaicError("it has neither SpacingBetweenSlices nor SliceThickness, so the distance between "
                              "its slices is unknown")
        spacing = 1.0
    step = normal * spacing
    return MosaicLayout(count=count, grid=grid, tile_rows=tile_rows, tile_columns=tile_columns,
                        first_position=tuple(float(v) for v in corner), slice_step=tuple(float(v) for v in step),
                        normal_from_csa=from_csa)


def tile_positions(layout: MosaicLayout) -> list[tuple[float, float, float]]:
    """ImagePositionPatient of each tile, in tile order."""
    first, step = np.asarray(layout.first_position), np.asarray(layout.slice_step)
    return [tuple(float(v) for v in first + k * step) for k in range(layout.count)]


def unpack_mosaic(image: np.ndarray, layout: MosaicLayout) -> np.ndarray:
    """The tiles of one mosaic image (rows×cols[×samples]) as count×tile_rows×tile_cols[×samples]."""
    g, r, c = layout.grid, layout.tile_rows, layout.tile_columns
    if image.shape[0] != g * r or image.shape[1] != g * c:
        raise ValueError(f"the mosaic decoded to {image.shape[0]}×{image.shape[1]} pixels, its layout needs "
                         f"{g * r}×{g * c}")
    tiles = [image[(k // g) * r:(k // g + 1) * r, (k % g) * c:(k % g + 1) * c] for k in range(layout.count)]
    return np.ascontiguousarray(np.stack(tiles))


# --------------------------------------------------------------------------------------------- private headers

def _private_value(ds: Any, group: int, creator: str, offset: int) -> Any:
    try:
        block = ds.private_block(group, creator)
        return block[offset].value
    except Exception:      # no such creator or element
        return None


def _private_count(ds: Any) -> int | None:
    v = _private_value(ds, 0x0019, "SIEMENS MR HEADER", 0x0A)
    if isinstance(v, (bytes, bytearray)):              # read as UN: a little-endian US
        return struct.unpack("<H", bytes(v[:2]))[0] if len(v) >= 2 else None
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _csa_fields(ds: Any) -> dict[str, list[str]]:
    """The fields of the CSA image header (0029,xx10) as lists of strings; {} when absent or unreadable."""
    blob = _private_value(ds, 0x0029, "SIEMENS CSA HEADER", 0x10)
    if not isinstance(blob, (bytes, bytearray)):
        return {}
    try:
        return parse_csa(bytes(blob))
    except (struct.error, ValueError, UnicodeDecodeError):
        return {}


def parse_csa(blob: bytes) -> dict[str, list[str]]:
    """Parse a Siemens CSA2 header (``SV10`` signature): name → the item strings of that field.

    Layout (little-endian): ``SV10``, 4 unused bytes, uint32 number of fields, uint32 unused; per
    field a 64-byte name, int32 VM, 4-byte VR, int32 SyngoDT, int32 number of items, int32 unused;
    per item four int32 (the second is the item's length) and the value, padded to 4 bytes.
    Headers of the older CSA1 form (no signature) give {}.
    """
    if blob[:4] != b"SV10":
        return {}
    n_fields = struct.unpack_from("<I", blob, 8)[0]
    if n_fields > 1024:
        raise ValueError("implausible number of CSA fields")
    pos = 16
    out: dict[str, list[str]] = {}
    for _ in range(n_fields):
        name = blob[pos:pos + 64].split(b"\x00", 1)[0].decode("latin-1")
        n_items = struct.unpack_from("<i", blob, pos + 76)[0]
        pos += 84
        if not 0 <= n_items <= 4096:
            raise ValueError("implausible number of CSA items")
        items = []
        for _ in range(n_items):
            length = struct.unpack_from("<4i", blob, pos)[1]
            pos += 16
            if length < 0 or pos + length > len(blob):
                raise ValueError("CSA item runs past the header")
            value = blob[pos:pos + length].split(b"\x00", 1)[0].decode("latin-1").strip()
            pos += (length + 3) // 4 * 4
            if value:
                items.append(value)
        out[name] = items
    return out


def _csa_int(items: list[str] | None) -> int | None:
    try:
        return int(float(items[0])) if items else None
    except (TypeError, ValueError):
        return None


def _csa_floats(items: list[str] | None, n: int) -> tuple[float, ...] | None:
    try:
        vals = tuple(float(v) for v in (items or [])[:n])
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == n and all(math.isfinite(v) for v in vals) else None


def _spacing(ds: Any, thickness: float | None) -> float | None:
    try:
        v = ds.get("SpacingBetweenSlices", None)
        s = abs(float(v)) if v not in (None, "") else None
    except (TypeError, ValueError):
        s = None
    if s and s > 0 and math.isfinite(s):
        return s
    return thickness if thickness and thickness > 0 else None
