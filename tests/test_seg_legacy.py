"""DICOM SEG from legacy source headers (issue 23, items 3–4): values legal in practice that stopped
the SEG writer after the whole pipeline had run, or that it copied into the SEG where dciodvfy
rejects them. Each oddity is written into a small synthetic series with pydicom; the SEG must be
written, pass dciodvfy with 0 errors and carry the repaired (or no) value; what no repair can give is
refused by the up-front check, with the advice to write NIfTI."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from medclipsam.dicom.legacy import legacy_fixes
from medclipsam.dicom.seg import (
    DicomSegWarning,
    SegmentSpec,
    SegNotWritableError,
    check_seg_sources,
    read_dicom_seg,
    write_dicom_seg,
)
from medclipsam.dicom.validate import dciodvfy_available, validate_with_dciodvfy
from medclipsam.phantoms.synthetic_ct import write_synthetic_ct

SLICES, SIZE = 3, 16
KW = dict(series_description="legacy header test", algorithm_version="0.1.0")
RT_IMAGE = "1.2.840.10008.5.1.4.1.1.481.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"


# ------------------------------------------------------------------------------------------ helpers


def make_series(folder: Path, change, slices: int = SLICES) -> list[Dataset]:
    """A synthetic CT series whose files ``change(ds)`` edited; read back (without pixels) as the CLI
    reads them."""
    series = write_synthetic_ct(folder, slices=slices, size=SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # pydicom's "Invalid value for VR ..." on the legacy values
        for f in series.files:
            ds = pydicom.dcmread(f)
            change(ds)
            ds.save_as(f)
        return [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]


def labels_for(n: int) -> np.ndarray:
    labels = np.zeros((n, SIZE, SIZE), np.uint8)
    labels[n // 2, 4:9, 5:11] = 1
    return labels


def write(tmp_path: Path, sources: list[Dataset]) -> tuple[pydicom.Dataset, list[str]]:
    """Write a one-segment SEG; returns it (read back) and the writer's warnings."""
    out = tmp_path / "seg.dcm"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_dicom_seg(out, sources, labels_for(len(sources)), [SegmentSpec(1, "lesion")], **KW)
    assert out.is_file()
    if dciodvfy_available():
        report = validate_with_dciodvfy(out)
        assert report.errors == [], "dciodvfy errors:\n" + "\n".join(report.errors)
    notes = [str(w.message) for w in caught if issubclass(w.category, DicomSegWarning)]
    # the CLI prints every UserWarning of the writer as a note: pydicom's complaints about the very
    # values that were repaired must not reach it
    assert not [w for w in caught if "Invalid value for VR" in str(w.message)]
    # the labels come back on the same slices
    back, _ = read_dicom_seg(out, sources)
    assert np.array_equal(back, labels_for(len(sources)))
    return pydicom.dcmread(out), notes


def pixel_measures(seg: pydicom.Dataset) -> Dataset:
    return seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]


def _lossy_no_method(ds):
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = "12.5"


def _imager_spacing(ds):
    ds.ImagerPixelSpacing = ds.PixelSpacing
    del ds.PixelSpacing


def _rtimage(ds):
    """An RT image: frame of reference, but no patient position/orientation, no PixelSpacing (only
    ImagePlanePixelSpacing), no SliceThickness."""
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = RT_IMAGE
    ds.Modality = "RTIMAGE"
    ds.ImagePlanePixelSpacing = ["0.4", "0.4"]
    for keyword in ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness",
                    "SliceLocation"):
        delattr(ds, keyword)


def _lossy_cr(ds):
    """A lossy CR (flag 01, neither ratio nor method): no frame of reference, ImagerPixelSpacing only."""
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE
    ds.Modality = "CR"
    ds.ImagerPixelSpacing = ["0.15", "0.15"]
    ds.LossyImageCompression = "01"
    for keyword in ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness",
                    "SliceLocation", "FrameOfReferenceUID", "PositionReferenceIndicator"):
        delattr(ds, keyword)


def _colon_time(ds):
    ds.StudyTime = ds.SeriesTime = "11:42:21"


def _zero_date(ds):
    ds.StudyDate = ds.PatientBirthDate = "00000000"


