"""NIfTI / NRRD / MetaImage volumes in, label volumes out — through SimpleITK, in ITK's conventions.

SimpleITK's ``GetSpacing``/``GetOrigin``/``GetDirection`` are already in LPS (ITK converts NIfTI's
RAS on reading and writing), exactly what :class:`~medclipsam.geometry.Geometry` holds, so
geometry passes through unchanged; arrays are ``(slices, rows, columns)`` as ``GetArrayFromImage``
returns them.

Label volumes are written atomically (:func:`medclipsam.io._atomic`) by the streaming writers of
:mod:`.label_writers` (one slice in memory at a time; SimpleITK would copy the whole volume), and
read back by SimpleITK in the tests.
NIfTI and NRRD hold one origin, spacing and direction for the whole volume, so an irregular stack
(:attr:`Geometry.regular` False) is refused — DICOM SEG stores one position per frame instead.

SimpleITK is imported lazily (it takes a moment), so importing this module is cheap.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import (
    InputError,
    LabelShapeError,  # noqa: F401  (raised here; defined with the other errors)
)
from ..geometry import Geometry
from ..io import _atomic
from ..labels import PALETTE, label_color  # noqa: F401
from .label_writers import write_nifti, write_nrrd
from .source import ArrayVolume

READ_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

# Output kinds by suffix (longest first; ".seg.nrrd" is plain NRRD here).
_LABEL_SUFFIXES = ((".nii.gz", "nifti"), (".nii", "nifti"), (".nrrd", "nrrd"), (".dcm", "dicom-seg"))

def _sitk():
    import SimpleITK as sitk

    return sitk


def _lower_name(path: str | Path) -> str:
    return Path(path).name.lower()


def label_suffix(path: str | Path) -> str:
    """The output kind an output path asks for: ``'nifti'`` (.nii.gz, .nii), ``'nrrd'`` (.nrrd,
    including .seg.nrrd) or ``'dicom-seg'`` (.dcm); any other suffix is an :class:`InputError`."""
    name = _lower_name(path)
    for suffix, kind in _LABEL_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return kind
    raise InputError(f"cannot tell the label format of {Path(path).name!r}: name the output "
                     ".nii.gz or .nii (NIfTI), .nrrd or .seg.nrrd (NRRD), or .dcm (DICOM SEG)")


def _file_suffix(path: str | Path) -> str:
    name = _lower_name(path)
    for suffix, _ in _LABEL_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(path).suffix


def read_volume(path: str | Path, *, modality: str = "OT") -> ArrayVolume:
    """Read a NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd) volume.

    A 3D scalar image becomes a float32 ``(slices, rows, cols)`` :class:`ArrayVolume` with the
    image's geometry; a 2D image becomes a one-slice volume; an image of 3 uint8 components
    (RGB / vector) becomes an RGB volume ``(slices, rows, cols, 3)``. 4D images and other
    multi-component images are refused with an :class:`InputError`, as are missing, unreadable
    and corrupt files.
    """
    p = Path(path)
    name = _lower_name(p)
    if not any(name.endswith(s) for s in READ_SUFFIXES):
        raise InputError(f"{p.name}: not a volume this reader knows; expected one of "
                         + ", ".join(READ_SUFFIXES))
    if not p.is_file():
        raise InputError(f"volume not found: {p}")
    sitk = _sitk()
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as e:
        raise InputError(f"cannot read {p}: {_itk_message(e)}. Is the file complete and a valid "
                         f"{_file_suffix(p)} image?") from None
    dim = image.GetDimension()
    components = image.GetNumberOfComponentsPerPixel()
    if dim not in (2, 3):
        size = "×".join(str(s) for s in image.GetSize())
        raise InputError(f"{p.name} is a {dim}D image ({size}); only 2D and 3D volumes are supported — "
                         "extract one time point / channel first")
    is_rgb = components == 3 and image.GetPixelID() == sitk.sitkVectorUInt8
    if components != 1 and not is_rgb:
        raise InputError(f"{p.name} has {components} components of type {image.GetPixelIDTypeAsString()} "
                         "per voxel; only scalar images and 8-bit RGB (3 components) are supported")
    array = sitk.GetArrayFromImage(image)
    spacing = tuple(float(s) for s in image.GetSpacing())
    origin = tuple(float(o) for o in image.GetOrigin())
    direction = tuple(float(d) for d in image.GetDirection())
    if dim == 2:
        array = array[None]
        spacing = (spacing[0], spacing[1], 1.0)
        origin = (origin[0], origin[1], 0.0)
        d = direction
        direction = (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
    array = np.ascontiguousarray(array.astype(np.uint8, copy=False) if is_rgb
                                 else array.astype(np.float32, copy=False))
    try:
        geometry = Geometry(shape=tuple(int(n) for n in array.shape[:3]), spacing=spacing,
                            origin=origin, direction=direction)
    except ValueError as e:
        raise InputError(f"{p.name} has an unusable geometry: {e}") from None
    return ArrayVolume(array, geometry, modality=modality, description=p.name)


def _itk_message(error: Exception) -> str:
    """The useful line of an ITK exception (they span several lines of C++ context)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith("Exception thrown in")] or lines
    if not useful:
        return type(error).__name__
    text = useful[-1]
    if "ERROR:" in text:
        text = text.split("ERROR:", 1)[1].strip()
    text = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", text)
    text = re.sub(r"^\[\w+\]\s*\w+:\s*", "", text)
    return text[:300]


