"""Writing one slice of a classic single-frame CT or MR image series (synthetic data only).

Each file carries what a real scanner writes: the patient, general study, general series,
frame-of-reference, general equipment, general image, image-plane and image-pixel modules plus the
CT or MR image module. :func:`write_slice` writes one file; the caller supplies the series-level
attributes once (:class:`SeriesHeader`) and the per-slice position, orientation and stored pixels.
UIDs are made by the caller, deterministically, with :func:`uid` (pydicom's ``generate_uid`` with
entropy sources), so the same inputs give byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

UID_ROOT = "1.2.826.0.1.3680043.8.498."   # pydicom's root for generated UIDs


def uid(*parts: object) -> str:
    """A deterministic UID under :data:`UID_ROOT` from ``parts`` (hashed by pydicom)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts]))


def ds_number(value: float, digits: int = 6) -> str:
    """A DICOM decimal string (≤ 16 characters) for ``value``: ``%g``-like, no ``-0``."""
    text = f"{float(value):.{digits}f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if len(text) > 16:
        raise ValueError(f"{value!r} does not fit a DICOM decimal string")
    return text


@dataclass(frozen=True)
class SeriesHeader:
    """The attributes shared by every slice of a series (strings exactly as written)."""

    modality: str                         # "CT" or "MR"
    study_uid: str
    series_uid: str
    frame_uid: str
    patient_id: str
    slice_thickness: str
    series_description: str
    body_part: str = "CHEST"
    study_description: str = "synthetic phantom"
    patient_name: str = "Phantom^Synthetic"
    patient_position: str = "HFS"
    date: str = "20260101"
    time: str = "120000"
    manufacturer: str = "medclipsam synthetic phantom"
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL")
    bits_stored: int = 12                 # 12: CT with RescaleIntercept; 16: MR unsigned
    rescale: tuple[str, str, str] | None = ("-1024", "1", "HU")   # intercept, slope, type
    window: tuple[str, str] | None = ("40", "400")                # centre, width
    extra: tuple[tuple[str, Any], ...] = field(default_factory=tuple)   # (keyword, value) pairs


def write_slice(path: str | Path, header: SeriesHeader, *, sop_uid: str, instance_number: int,
                position: list[str], orientation: list[str], slice_location: str | None,
                pixel_spacing: list[str], stored: np.ndarray) -> Path:
    """Write one single-frame slice; ``stored`` is the uint16 rows×cols pixel data as stored."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

    sop_class = {"CT": CTImageStorage, "MR": MRImageStorage}[header.modality]
    pixels = np.ascontiguousarray(stored, dtype="<u2")
    if pixels.ndim != 2:
        raise ValueError(f"expected rows×cols stored pixels, got shape {pixels.shape}")
    if int(pixels.max(initial=0)) >= 1 << header.bits_stored:
        raise ValueError(f"stored values exceed {header.bits_stored} bits")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID_ROOT + "1"
    path = Path(path)
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(header.image_type)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = header.date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = header.time
    ds.AccessionNumber = ""
    ds.Modality = header.modality
    ds.Manufacturer = header.manufacturer
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = header.study_description
    ds.SeriesDescription = header.series_description
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = header.body_part
    for keyword, value in header.extra:
        setattr(ds, keyword, value)
    ds.SliceThickness = header.slice_thickness
    ds.PatientPosition = header.patient_position
    ds.StudyInstanceUID, ds.SeriesInstanceUID = header.study_uid, header.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = header.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = list(position)
    ds.ImageOrientationPatient = list(orientation)
    if slice_location is not None:
        ds.SliceLocation = slice_location
    ds.PixelSpacing = list(pixel_spacing)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = \
        16, header.bits_stored, header.bits_stored - 1, 0
    if header.rescale is not None:
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = header.rescale
    if header.window is not None:
        ds.WindowCenter, ds.WindowWidth = header.window
    ds.PixelData = pixels.tobytes()
    pydicom.dcmwrite(str(path), ds, write_like_original=False)
    return path


__all__ = ["UID_ROOT", "SeriesHeader", "uid", "ds_number", "write_slice"]