def _negative_spacing(ds):
    ds.SpacingBetweenSlices = "-2.5"


def _empty_deidentification(ds):
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = ""


def _empty_deidentification_alone(ds):
    ds.DeidentificationMethod = ""


def _empty_procedure(ds):
    ds.ProcedureCodeSequence = DicomSequence([])


def _empty_thickness(ds):
    ds.SliceThickness = ""


# ------------------------------------------------------------------------------------------ item 3


def test_lossy_flag_without_method(tmp_path):
    seg, notes = write(tmp_path, make_series(tmp_path / "src", _lossy_no_method))
    assert seg.LossyImageCompression == "01"
    assert float(seg.LossyImageCompressionRatio) == 12.5
    assert "LossyImageCompressionMethod" not in seg          # unknown: left out, not invented
    assert any("LossyImageCompression is 01 without LossyImageCompressionMethod" in n for n in notes)


def test_lossy_method_from_a_jpeg2000_transfer_syntax():
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.91"
    ds.SOPClassUID = CR_IMAGE
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = "20"
    fixes = {f.keyword: f.value for f in legacy_fixes(ds)}
    assert fixes == {"LossyImageCompressionMethod": "ISO_15444_1"}


def test_lossy_cr_without_ratio_method_or_pixel_spacing(tmp_path):
    sources = make_series(tmp_path / "src", _lossy_cr, slices=1)
    seg, notes = write(tmp_path, sources)
    assert seg.LossyImageCompression == "01"
    assert "LossyImageCompressionRatio" not in seg and "LossyImageCompressionMethod" not in seg
    assert "FrameOfReferenceUID" not in seg


def test_imager_pixel_spacing_stands_in_for_pixel_spacing(tmp_path):
    seg, notes = write(tmp_path, make_series(tmp_path / "src", _imager_spacing))
    assert [float(v) for v in pixel_measures(seg).PixelSpacing] == [0.8, 0.8]
    assert any("ImagerPixelSpacing" in n for n in notes)


def test_rtimage_with_image_plane_pixel_spacing_only(tmp_path):
    seg, notes = write(tmp_path, make_series(tmp_path / "src", _rtimage, slices=1))
    assert seg.Modality == "SEG" and seg.ContentLabel == "RTIMAGE_SEG"
    assert "FrameOfReferenceUID" not in seg          # no position to refer it to: a projection SEG
    assert any("no ImagePositionPatient/ImageOrientationPatient" in n for n in notes)


def test_rtimage_reads_with_its_image_plane_pixel_spacing(tmp_path):
    """The series reader (hence NIfTI output) takes ImagePlanePixelSpacing, not 1 mm pixels."""
    from medclipsam.dicom import read_series

    make_series(tmp_path / "src", _rtimage, slices=1)
    with read_series(tmp_path / "src") as s:
        assert s.geometry.spacing[:2] == pytest.approx((0.4, 0.4))
        assert not any("1 mm pixels assumed" in n for n in s.notes)


def test_colon_time_is_repaired(tmp_path):
    seg, notes = write(tmp_path, make_series(tmp_path / "src", _colon_time))
    assert seg.StudyTime == "114221"
    assert any("StudyTime '11:42:21'" in n for n in notes)


def test_year_zero_date_is_emptied(tmp_path):
    seg, notes = write(tmp_path, make_series(tmp_path / "src", _zero_date))
    assert seg["StudyDate"].value in ("", None) and seg["PatientBirthDate"].value in ("", None)   # type 2: empty
    assert any("StudyDate '00000000'" in n for n in notes)


def test_empty_slice_thickness_takes_the_slice_spacing(tmp_path):
    seg, notes = write(tmp_path, make_series(tmp_path / "src", _empty_thickness))
    assert float(pixel_measures(seg).SliceThickness) == 2.5


def test_all_legacy_values_at_once(tmp_path):
    def everything(ds):
        for change in (_lossy_no_method, _imager_spacing, _colon_time, _zero_date, _negative_spacing,
                       _empty_deidentification, _empty_procedure, _empty_thickness):
            change(ds)

    sources = make_series(tmp_path / "src", everything)
    notes = check_seg_sources(sources)               # the up-front check accepts it and says what it repairs
    assert len(notes) == 1 and "StudyTime" in notes[0] and "SpacingBetweenSlices" in notes[0]
    seg, _ = write(tmp_path, sources)
    assert seg.StudyTime == "114221" and float(pixel_measures(seg).SpacingBetweenSlices) == 2.5
    # the caller's data sets are not modified
    assert sources[0].StudyTime == "11:42:21" and "PixelSpacing" not in sources[0]


