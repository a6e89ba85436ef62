"""Check a label a client submits before it is stored (and becomes training data).

A label reaches the server as an upload (``PUT /datastore/label``, 3D Slicer's *Submit Label*,
OHIF) with a client-chosen file name; whatever is stored as ``final`` is trained on. So it is
checked, in this order, and refused with an :class:`~medclipsam.errors.InputError` that names the
problem and the fix (the caller answers 400 and leaves the previous label as it was):

1. **size** of the upload (before anything is read): at most :attr:`LabelLimits.max_bytes`;
2. **format** by the client's file name (``.nii``, ``.nii.gz``, ``.nrrd``, ``.seg.nrrd``; ``.dcm``
   DICOM SEG only for stores with DICOM series) and the content's magic bytes agreeing with it
   (gzip for ``.gz``; NIfTI-1 ``n+1`` / NIfTI-2 ``n+2`` with sizeof_hdr 348 / 540; ``NRRD000``;
   ``DICM`` at byte 128). A two-file NIfTI (``ni1``) and a detached NRRD (``data file:``) are
   refused: their voxels would be read from another file on the server;
3. a **readable header**, announcing no more voxels than the image has (a decompression bomb is
   refused before anything is decompressed);
4. **3D**: a 4D image whose last size is 1 is squeezed; several components per voxel (a 3D
   Slicer segmentation with several layers) are refused with how to export a labelmap;
5. **size exact** against the image, then **spacing, origin and direction** within tolerance (see
   :class:`LabelLimits`; the message gives the offset in mm);
6. the voxels are **complete** (SimpleITK reads a truncated NIfTI without complaint, filling in
   garbage, so its length is checked against its header) and **integer-valued** (a float label
   with whole values is accepted), **0..255**;
7. every non-zero value is **known to the vocabulary**: its labels, and the free-text values
   ``prompted_value .. prompted_value + MAX_TARGETS - 1`` that :mod:`.request` assigns.

A DICOM SEG (DICOM-folder and DICOMweb stores) must reference the image's DICOM series
(``ReferencedSeriesSequence``); its frames are placed on the series' slices by the project's SEG
reader (:func:`medclipsam.dicom.seg.read_dicom_seg`: by referenced instance, else by position)
and its segments become label values by segment label (vocabulary name → value), else by segment
number.

:func:`write_label_atomically` stores a checked label as NIfTI (``.nii.gz``, the canonical
extension) on the image's grid through :func:`medclipsam.volume.itk_io.write_label`, which writes a
temporary file in the same folder and renames it: a failed write leaves the previous label intact.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError
from ..geometry import Geometry
from .request import MAX_TARGETS
from .vocabulary import PROMPTED, Vocabulary

CANONICAL_SUFFIX = ".nii.gz"
# Longest first: ".seg.nrrd" is NRRD, ".nii.gz" gzip-compressed NIfTI.
_SUFFIXES = ((".nii.gz", "nifti"), (".nii", "nifti"), (".seg.nrrd", "nrrd"), (".nrrd", "nrrd"),
             (".dcm", "dicom-seg"))
_ITK_IO = {"nifti": "NiftiImageIO", "nrrd": "NrrdImageIO"}
_NRRD_HEADER_MAX = 1 << 20           # a NRRD header (text up to the blank line) longer than this is refused
_CHUNK = 1 << 20
_EXPORT_HINT = ("export the segmentation as a labelmap on the image's own grid (3D Slicer: Segmentations "
                "module → Export to files, or right-click the segmentation → Export visible segments to "
                "binary labelmap, with the image as reference volume) and submit that")


@dataclass(frozen=True)
class LabelLimits:
    """What an uploaded label may be.

    ``max_bytes`` (512 MiB): a 512×512×1000 uint8 label uncompressed is 250 MiB, a 1024×1024×2000
    one (2 GiB of voxels) gzip-compresses far below 512 MiB (label maps compress 20-100:1; 4:1
    suffices), and a 1 GB upload is refused before it is read.

    Decompressed size: the header must announce one component, 3 dimensions (or a 4th of size 1)
    and exactly the image's size; all three are checked on the header, so a small compressed file
    that would inflate to more than the image's voxels is refused before anything is decompressed.
    ``max_voxels`` (None: no cap beyond that) caps the announced voxels server-wide as well.

    Geometry: origin and spacing may differ by ``max(min_tolerance_mm, voxel_fraction × smallest
    voxel size)`` — 1 % of a voxel, at least 1e-3 mm. 1 % of a voxel changes no voxel's
    assignment (that takes half a voxel) yet a 10 mm shift, or a grid off by a slice, is refused;
    1e-3 mm absorbs rounding by the tools that write labels (NIfTI stores the affine in float32,
    ~3e-5 mm at 500 mm; NRRD writers print 6 significant digits, ~5e-4 mm at 250 mm). A spacing
    difference accumulates over the grid, so it is measured at the far voxel: |Δspacing| × (n - 1).
    Direction cosines may differ by ``direction_tolerance`` (1e-4: a rotation that moves a voxel
    250 mm from the origin by 0.025 mm; float32 quaternions round far below it).
    """

    max_bytes: int = 512 * 1024 ** 2
    max_voxels: int | None = None
    voxel_fraction: float = 0.01
    min_tolerance_mm: float = 1e-3
    direction_tolerance: float = 1e-4

    def position_tolerance_mm(self, spacing: tuple[float, float, float]) -> float:
        return max(self.min_tolerance_mm, self.voxel_fraction * float(min(spacing)))


@dataclass(frozen=True)
class CheckedLabel:
    """A label that passed :func:`check_label_upload`."""

    array: np.ndarray                   # uint8 (slices, rows, columns)
    geometry: Geometry                  # the image's grid (the label is on it within tolerance)
    values: tuple[int, ...]             # the non-zero values present, ascending
    source_format: str                  # "nifti" | "nrrd" | "dicom-seg"
    notes: tuple[str, ...] = ()         # what was adjusted (a squeezed 4D, float → uint8, SEG warnings)


# ------------------------------------------------------------------------------------------ entry points


def check_label_upload(path: Path, filename: str, image: Path | Geometry, vocabulary: Vocabulary | None, *,
                       allow_seg: bool, dicom_dir: Path | None, limits: LabelLimits) -> CheckedLabel:
    """Check the uploaded label at ``path`` (sent as ``filename``) against ``image`` (a NIfTI/NRRD
    path, a DICOM series folder or its :class:`Geometry`) and ``vocabulary`` (None: any 1..255).
    ``allow_seg`` accepts ``.dcm`` DICOM SEG, which needs ``dicom_dir`` (the image's series).
    Raises :class:`InputError` naming the first problem (module docstring for the order)."""
    path = Path(path)
    name = Path(str(filename).replace("\\", "/")).name[-120:] or "label"      # as named in messages
    _check_size(path, name, limits)
    kind = label_kind(name, allow_seg)
    grid = image_geometry(image)
    if kind == "dicom-seg":
        return _check_seg(path, name, grid, vocabulary, dicom_dir, limits)
    return _check_volume(path, name, kind, grid, vocabulary, limits)


def write_label_atomically(checked: CheckedLabel, dest: Path) -> Path:
    """Store ``checked`` at ``dest`` (which must end in ``.nii.gz``) on the image's grid, through a
    temporary file in the same folder and a rename: on failure the previous ``dest`` is untouched.
    Raises :class:`InputError` when it cannot be written."""
    from ..volume.itk_io import write_label

    dest = Path(dest)
    if not dest.name.lower().endswith(CANONICAL_SUFFIX) or len(dest.name) <= len(CANONICAL_SUFFIX):
        raise ValueError(f"labels are stored as NIfTI: name the destination <id>{CANONICAL_SUFFIX}, not {dest.name!r}")
    return write_label(dest, checked.array, checked.geometry)


def label_kind(filename: str, allow_seg: bool) -> str:
    """``'nifti'``, ``'nrrd'`` or ``'dicom-seg'`` by the client's file name; anything else is refused."""
    lower = filename.lower()
    allowed = [s for s, k in _SUFFIXES if allow_seg or k != "dicom-seg"]
    for suffix, kind in _SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix) and suffix in allowed:
            return kind
    seg_note = " (DICOM SEG .dcm only for stores of DICOM series)" if lower.endswith(".dcm") else ""
    raise InputError(f"{filename!r} is not a label format this server accepts{seg_note}; submit a label map "
                     f"named {', '.join(allowed)}")


