"""Write the sample DICOM series under sample-data/dicom/ (deterministic; re-run to regenerate).

``phantom_ct/``: a synthetic 24-slice 128×128 CT series (one file per slice, Explicit VR Little
Endian, 12-bit with RescaleIntercept −1024): air around an elliptic water body, two lungs and a
round +80 HU lesion; ``phantom_ct_lesion.nii.gz`` and ``phantom_ct_lungs.nii.gz`` are the ground
truth in the series' geometry. Synthetic data, not from any patient; made by
:func:`medclipsam.phantoms.synthetic_ct.write_synthetic_ct`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from medclipsam.phantoms.synthetic_ct import write_synthetic_ct
from medclipsam.volume import Geometry
from medclipsam.volume.itk_io import write_label

HERE = Path(__file__).resolve().parent
SLICES, SIZE, SEED = 24, 128, 3


def make(root: Path) -> None:
    folder = root / "phantom_ct"
    if folder.exists():
        shutil.rmtree(folder)
    series = write_synthetic_ct(folder, slices=SLICES, size=SIZE, seed=SEED)
    half = SIZE * series.spacing[0] / 2
    geometry = Geometry((SLICES, SIZE, SIZE), series.spacing, (-half, -half, 0.0))
    write_label(root / "phantom_ct_lesion.nii.gz", series.lesion.astype(np.uint8), geometry)
    write_label(root / "phantom_ct_lungs.nii.gz", series.lungs.astype(np.uint8), geometry)


if __name__ == "__main__":
    make(HERE / "dicom")
    print(f"wrote {HERE / 'dicom'}")