def _check_labels(labels: np.ndarray, geometry: Geometry) -> np.ndarray:
    a = np.asarray(labels)
    if a.ndim != 3 or tuple(a.shape) != tuple(geometry.shape):
        raise LabelShapeError(f"label array of shape {a.shape} does not match the volume's "
                              f"(slices, rows, cols) = {tuple(geometry.shape)}")
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"labels must be integers 0..255, got dtype {a.dtype}")
    if a.size and (int(a.min()) < 0 or int(a.max()) > 255):
        raise ValueError(f"labels must be integers 0..255, got {int(a.min())}..{int(a.max())}")
    return a.astype(np.uint8)


def slicer_metadata(label_names: dict[int, str], shape: tuple[int, int, int]) -> dict[str, str]:
    """3D Slicer's .seg.nrrd segment keys, so Slicer shows named, coloured segments."""
    extent = f"0 {shape[2] - 1} 0 {shape[1] - 1} 0 {shape[0] - 1}"
    out: dict[str, str] = {}
    for i, (value, name) in enumerate(sorted(label_names.items())):
        value = int(value)
        if not 1 <= value <= 255:
            raise ValueError(f"label_names key {value} is not a label value 1..255")
        r, g, b = label_color(value)
        text = " ".join(str(name).split()) or f"label {value}"
        out[f"Segment{i}_ID"] = f"Segment_{value}"
        out[f"Segment{i}_Name"] = text
        out[f"Segment{i}_NameAutoGenerated"] = "0"
        out[f"Segment{i}_LabelValue"] = str(value)
        out[f"Segment{i}_Layer"] = "0"
        out[f"Segment{i}_Color"] = f"{r / 255:.6g} {g / 255:.6g} {b / 255:.6g}"
        out[f"Segment{i}_ColorAutoGenerated"] = "0"
        out[f"Segment{i}_Extent"] = extent
    return out


def write_label(path: str | Path, labels: np.ndarray, geometry: Geometry, *,
                label_names: dict[int, str] | None = None) -> Path:
    """Write a uint8 label volume ``(slices, rows, cols)`` as NIfTI (.nii.gz, .nii) or NRRD
    (.nrrd / .seg.nrrd, gzip-compressed), atomically, with ``geometry``'s grid.

    ``label_names`` (label value → name) is stored in NRRD as 3D Slicer's segmentation keys
    (``Segment<i>_Name`` etc.); NIfTI has no place for it. Raises :class:`InputError` for an
    irregular geometry, a .dcm or unknown suffix, or an output that cannot be written (no partial
    file is left), and :class:`LabelShapeError` (a ValueError) when the array does not fit the
    geometry.
    """
    p = Path(path)
    kind = label_suffix(p)
    if kind == "dicom-seg":
        raise InputError(f"{p.name}: DICOM SEG needs the source DICOM images; write it with "
                         "medclipsam.dicom.seg.write_dicom_seg")
    if not geometry.regular:
        raise InputError(f"cannot write {p.name}: the slices are not on a regular grid "
                         f"({geometry.irregular_reason}) and {kind.upper()} stores one origin and spacing "
                         "for the whole volume; write DICOM SEG (.dcm) instead, which stores one position "
                         "per slice")
    data = _check_labels(labels, geometry)
    if not np.all(np.isfinite(geometry.direction)) or not np.allclose(
            geometry.direction_matrix().T @ geometry.direction_matrix(), np.eye(3), atol=1e-4):
        raise InputError(f"cannot write {p.name}: the geometry's direction is not orthonormal "
                         f"({geometry.direction})")
    metadata = slicer_metadata(label_names, geometry.shape) if (kind == "nrrd" and label_names) else None
    # Streamed slice by slice (label_writers): no second copy of the volume in memory.
    if kind == "nrrd":
        def write(tmp: str) -> None:
            write_nrrd(tmp, data, geometry, metadata)
    else:
        compress = p.name.lower().endswith(".gz")

        def write(tmp: str) -> None:
            write_nifti(tmp, data, geometry, compress)

    try:
        return _atomic(p, write)
    except RuntimeError as e:
        raise InputError(f"cannot write {p}: {_itk_message(e)}") from None
    except OSError as e:
        raise InputError(f"cannot write {p}: {e.strerror or e}. Choose an output folder you can "
                         "write to") from None


def write_image(path: str | Path, src, *, overwrite: bool = True) -> Path:
    """Write a scalar :class:`~medclipsam.volume.source.VolumeSource` (e.g. a DICOM series) as a
    NIfTI/NRRD image on its grid, atomically: int16 when every value is a whole number that fits
    (CT in HU), else float32. Irregular and RGB series are refused (NIfTI holds one regular grid)."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise InputError(f"{p} already exists")
    if getattr(src, "is_rgb", False):
        raise InputError(f"{src.description}: colour images are not written as NIfTI volumes here")
    if not src.geometry.regular:
        raise InputError(f"{src.description} is not on a regular grid ({src.geometry.irregular_reason}); "
                         "it cannot be stored as one NIfTI/NRRD volume")
    array = np.stack([np.asarray(src.read_slice(k), dtype=np.float32) for k in range(len(src))])
    whole = np.all(np.isfinite(array)) and np.all(array == np.round(array))
    if whole and array.size and array.min() >= -32768 and array.max() <= 32767:
        array = array.astype(np.int16)
    sitk = _sitk()
    image = sitk.GetImageFromArray(array)
    g = src.geometry
    image.SetSpacing(tuple(float(s) for s in g.spacing))
    image.SetOrigin(tuple(float(o) for o in g.origin))
    image.SetDirection(tuple(float(d) for d in g.direction))

    suffix = _file_suffix(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.partial{suffix}")     # ITK picks the format from the suffix
    try:
        sitk.WriteImage(image, str(tmp), useCompression=True)
        os.replace(tmp, p)
    except RuntimeError as e:
        raise InputError(f"cannot write {p}: {_itk_message(e)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return p