# ------------------------------------------------------------------------------------------ item 4


def test_negative_spacing_between_slices(tmp_path):
    seg, notes = write(tmp_path, make_series(tmp_path / "src", _negative_spacing))
    assert float(pixel_measures(seg).SpacingBetweenSlices) == 2.5
    assert any("SpacingBetweenSlices -2.5 is negative" in n for n in notes)


def test_empty_deidentification_method_with_identity_removed(tmp_path):
    seg, _ = write(tmp_path, make_series(tmp_path / "src", _empty_deidentification))
    assert seg.PatientIdentityRemoved == "YES" and seg.DeidentificationMethod.startswith("unknown")


def test_empty_deidentification_method_alone_is_left_out(tmp_path):
    seg, _ = write(tmp_path, make_series(tmp_path / "src", _empty_deidentification_alone))
    assert "DeidentificationMethod" not in seg


def test_empty_procedure_code_sequence_is_left_out(tmp_path):
    seg, notes = write(tmp_path, make_series(tmp_path / "src", _empty_procedure))
    assert "ProcedureCodeSequence" not in seg
    assert any("ProcedureCodeSequence is empty" in n for n in notes)


@pytest.mark.parametrize("keyword, value, expected", [
    ("PatientSex", "U", ""),                       # highdicom refuses it outright (after the pipeline ran)
    ("PatientSex", "male", "M"),
    ("PatientAge", "45", "045Y"),
    ("StudyID", "12345678901234567", "1234567890123456"),
    ("AccessionNumber", "A" * 20, "A" * 16),
    ("PatientName", "x" * 70, "x" * 64),
    ("StudyDescription", "d" * 80, "d" * 64),
    ("PositionReferenceIndicator", "p" * 80, "p" * 64),   # copied with the frame of reference
    ("PatientBirthDate", "19800230", ""),                  # 30 February
])
def test_values_their_vr_does_not_allow(tmp_path, keyword, value, expected):
    def change(ds):
        setattr(ds, keyword, value)

    seg, notes = write(tmp_path, make_series(tmp_path / "src", change))
    assert str(seg[keyword].value or "") == expected
    assert any(keyword in n for n in notes)


def test_unreadable_decimal_is_left_out(tmp_path):
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    def change(ds):
        tag = Tag("PatientWeight")
        ds[tag] = RawDataElement(tag, "DS", 4, b"abc ", 0, False, True)   # pydicom cannot convert it

    seg, notes = write(tmp_path, make_series(tmp_path / "src", change))
    assert "PatientWeight" not in seg


def test_lower_case_modality_gives_a_valid_content_label(tmp_path):
    def change(ds):
        ds.Modality = "ct"

    seg, _ = write(tmp_path, make_series(tmp_path / "src", change))
    assert seg.ContentLabel == "CT_SEG"


# ------------------------------------------------------------------------------------------ refused up front


def _no_frame_of_reference(ds):
    del ds.FrameOfReferenceUID


def _private_sop_class(ds):
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.8.498.999"


def _no_spacing_at_all(ds):
    del ds.PixelSpacing


def _zero_spacing(ds):
    ds.PixelSpacing = ["0", "0"]


@pytest.mark.parametrize("change, words", [
    (_no_frame_of_reference, "no FrameOfReferenceUID"),
    (_private_sop_class, "SOP class"),
    (_no_spacing_at_all, "PixelSpacing"),
    (_zero_spacing, "PixelSpacing"),
])
def test_impossible_seg_is_refused_before_any_work(tmp_path, change, words):
    sources = make_series(tmp_path / "src", change)
    with pytest.raises(SegNotWritableError) as info:
        check_seg_sources(sources)
    assert words in str(info.value) and ".nii.gz" in str(info.value)
    out = tmp_path / "seg.dcm"
    with pytest.raises(SegNotWritableError):         # the writer runs the same check
        write_dicom_seg(out, sources, labels_for(len(sources)), [SegmentSpec(1, "lesion")], **KW)
    assert not out.exists()


