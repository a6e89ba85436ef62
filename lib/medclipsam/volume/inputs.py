"""Opening whatever the user points at as a volume: a DICOM series (folder, zip, files), a
NIfTI/NRRD volume (what MONAI Label's datastores hand over) or a plain 2D image file."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import InputError
from ..geometry import Geometry
from ..image import IMAGE_SUFFIXES, read_image
from .source import ArrayVolume, VolumeSource

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def volume_stem(path: str | Path) -> str | None:
    """``X`` for ``.../X.nii.gz`` (or another volume suffix); None for other files."""
    name = Path(path).name
    suffix = next((s for s in VOLUME_SUFFIXES if name.lower().endswith(s)), None)
    return name[: -len(suffix)] if suffix else None


def is_volume_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES)


def open_volume(inputs: str | Path | Sequence[str | Path], series_uid: str | None = None,
                stack: int | None = None) -> VolumeSource:
    """A :class:`VolumeSource` for a DICOM folder/zip/file list, a NIfTI/NRRD file or a 2D image.

    DICOM series are read lazily (one slice at a time); call ``close()`` on the result when it
    has one (zip input extracts to a temporary folder). ``series_uid`` and ``stack`` choose a
    series and a stack of a DICOM input (:func:`medclipsam.dicom.read_series`).
    """
    paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    if not paths:
        raise InputError("no input given; pass a DICOM folder, a zip, DICOM files, or a NIfTI/NRRD volume")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputError(f"input not found: {', '.join(missing)}")
    dicom_only = [name for name, v in (("series", series_uid), ("stack", stack)) if v is not None]
    if dicom_only and any(is_volume_file(p) or (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) for p in paths):
        raise InputError(f"the {' and '.join(dicom_only)} setting applies to DICOM input only; leave it out for a "
                         "NIfTI/NRRD volume or an image file")
    if len(paths) == 1 and is_volume_file(paths[0]):
        from .itk_io import read_volume

        return read_volume(paths[0])
    if len(paths) == 1 and paths[0].is_file() and paths[0].suffix.lower() in IMAGE_SUFFIXES:
        rgb = read_image(paths[0])
        return ArrayVolume(rgb[None], Geometry((1,) + rgb.shape[:2], has_patient_geometry=False),
                           modality="OT", description=f"2D image {paths[0].name}",
                           notes=[f"{paths[0].name} is a 2D image without patient geometry: one-slice volume, "
                                  "1 mm pixels assumed"])
    if any(is_volume_file(p) for p in paths) and len(paths) > 1:
        raise InputError("give one NIfTI/NRRD volume at a time (several files are read as one DICOM series)")
    from ..dicom import read_series

    return read_series(paths if len(paths) > 1 else paths[0], series_uid=series_uid, stack=stack)


def close_volume(src: VolumeSource) -> None:
    close = getattr(src, "close", None)
    if callable(close):
        close()