def allowed_values(vocabulary: Vocabulary) -> dict[int, str]:
    """Label value → name of every value a label may hold: the vocabulary's labels and the
    free-text values :func:`.request.resolve_targets` assigns after ``prompted``."""
    out = {v: n for n, v in vocabulary.labels().items() if n != PROMPTED}
    first = vocabulary.prompted_value
    for i in range(MAX_TARGETS):
        if first + i <= 255:
            out[first + i] = f"{PROMPTED} {i + 1}" if i else PROMPTED
    return out


def image_geometry(image: Path | Geometry) -> Geometry:
    """The grid a label must be on: a :class:`Geometry`, a NIfTI/NRRD's header, or a DICOM series'."""
    if isinstance(image, Geometry):
        return image
    p = Path(image)
    if p.is_dir():
        from ..dicom import read_series

        series = read_series(p)
        try:
            return series.geometry
        finally:
            series.close()
    from .infer import _volume_geometry

    grid = _volume_geometry(p) if p.is_file() else None
    if grid is None:
        raise InputError(f"the image {p.name} of this label cannot be read; re-add the image to the datastore")
    return grid


# ------------------------------------------------------------------------------------------ size, format, magic


def _check_size(path: Path, name: str, limits: LabelLimits) -> None:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise InputError(f"the uploaded label {name} cannot be read ({e.strerror or e}); submit it again") from None
    if size > limits.max_bytes:
        raise InputError(f"{name} is {_mib(size)}, over the server's limit of {_mib(limits.max_bytes)} for a label; "
                         "submit it gzip-compressed (.nii.gz or compressed .seg.nrrd), or ask the operator to "
                         "raise the limit")
    if size == 0:
        raise InputError(f"{name} is empty (0 bytes); submit the label file again")


