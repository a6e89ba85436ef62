"""Label values shared by every label writer: their default display colours.

Kept apart from the writers (NIfTI/NRRD in :mod:`medclipsam.volume.itk_io`, DICOM SEG in
:mod:`medclipsam.dicom.seg`) so that both take the same colour for a label without importing each
other.
"""

from __future__ import annotations

# Display colours for labels 1, 2, ... (cycled): distinct, readable on grey images.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


def label_color(label: int) -> tuple[int, int, int]:
    """The default RGB (0–255) display colour of label value ``label`` (1-based, cycled)."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]
