"""A deterministic synthetic "phantom world" with known truth, for training and evaluation.

* :func:`ct_chest_series` — a CT series of the lower chest / upper abdomen (HU) with lungs, liver,
  spine and a tumour on some slices; :func:`mr_brain_series` — a brain MR series (T2 or
  contrast-enhanced T1) with a tumour on some slices. Both are :class:`PhantomSeries`: values,
  boolean labels, a patient :class:`~medclipsam.volume.Geometry` (some seeds oblique, feet-first or
  coronal), one caption per slice, and DICOM output that :func:`medclipsam.dicom.read_series` reads
  back to the same geometry and values.
* :func:`us_breast_image` (speckle, a hypoechoic lesion with posterior shadowing or enhancement) and
  :func:`xray_chest_image` (frontal chest radiograph) — :class:`PhantomSlice` examples.
* :func:`training_slices` — a balanced, deterministic mix of all four kinds, target-absent slices
  included.

Everything is a function of the seed: the same seed gives identical arrays, captions and bytes.
Modules: :mod:`.base` (types, structure names), :mod:`.shapes` (geometry, primitives),
:mod:`.ct`, :mod:`.mr`, :mod:`.ultrasound`, :mod:`.xray`, :mod:`.captions`, :mod:`.dataset`,
:mod:`.dicom_io` / :mod:`.dicom_writer` (DICOM output).
"""

from .base import ALIASES, STRUCTURES, PhantomSeries, PhantomSlice, resolve
from .captions import TUMOUR_WORDS, mentions_tumour
from .ct import CT_HU, ct_chest_series
from .dataset import KINDS, training_slices
from .mr import MR_VALUES, mr_brain_series
from .ultrasound import us_breast_image
from .xray import xray_chest_image

__all__ = ["STRUCTURES", "ALIASES", "KINDS", "resolve", "PhantomSlice", "PhantomSeries", "ct_chest_series",
           "mr_brain_series", "us_breast_image", "xray_chest_image", "training_slices", "CT_HU", "MR_VALUES",
           "TUMOUR_WORDS", "mentions_tumour"]