def _mib(n: int) -> str:
    return f"{n / 1024 ** 2:.1f} MiB"


def _head(path: Path, n: int, gz: bool) -> bytes:
    """The first ``n`` bytes of the file, or of its gzip content."""
    try:
        if gz:
            with gzip.open(path, "rb") as f:
                return f.read(n)
        with open(path, "rb") as f:
            return f.read(n)
    except (OSError, EOFError, zlib.error):
        return b""


@dataclass(frozen=True)
class _NiftiHeader:
    data_end: int           # byte offset just after the last voxel (uncompressed)


def _nifti_header(path: Path, name: str, gz: bool) -> _NiftiHeader:
    """Check NIfTI's magic bytes and return where its voxels end (module docstring, 2 and 6)."""
    if gz:
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                raise InputError(f"{name} is not a NIfTI file: it is not gzip-compressed although it is named .gz; "
                                 "submit a NIfTI label map (.nii.gz) or name the file by its format")
    head = _head(path, 540, gz)
    not_nifti = InputError(f"{name} is not a NIfTI file (no NIfTI header: sizeof_hdr 348 or 540 with magic "
                           f"n+1 / n+2); submit a NIfTI label map (.nii/.nii.gz) or name the file by its format")
    if len(head) < 4:
        raise not_nifti if len(head) == 0 and not gz else InputError(
            f"{name} ends inside its NIfTI header (truncated); submit the complete file")
    for endian in "<>":
        sizeof_hdr = struct.unpack(endian + "i", head[:4])[0]
        if sizeof_hdr in (348, 540):
            break
    else:
        raise not_nifti
    if len(head) < sizeof_hdr:
        raise InputError(f"{name} ends inside its NIfTI header (truncated: {len(head)} of {sizeof_hdr} bytes); "
                         "submit the complete file")
    if sizeof_hdr == 348:
        magic = head[344:348]
        dims = struct.unpack(endian + "8h", head[40:56])
        bitpix = struct.unpack(endian + "h", head[72:74])[0]
        vox_offset = int(struct.unpack(endian + "f", head[108:112])[0])
        single, pair = b"n+1\0", b"ni1\0"
    else:
        magic = head[4:8]
        bitpix = struct.unpack(endian + "h", head[14:16])[0]
        dims = struct.unpack(endian + "8q", head[16:80])
        vox_offset = struct.unpack(endian + "q", head[168:176])[0]
        single, pair = b"n+2\0", b"ni2\0"
    if magic == pair:
        raise InputError(f"{name} is the header of a two-file NIfTI (.hdr/.img); submit a single-file NIfTI "
                         "(.nii or .nii.gz)")
    if magic != single:
        raise not_nifti
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or any(int(d) < 1 for d in dims[1:ndim + 1]) or bitpix <= 0 or vox_offset < sizeof_hdr:
        raise InputError(f"{name} has a damaged NIfTI header (dimensions {dims[:ndim + 1]}, bitpix {bitpix}, "
                         f"vox_offset {vox_offset}); export the label again")
    return _NiftiHeader(vox_offset + int(np.prod([int(d) for d in dims[1:ndim + 1]], dtype=np.int64)) * bitpix // 8)


def _check_nrrd_header(path: Path, name: str) -> None:
    head = _head(path, _NRRD_HEADER_MAX, gz=False)
    if not head.startswith(b"NRRD000"):
        raise InputError(f"{name} is not a NRRD file (it does not start with NRRD000); submit a NRRD label map "
                         "(.nrrd/.seg.nrrd) or name the file by its format")
    end = min((i for i in (head.find(b"\n\n"), head.find(b"\r\n\r\n")) if i >= 0), default=-1)
    if end < 0:
        raise InputError(f"{name}: its NRRD header does not end (no blank line in the first "
                         f"{_mib(_NRRD_HEADER_MAX)}): the file is truncated or not a NRRD; submit the complete file")
    for line in head[:end].decode("latin-1").splitlines():
        key = line.split(":", 1)[0].strip().lower().replace(" ", "")
        if ":" in line and key == "datafile":
            raise InputError(f"{name} is a detached NRRD header (its voxels are in another file: {line.strip()!r}); "
                             "submit one self-contained .nrrd / .seg.nrrd")


def _check_dicom_magic(path: Path, name: str) -> None:
    head = _head(path, 132, gz=False)
    if head[128:132] != b"DICM":
        raise InputError(f"{name} is not a DICOM file (no DICM at byte 128); submit a DICOM SEG written by a "
                         "DICOM tool, or a NIfTI/NRRD label map")


# ------------------------------------------------------------------------------------------ NIfTI / NRRD


@contextlib.contextmanager
def _named(path: Path, suffix: str) -> Iterator[Path]:
    """``path`` under a name ending in ``suffix``, which ITK needs (uploads arrive as temporary
    files of any name): itself, or a link in a temporary folder."""
    if path.name.lower().endswith(suffix):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="medclipsam-label-") as d:
        link = Path(d) / f"label{suffix}"
        os.symlink(path.resolve(), link)
        yield link


