"""Synthetic DICOM CT series for tests and benchmarks (no real patient data).

:func:`write_synthetic_ct` writes a classic single-frame CT series — one file per slice, with the
patient, study, series, frame-of-reference, equipment, image-plane and image-pixel attributes a
real scanner writes — of a simple phantom: air around an elliptic water body (0 HU) with a
spherical "lesion" (+80 HU) and two "lungs" (−850 HU). It returns the files and the ground truth
as (slices, rows, cols) boolean arrays in sorted slice order.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dicom_writer import UID_ROOT  # noqa: F401  (re-exported: pydicom's root for generated UIDs)


@dataclass
class SyntheticSeries:
    folder: Path
    files: list[Path]                 # in slice order (inferior → superior)
    lesion: np.ndarray                # bool slices×rows×cols
    lungs: np.ndarray
    spacing: tuple[float, float, float]
    series_uid: str
    study_uid: str


def phantom_slice(k: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HU values, lesion mask and lung mask of slice k of n (size×size)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = ((xx - 0.5) / 0.42) ** 2 + ((yy - 0.5) / 0.32) ** 2 <= 1.0
    z = (k + 0.5) / n
    lung_r = 0.12 * np.sqrt(max(0.0, 1.0 - ((z - 0.55) / 0.4) ** 2))
    lungs = np.zeros_like(body)
    if lung_r > 0:
        for cx in (0.33, 0.67):
            lungs |= ((xx - cx) ** 2 + ((yy - 0.48) / 1.3) ** 2) <= lung_r ** 2
    lesion_r = 0.09 ** 2 - (z - 0.5) ** 2 * 0.09
    lesion = ((xx - 0.5) ** 2 + (yy - 0.62) ** 2 <= lesion_r) if lesion_r > 0 else np.zeros_like(body)
    hu = np.full((size, size), -1000.0, np.float32)
    hu[body] = 0.0
    hu[lungs & body] = -850.0
    hu[lesion & body] = 80.0
    return hu, lesion & body, lungs & body


def write_synthetic_ct(folder: str | Path, slices: int = 20, size: int = 128, pixel_spacing: float = 0.8,
                       slice_spacing: float = 2.5, seed: int = 0, noise_hu: float = 10.0) -> SyntheticSeries:
    from .dicom_writer import SeriesHeader, uid, write_slice

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid = uid(f"study-{seed}")
    series_uid = uid(f"series-{seed}-{slices}-{size}")
    header = SeriesHeader(
        modality="CT", study_uid=study_uid, series_uid=series_uid, frame_uid=uid(f"frame-{seed}"),
        patient_id=f"PHANTOM{seed:04d}", slice_thickness=f"{slice_spacing:g}",
        series_description="synthetic CT phantom", body_part="CHEST",
        date=_dt.date(2026, 1, 1).strftime("%Y%m%d"), extra=(("KVP", "120"),))
    files, lesions, lungs_all = [], [], []
    for k in range(slices):
        hu, lesion, lungs = phantom_slice(k, slices, size)
        hu = hu + rng.normal(0.0, noise_hu, hu.shape).astype(np.float32)
        stored = np.clip(np.round(hu + 1024.0), 0, 4095).astype(np.uint16)
        path = write_slice(
            out / f"slice_{k:04d}.dcm", header, sop_uid=uid(series_uid, str(k)), instance_number=k + 1,
            position=[f"{-size * pixel_spacing / 2:g}", f"{-size * pixel_spacing / 2:g}", f"{k * slice_spacing:g}"],
            orientation=["1", "0", "0", "0", "1", "0"], slice_location=f"{k * slice_spacing:g}",
            pixel_spacing=[f"{pixel_spacing:g}", f"{pixel_spacing:g}"], stored=stored)
        files.append(path)
        lesions.append(lesion)
        lungs_all.append(lungs)
    return SyntheticSeries(out, files, np.stack(lesions), np.stack(lungs_all),
                           (pixel_spacing, pixel_spacing, slice_spacing), str(series_uid), str(study_uid))
