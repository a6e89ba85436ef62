"""DICOM input and output: image series in (:mod:`.series`), DICOM SEG out (:mod:`.seg`) with coded
segment concepts (:mod:`.codes`), and validation with dciodvfy (:mod:`.validate`)
(synthetic test series are written by :mod:`medclipsam.phantoms.synthetic_ct`).

The names below are imported on first use (PEP 562): listing a series (``scan_series``) must not
pay for highdicom, which the SEG writer and the segment codes need.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .codes import SegmentConcept, concept_for_prompt
    from .seg import SegmentSpec, read_dicom_seg, write_dicom_seg
    from .series import DicomInputError, DicomSeries, SeriesSummary, SliceRef, read_series, scan_series
    from .validate import ValidationReport, dciodvfy_available, validate_with_dciodvfy

_WHERE = {
    "SegmentConcept": "codes", "concept_for_prompt": "codes",
    "SegmentSpec": "seg", "read_dicom_seg": "seg", "write_dicom_seg": "seg",
    "DicomInputError": "series", "DicomSeries": "series", "SeriesSummary": "series", "SliceRef": "series",
    "read_series": "series", "scan_series": "series",
    "ValidationReport": "validate", "dciodvfy_available": "validate", "validate_with_dciodvfy": "validate",
}

__all__ = ["DicomInputError", "DicomSeries", "SeriesSummary", "SliceRef", "read_series", "scan_series",
           "SegmentConcept", "concept_for_prompt", "SegmentSpec", "read_dicom_seg", "write_dicom_seg",
           "ValidationReport", "dciodvfy_available", "validate_with_dciodvfy"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