def _itk_error(error: RuntimeError, path: Path, name: str) -> str:
    """ITK's message with the server's file paths replaced by the client's file name."""
    from ..volume.itk_io import _itk_message

    text = _itk_message(error)
    for where in (str(path), str(path.resolve()), str(path.parent)):
        text = text.replace(where, name)
    return text


def _itk_reader(path: Path, kind: str, name: str):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO(_ITK_IO[kind])
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(f"cannot read the header of {name} ({_itk_error(e, path, name)}): it is truncated or "
                         "damaged; export the label again") from None
    return reader


def _header_geometry(reader, name: str, image: Geometry, limits: LabelLimits) -> tuple[Geometry, bool]:
    """The label's grid from its header, and whether a 4D image with one time point is squeezed."""
    size = [int(s) for s in reader.GetSize()]
    components = int(reader.GetNumberOfComponents())
    if components > 1:
        raise InputError(f"{name} holds {components} values per voxel (a segmentation with several layers, e.g. "
                         f"a 3D Slicer .seg.nrrd with overlapping segments), not one label map; {_EXPORT_HINT}")
    dim = len(size)
    squeeze = dim == 4 and size[3] == 1
    if dim != 3 and not squeeze:
        raise InputError(f"{name} is a {dim}D image ({'×'.join(map(str, size))}); a label must be one 3D "
                         f"label map of the image; {_EXPORT_HINT}")
    announced = int(np.prod(size, dtype=np.int64))
    if limits.max_voxels is not None and announced > limits.max_voxels:
        raise InputError(f"{name} announces {announced} voxels, over the server's limit of {limits.max_voxels}; "
                         "submit a label of a smaller image")
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    try:
        grid = Geometry(shape=(size[2], size[1], size[0]), spacing=tuple(float(s) for s in reader.GetSpacing()[:3]),
                        origin=tuple(float(o) for o in reader.GetOrigin()[:3]),
                        direction=tuple(float(d) for d in direction.reshape(-1)))
    except ValueError as e:
        raise InputError(f"{name} has an unusable geometry ({e}); {_EXPORT_HINT}") from None
    return grid, squeeze


