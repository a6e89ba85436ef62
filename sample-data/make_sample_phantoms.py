"""Write the committed phantom set under sample-data/phantoms/ (deterministic; re-run to regenerate).

* ``ct_chest/`` — phantom CT series (seed 7, 32 slices 128×128) as DICOM; ``ct_chest_labels.nii.gz``
  its ground truth (1 tumor, 2 left lung, 3 right lung, 4 liver, 5 spine) and
  ``ct_chest_labels.json`` the names;
* ``mr_brain/`` — phantom MR brain series (seed 3) as DICOM, ``mr_brain_labels.nii.gz`` (1 tumor, 2 brain);
* ``us_breast.png`` / ``us_breast_lesion.png`` and ``xray_chest.png`` / ``xray_chest_lungs.png``:
  2D images and their masks (0/255).

This is what ``medclipsam demo`` segments. Synthetic data from :mod:`medclipsam.phantoms`, not from
any patient; the demo models never saw these seeds (they train on ``training_slices``' seeds).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from medclipsam.io import write_json, write_mask_png, write_png
from medclipsam.phantoms import ct_chest_series, mr_brain_series, us_breast_image, xray_chest_image
from medclipsam.volume.itk_io import write_label

HERE = Path(__file__).resolve().parent
CT_SEED, MR_SEED, US_SEED, XRAY_SEED = 7, 3, 5, 5
CT_LABELS = ["tumor", "left lung", "right lung", "liver", "spine"]
MR_LABELS = ["tumor", "brain"]


def make(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, series, labels in (("ct_chest", ct_chest_series(CT_SEED), CT_LABELS),
                                 ("mr_brain", mr_brain_series(MR_SEED), MR_LABELS)):
        folder = root / name
        if folder.exists():
            shutil.rmtree(folder)
        series.write_dicom(folder)
        # tumour last so that it wins over the organ that contains it
        order = labels[1:] + labels[:1]
        volume = series.label_volume(order)
        remap = np.zeros(len(order) + 1, np.uint8)
        for i, n in enumerate(order, start=1):
            remap[i] = labels.index(n) + 1
        write_label(root / f"{name}_labels.nii.gz", remap[volume], series.geometry)
        write_json(root / f"{name}_labels.json", {str(i + 1): n for i, n in enumerate(labels)})
    us = us_breast_image(US_SEED)
    write_png(root / "us_breast.png", us.rgb)
    write_mask_png(root / "us_breast_lesion.png", us.masks["lesion"])
    xr = xray_chest_image(XRAY_SEED)
    write_png(root / "xray_chest.png", xr.rgb)
    write_mask_png(root / "xray_chest_lungs.png", xr.masks["left lung"] | xr.masks["right lung"])


if __name__ == "__main__":
    make(HERE / "phantoms")
    print(f"wrote {HERE / 'phantoms'}")
