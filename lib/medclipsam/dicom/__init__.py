"""DICOM input and output: image series in (:mod:`.series`), DICOM SEG out (:mod:`.seg`) with coded
segment concepts (:mod:`.codes`), validation with dciodvfy (:mod:`.validate`), and synthetic test
series (:mod:`.synthetic`)."""

from .codes import SegmentConcept, concept_for_prompt
from .seg import SegmentSpec, read_dicom_seg, write_dicom_seg
from .series import DicomInputError, DicomSeries, SeriesSummary, SliceRef, read_series, scan_series
from .validate import ValidationReport, dciodvfy_available, validate_with_dciodvfy

__all__ = ["DicomInputError", "DicomSeries", "SeriesSummary", "SliceRef", "read_series", "scan_series",
           "SegmentConcept", "concept_for_prompt", "SegmentSpec", "read_dicom_seg", "write_dicom_seg",
           "ValidationReport", "dciodvfy_available", "validate_with_dciodvfy"]