def check_volume_file(path: Path, name: str) -> None:
    """The format checks of a NIfTI/NRRD upload (a label here, an image in :mod:`.store_guard`): the
    name's format (:func:`upload_suffix`), its magic bytes, a single self-contained file (no two-file
    NIfTI, no detached NRRD: their voxels would be read from another file on the server), and a NIfTI
    as long as its header says. Raises :class:`InputError` naming the problem."""
    kind = label_kind(name, allow_seg=False)
    gz = name.lower().endswith(".gz")
    if kind == "nifti":
        _check_nifti_complete(path, name, _nifti_header(path, name, gz), gz)
    else:
        _check_nrrd_header(path, name)


def upload_suffix(filename: str, allow_seg: bool = True) -> str:
    """The suffix of an upload's file name when it is a format this server reads (longest match:
    ``.seg.nrrd``, ``.nii.gz``), else :class:`InputError` naming the accepted ones."""
    label_kind(filename, allow_seg)
    lower = filename.lower()
    return next(suffix for suffix, _ in _SUFFIXES if lower.endswith(suffix))


def _check_volume(path: Path, name: str, kind: str, image: Geometry, vocabulary: Vocabulary | None,
                  limits: LabelLimits) -> CheckedLabel:
    gz = name.lower().endswith(".gz")
    nifti = None
    if kind == "nifti":
        nifti = _nifti_header(path, name, gz)
    else:
        _check_nrrd_header(path, name)
    with _named(path, (".nii.gz" if gz else ".nii") if kind == "nifti" else ".nrrd") as readable:
        reader = _itk_reader(readable, kind, name)
        grid, squeeze = _header_geometry(reader, name, image, limits)
        check_grid(grid, image, name, limits)
        if nifti is not None:
            _check_nifti_complete(path, name, nifti, gz)
        voxels = _read_voxels(reader, name, squeeze)
    notes = [f"{name}: a 4D image with one time point, read as 3D"] if squeeze else []
    array, values, converted = to_uint8(voxels, name)
    if converted:
        notes.append(f"{name}: {converted} voxels converted to uint8 label values")
    check_values(values, vocabulary, name)
    return CheckedLabel(array, image, values, kind, tuple(notes))


def _check_nifti_complete(path: Path, name: str, header: _NiftiHeader, gz: bool) -> None:
    """SimpleITK reads a truncated NIfTI without an error (the missing voxels are garbage)."""
    if not gz:
        size = path.stat().st_size
        if size < header.data_end:
            raise InputError(f"{name} is truncated: {size} bytes, its header announces {header.data_end}; "
                             "submit the complete file")
        return
    got = 0
    try:
        with gzip.open(path, "rb") as f:
            while got < header.data_end:
                chunk = f.read(min(_CHUNK, header.data_end - got))
                if not chunk:
                    break
                got += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{name} is truncated or its compressed data are damaged ({e}) after {got} of "
                         f"{header.data_end} bytes; submit the complete file") from None
    if got < header.data_end:
        raise InputError(f"{name} is truncated: it decompresses to {got} bytes, its header announces "
                         f"{header.data_end}; submit the complete file")


def _read_voxels(reader, name: str, squeeze: bool) -> np.ndarray:
    import SimpleITK as sitk

    if squeeze:
        size = list(reader.GetSize())
        reader.SetExtractIndex([0, 0, 0, 0])
        reader.SetExtractSize(size[:3] + [0])
    try:
        image = reader.Execute()
    except RuntimeError as e:
        where = Path(reader.GetFileName())
        raise InputError(f"cannot read the voxels of {name} ({_itk_error(e, where, name)}): the file is truncated "
                         "or damaged; submit the complete file") from None
    return sitk.GetArrayFromImage(image)


# ------------------------------------------------------------------------------------------ grid and values


