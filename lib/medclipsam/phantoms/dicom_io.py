"""A :class:`~.base.PhantomSeries` as a classic single-frame DICOM series.

CT: CT Image Storage, 12 bits stored with RescaleIntercept −1024 / slope 1 (stored = HU + 1024);
MR: MR Image Storage, 16-bit unsigned as the values are (no rescale). One file per slice, in array
order (``InstanceNumber`` = k + 1), ImagePositionPatient = the geometry's position of slice k,
ImageOrientationPatient from its direction. Because the direction is a proper rotation (slice
axis = row × column), sorting by position along the normal — what
:func:`medclipsam.dicom.read_series` does — gives back the array's slice order and the same
geometry. UIDs are deterministic (seed, kind and shape), so the same phantom writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .dicom_writer import SeriesHeader, ds_number, uid, write_slice

if TYPE_CHECKING:
    from .base import PhantomSeries

CT_INTERCEPT = -1024.0
BODY_PART = {"ct-chest": "CHEST", "mr-brain": "HEAD"}


def _header(series: "PhantomSeries") -> SeriesHeader:
    key = f"phantom-{series.kind}-{series.seed}"
    n, rows, cols = series.geometry.shape
    common = dict(
        study_uid=uid(key, "study"), series_uid=uid(key, "series", n, rows, cols),
        frame_uid=uid(key, "frame"), patient_id=f"PHANTOM-{series.kind.upper()}-{series.seed:04d}",
        slice_thickness=ds_number(series.geometry.spacing[2]), body_part=BODY_PART.get(series.kind, ""),
        patient_position=series.patient_position,
        study_description=f"synthetic {series.kind} phantom",
    )
    if series.modality == "CT":
        return SeriesHeader(
            modality="CT", series_description=f"synthetic {series.plane} CT phantom"[:64],
            image_type=("ORIGINAL", "PRIMARY", "AXIAL"), bits_stored=12,
            rescale=(ds_number(CT_INTERCEPT), "1", "HU"), window=("40", "400"),
            extra=(("KVP", "120"), ("AcquisitionNumber", 1)), **common)
    if series.modality == "MR":
        lo, hi = np.percentile(series.values[:, ::4, ::4], [0.5, 99.5])
        t1 = "T1" in series.description
        extra = [("ScanningSequence", "SE"), ("SequenceVariant", "NONE"), ("ScanOptions", ""),
                 ("MRAcquisitionType", "2D"), ("RepetitionTime", "500" if t1 else "4000"),
                 ("EchoTime", "12" if t1 else "100"), ("EchoTrainLength", "1" if t1 else "16"),
                 ("MagneticFieldStrength", "1.5"), ("AcquisitionNumber", 1)]
        if t1:
            extra.insert(0, ("ContrastBolusAgent", "gadolinium"))
        return SeriesHeader(
            modality="MR", series_description=f"synthetic {series.plane} {series.description} MR phantom"[:64],
            image_type=("ORIGINAL", "PRIMARY", "OTHER"), bits_stored=16, rescale=None,
            window=(ds_number((lo + hi) / 2, 1), ds_number(max(hi - lo, 1.0), 1)), extra=tuple(extra), **common)
    raise ValueError(f"cannot write a {series.modality} phantom as DICOM (CT and MR only)")


def stored_pixels(series: "PhantomSeries", k: int) -> np.ndarray:
    """The uint16 pixel data of slice ``k`` (CT: HU + 1024 in 12 bits; MR: as is, 16 bits)."""
    v = np.round(series.values[k].astype(np.float64))
    if series.modality == "CT":
        return np.clip(v - CT_INTERCEPT, 0, 4095).astype(np.uint16)
    return np.clip(v, 0, 65535).astype(np.uint16)


def write_series(series: "PhantomSeries", folder: str | Path) -> list[Path]:
    """Write ``series`` under ``folder`` (created) as ``slice_0000.dcm`` … in array order."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    header = _header(series)
    g = series.geometry
    d = g.direction_matrix()
    orientation = [ds_number(v, 8) for v in np.concatenate([d[:, 0], d[:, 1]])]
    normal = np.cross(d[:, 0], d[:, 1])
    spacing = [ds_number(g.spacing[1]), ds_number(g.spacing[0])]   # PixelSpacing: row spacing, column spacing
    files = []
    for k in range(len(series)):
        pos = np.asarray(g.slice_position(k))
        files.append(write_slice(
            out / f"slice_{k:04d}.dcm", header, sop_uid=uid(header.series_uid, k), instance_number=k + 1,
            position=[ds_number(v) for v in pos], orientation=orientation,
            slice_location=ds_number(float(pos @ normal)), pixel_spacing=spacing, stored=stored_pixels(series, k)))
    return files


__all__ = ["write_series", "stored_pixels", "CT_INTERCEPT"]