def test_ct_slice_without_position_is_refused(tmp_path):
    def change(ds):             # a CT (its IOD requires the frame of reference) without a position
        del ds.ImagePositionPatient, ds.ImageOrientationPatient

    sources = make_series(tmp_path / "src", change, slices=1)
    with pytest.raises(SegNotWritableError, match="ImagePositionPatient / ImageOrientationPatient.*nii.gz"):
        check_seg_sources(sources)


def test_cli_refuses_before_loading_models(tmp_path, capsys, monkeypatch):
    import medclipsam.models as models
    from medclipsam.cli import main

    make_series(tmp_path / "src", _no_frame_of_reference)

    def no_models(*args, **kwargs):
        raise AssertionError("models loaded although the SEG cannot be written")

    monkeypatch.setattr(models, "load_clip", no_models)
    monkeypatch.setattr(models, "load_sam", no_models)
    out = tmp_path / "seg.dcm"
    code = main(["segment-series", str(tmp_path / "src"), "--prompt", "lesion", "--out", str(out),
                 "--clip", "random:tiny", "--sam", "tiny:random", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "no DICOM SEG can be written" in err and ".nii.gz" in err and not out.exists()


def test_cli_writes_a_seg_from_legacy_headers(tmp_path, capsys):
    """The issue's case end to end: the whole pipeline runs, then the SEG is written (it failed here)."""
    from medclipsam.cli import main

    def legacy(ds):
        for change in (_colon_time, _zero_date, _lossy_no_method, _imager_spacing, _negative_spacing,
                       _empty_deidentification, _empty_procedure):
            change(ds)

    series = write_synthetic_ct(tmp_path / "src", slices=4, size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in series.files:
            ds = pydicom.dcmread(f)
            legacy(ds)
            ds.save_as(f)
    out = tmp_path / "seg.dcm"
    code = main(["segment-series", str(series.folder), "--prompt", "lesion", "--out", str(out), "--no-gate",
                 "--clip", "random:tiny", "--sam", "tiny:random", "--set", "m2ib.layer=2", "--set", "m2ib.steps=3",
                 "--set", "m2ib.samples=2", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "source header values repaired for the DICOM SEG" in captured.err
    seg = pydicom.dcmread(out)
    assert seg.StudyTime == "114221" and seg.LossyImageCompression == "01"
    if dciodvfy_available():
        assert validate_with_dciodvfy(out).errors == []


ENHANCED = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "dicom" / "ct_multiframe_enhanced" \
    / "eCT_Supplemental.dcm"


@pytest.mark.parametrize("where", ["shared", "per-frame"])
def test_negative_spacing_in_enhanced_functional_groups(tmp_path, where):
    if not ENHANCED.is_file():
        pytest.skip(f"enhanced CT not found at {ENHANCED}")
    ds = pydicom.dcmread(ENHANCED, stop_before_pixels=True)
    shared = ds.SharedFunctionalGroupsSequence[0]
    if where == "shared":
        shared.PixelMeasuresSequence[0].SpacingBetweenSlices = "-10"
    else:                                   # Philips style: the measures in every frame, not shared
        for item in ds.PerFrameFunctionalGroupsSequence:
            measures = Dataset()
            measures.PixelSpacing = shared.PixelMeasuresSequence[0].PixelSpacing
            measures.SliceThickness = "10"
            measures.SpacingBetweenSlices = "-10"
            item.PixelMeasuresSequence = DicomSequence([measures])
        del shared.PixelMeasuresSequence
    labels = np.zeros((int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)), np.uint8)
    labels[0, 100:140, 100:160] = 1
    out = tmp_path / "seg.dcm"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_dicom_seg(out, [ds], labels, [SegmentSpec(1, "lesion")], **KW)
    assert any("negative" in str(w.message) for w in caught)
    seg = pydicom.dcmread(out)
    assert float(pixel_measures(seg).SpacingBetweenSlices) == 10
    if dciodvfy_available():
        assert validate_with_dciodvfy(out).errors == []