def check_grid(label: Geometry, image: Geometry, name: str, limits: LabelLimits) -> None:
    """Refuse a label not on the image's grid: size exact; direction, spacing and origin within
    :class:`LabelLimits`' tolerances (the message gives the offset in mm)."""
    if tuple(label.shape) != tuple(image.shape):
        raise InputError(f"{name} has {_size(label)} voxels (columns×rows×slices) but the image has {_size(image)}: "
                         "a label must be on the image's own grid; segment the image as the server sent it, or "
                         "resample the label onto it (nearest neighbour)")
    d_dir = float(np.abs(np.subtract(label.direction, image.direction)).max())
    if d_dir > limits.direction_tolerance:
        raise InputError(f"{name} is rotated against the image: its direction cosines differ by up to {d_dir:.4g} "
                         f"(tolerance {limits.direction_tolerance:g}); {_EXPORT_HINT}")
    tol = limits.position_tolerance_mm(image.spacing)
    n = np.maximum(np.asarray(image.shape[::-1], dtype=np.float64) - 1, 1)     # (columns, rows, slices)
    drift = np.abs(np.subtract(label.spacing, image.spacing)) * n
    if float(drift.max()) > tol:
        raise InputError(f"{name} has voxel spacing {_mm(label.spacing)} mm, the image {_mm(image.spacing)} mm: at "
                         f"the far edge its voxels lie {float(drift.max()):.3f} mm off the image's (tolerance "
                         f"{tol:.3g} mm); {_EXPORT_HINT}")
    offset = np.subtract(label.origin, image.origin)
    distance = float(np.linalg.norm(offset))
    if distance > tol:
        raise InputError(f"{name} is shifted {distance:.3f} mm against the image (origin offset "
                         f"{', '.join(f'{v:+.3f}' for v in offset)} mm LPS; tolerance {tol:.3g} mm); {_EXPORT_HINT}")


def _size(g: Geometry) -> str:
    return f"{g.shape[2]}×{g.shape[1]}×{g.shape[0]}"


def _mm(values) -> str:
    return "×".join(f"{float(v):g}" for v in values)


def to_uint8(voxels: np.ndarray, name: str) -> tuple[np.ndarray, tuple[int, ...], int]:
    """Integer label values 0..255 as uint8, the non-zero values present, and how many voxels of
    a float label were converted (0 for integer labels). Slice by slice: no whole-volume temporaries."""
    a = np.asarray(voxels)
    if a.dtype == bool:
        a = a.view(np.uint8)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError(f"{name} holds {a.dtype} voxels, not label values; {_EXPORT_HINT}")
    is_float = np.issubdtype(a.dtype, np.floating)
    out = np.empty(a.shape, dtype=np.uint8)
    counts = np.zeros(256, dtype=np.int64)
    for k in range(a.shape[0]):
        s = a[k]
        if is_float:
            bad = ~np.isfinite(s) | (s != np.floor(s))
            if bad.any():
                j, i = np.argwhere(bad)[0]
                raise InputError(f"{name} holds non-integer values (e.g. {s[j, i]!r} at slice {k}, row {j}, column "
                                 f"{i}); a label map holds whole numbers (0 background, 1.. the labels) — export a "
                                 "labelmap, not a probability map, and resample with nearest neighbour")
        lo, hi = s.min(), s.max()
        if lo < 0:
            raise InputError(f"{name} holds negative values (as low as {_num(lo)} on slice {k}); label values are "
                             "0 (background) .. 255")
        if hi > 255:
            raise InputError(f"{name} holds values above 255 (up to {_num(hi)} on slice {k}); label values are "
                             "0 (background) .. 255, one per label of the vocabulary")
        out[k] = s
        counts += np.bincount(out[k].ravel(), minlength=256)
    values = tuple(int(v) for v in np.nonzero(counts[1:])[0] + 1)
    return out, values, int(a.size) if is_float else 0


def _num(v) -> str:
    return f"{float(v):g}"


def check_values(values: tuple[int, ...] | list[int], vocabulary: Vocabulary | None, name: str) -> None:
    """Every non-zero value must be a label of the vocabulary or a free-text value."""
    if vocabulary is None:
        return
    known = allowed_values(vocabulary)
    unknown = [v for v in values if v not in known]
    if unknown:
        first, last = vocabulary.prompted_value, max(known)
        listing = ", ".join(f"{v}={n}" for v, n in sorted(known.items()) if v < first)
        raise InputError(f"{name} holds label value(s) {', '.join(map(str, unknown))} that the label vocabulary "
                         f"({Path(vocabulary.source).name}) does not know; it knows {listing}, and {first}-{last} "
                         "for free-text prompts. Relabel the label map with these values (0 is background)")


# ------------------------------------------------------------------------------------------ DICOM SEG


def _check_seg(path: Path, name: str, image: Geometry, vocabulary: Vocabulary | None, dicom_dir: Path | None,
               limits: LabelLimits) -> CheckedLabel:
    from ..dicom import read_series

    if dicom_dir is None:
        raise InputError(f"{name}: a DICOM SEG is accepted only for an image that has its DICOM series on the "
                         "server; submit a NIfTI/NRRD label map")
    _check_dicom_magic(path, name)
    header = _seg_header(path, name)
    series = read_series(dicom_dir)
    try:
        _check_seg_reference(header, series.series_uid, name)
        if tuple(series.geometry.shape) != tuple(image.shape):
            raise InputError(f"the DICOM series of this image ({_size(series.geometry)}) is not on the image's grid "
                             f"({_size(image)}); the store is inconsistent — re-add the image, then submit {name}")
        _check_seg_frames(header, series.geometry, name)
        lut, segment_values = _segment_lut(header, vocabulary, name)
        check_values(sorted(set(segment_values)), vocabulary, name)
        labels, notes = _read_seg_frames(path, name, series)
    finally:
        series.close()
    array = lut[labels]
    values = tuple(int(v) for v in np.nonzero(np.bincount(array.ravel(), minlength=256)[1:])[0] + 1)
    return CheckedLabel(array, image, values, "dicom-seg", tuple(notes))


def _seg_header(path: Path, name: str):
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as e:   # pydicom raises several types for damaged files
        raise InputError(f"cannot read {name} as DICOM ({type(e).__name__}: {e}): it is truncated or damaged; "
                         "submit the complete file") from None
    if ds.get("Modality") != "SEG" or "SegmentSequence" not in ds:
        raise InputError(f"{name} is a DICOM {ds.get('Modality', '?')} object, not a DICOM Segmentation (SEG); "
                         "submit a DICOM SEG or a NIfTI/NRRD label map")
    return ds


def _check_seg_reference(ds, series_uid: str, name: str) -> None:
    referenced = [str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence") or []]
    if not referenced:
        raise InputError(f"{name} does not say which series it segments (no ReferencedSeriesSequence); write the "
                         "DICOM SEG with its source images (e.g. highdicom, dcmqi, 3D Slicer's DICOM export)")
    if series_uid not in referenced:
        raise InputError(f"{name} segments series {', '.join(referenced)}, not this image's series {series_uid}; "
                         "submit the segmentation of this image")


def _check_seg_frames(ds, grid: Geometry, name: str) -> None:
    """Rows × columns as the series', and no more frames than a frame per segment per slice (so the
    decoded pixels stay within segments × the image's voxels)."""
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if (rows, cols) != tuple(grid.shape[1:]):
        raise InputError(f"{name} has {cols}×{rows} frames (columns×rows) but the image's slices are "
                         f"{grid.shape[2]}×{grid.shape[1]}; submit the segmentation of this image")
    frames = int(ds.get("NumberOfFrames") or 1)
    segments = len(ds.SegmentSequence)
    if frames > grid.shape[0] * max(segments, 1):
        raise InputError(f"{name} has {frames} frames, more than one per segment ({segments}) and slice "
                         f"({grid.shape[0]}); it is not a segmentation of this image")


def _segment_lut(ds, vocabulary: Vocabulary | None, name: str) -> tuple[np.ndarray, list[int]]:
    """Segment number → label value: the vocabulary's value of the segment's label, else the number."""
    lut = np.zeros(256, dtype=np.uint8)
    values = []
    for item in ds.SegmentSequence:
        number = int(item.SegmentNumber)
        if not 1 <= number <= 255:
            raise InputError(f"{name}: segment number {number} does not fit a label map (1..255)")
        entry = vocabulary.find(str(item.get("SegmentLabel") or "")) if vocabulary is not None else None
        lut[number] = entry.value if entry is not None else number
        values.append(int(lut[number]))
    return lut, values


def _read_seg_frames(path: Path, name: str, series) -> tuple[np.ndarray, list[str]]:
    """The SEG's segment numbers on the series' slices, with the reader's warnings as notes."""
    from ..dicom.seg import DicomSegWarning, read_dicom_seg
    from ..volume.outputs import slice_frames

    datasets, frames = slice_frames(series)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DicomSegWarning)
        try:
            labels, _ = read_dicom_seg(path, datasets, frames=frames)
        except InputError as e:
            text = str(e).replace(str(path), name).replace(path.name, name)
            raise InputError(f"{name}: {text}; submit the complete segmentation of this image") from None
    return labels, [str(w.message) for w in caught if issubclass(w.category, DicomSegWarning)]
