"""DICOM SEG output (medclipsam.dicom.seg), segment codes and dciodvfy validation, on real DICOM."""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medclipsam.dicom.codes import concept_for_prompt
from medclipsam.dicom.seg import (
    DicomSegError,
    DicomSegWarning,
    EmptySegmentationError,
    SegmentSpec,
    dicom_lab_to_rgb,
    read_dicom_seg,
    rgb_to_dicom_lab,
    write_dicom_seg,
)
from medclipsam.dicom.validate import dciodvfy_available, parse_dciodvfy, validate_with_dciodvfy
from medclipsam.errors import InputError, MedClipSamError
from medclipsam.volume.itk_io import LabelShapeError, read_volume

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "dicom"
PHILIPS = CORPUS / "ct_series_philips_uncompressed"
SIEMENS = CORPUS / "ct_series_siemens_j2k_blank_uids_with_reference_seg" / "image"
ENHANCED = CORPUS / "ct_multiframe_enhanced" / "eCT_Supplemental.dcm"
GE3 = CORPUS / "seg_referencing_ct_ge_3slice"

needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"DICOM corpus not found at {CORPUS}")
needs_dciodvfy = pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy (dicom3tools) is not on PATH")

KW = dict(series_description="MedCLIP-SAM: BiomedCLIP saliency + SAM ViT-B (test)", algorithm_version="0.1.0")


# ------------------------------------------------------------------------------------------ helpers


def _normal(ds) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    return np.cross(iop[:3], iop[3:])


def load_series(folder: Path) -> list[pydicom.Dataset]:
    """A single-frame series without pixel data, sorted along the slice normal."""
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.glob("*.dcm"))]
    n = _normal(datasets[0])
    return sorted(datasets, key=lambda d: float(n @ np.asarray(d.ImagePositionPatient, dtype=np.float64)))


def load_enhanced() -> tuple[pydicom.Dataset, list[tuple[int, int]]]:
    ds = pydicom.dcmread(ENHANCED, stop_before_pixels=True)
    iop = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    n = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    ipps = [np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
            for item in ds.PerFrameFunctionalGroupsSequence]
    order = sorted(range(len(ipps)), key=lambda f: float(n @ ipps[f]))
    return ds, [(0, f) for f in order]


def sphere_and_box(n: int, rows: int, cols: int) -> np.ndarray:
    """Label 1: a ball in the middle slices; label 2: a box elsewhere; slices 0 and n-1 stay empty."""
    labels = np.zeros((n, rows, cols), np.uint8)
    zz, yy, xx = np.mgrid[:n, :rows, :cols]
    centre = (n / 2, rows * 0.4, cols * 0.4)
    radius_vox = np.array([max(n / 4, 1.0), rows / 8, cols / 8])
    ball = (((zz - centre[0]) / radius_vox[0]) ** 2 + ((yy - centre[1]) / radius_vox[1]) ** 2
            + ((xx - centre[2]) / radius_vox[2]) ** 2) <= 1.0
    labels[ball] = 1
    z0, z1 = (1, max(2, n // 3)) if n > 2 else (0, n)
    labels[z0:z1, int(rows * 0.7):int(rows * 0.85), int(cols * 0.6):int(cols * 0.8)] = 2
    labels[0] = 0 if n > 2 else labels[0]
    return labels


SEGMENTS = [SegmentSpec(1, "left lung"), SegmentSpec(2, "liver tumor", description="box", color=(0, 0, 255))]


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _frame_refs(seg: pydicom.Dataset) -> list[tuple[int, str, int | None]]:
    out = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        src = item.DerivationImageSequence[0].SourceImageSequence[0]
        frame = src.get("ReferencedFrameNumber")
        out.append((int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
                    str(src.ReferencedSOPInstanceUID), None if frame is None else int(frame)))
    return out


def _assert_valid(path: Path) -> None:
    report = validate_with_dciodvfy(path)
    assert report.errors == [], "dciodvfy errors:\n" + "\n".join(report.errors) + \
        "\nwarnings:\n" + "\n".join(report.warnings)


def _highdicom_labels(path: Path, uids: list[str]) -> np.ndarray:
    seg = hd.seg.segread(str(path))
    return seg.get_pixels_by_source_instance(uids, combine_segments=True, relabel=False,
                                             assert_missing_frames_are_empty=True).astype(np.uint8)


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def philips():
    if not PHILIPS.is_dir():
        pytest.skip(f"DICOM corpus case not found at {PHILIPS}")
    return load_series(PHILIPS)


@pytest.fixture(scope="module")
def philips_seg(philips, tmp_path_factory):
    labels = sphere_and_box(len(philips), int(philips[0].Rows), int(philips[0].Columns))
    path = tmp_path_factory.mktemp("philips") / "seg.dcm"
    write_dicom_seg(path, philips, labels, SEGMENTS, **KW)
    return path, labels


@pytest.fixture(scope="module")
def siemens():
    if not SIEMENS.is_dir():
        pytest.skip(f"DICOM corpus case not found at {SIEMENS}")
    return load_series(SIEMENS)


# ------------------------------------------------------------------------------------------ Philips CT


@needs_corpus
def test_philips_series_is_28_sorted_slices_without_pixels(philips):
    assert len(philips) == 28
    assert all("PixelData" not in ds for ds in philips)


@needs_corpus
@needs_dciodvfy
def test_philips_seg_is_valid_dicom(philips_seg):
    _assert_valid(philips_seg[0])


@needs_corpus
def test_philips_seg_round_trips_with_pydicom_and_highdicom(philips, philips_seg):
    path, labels = philips_seg
    uids = [str(ds.SOPInstanceUID) for ds in philips]
    back, specs = read_dicom_seg(path, philips)
    assert back.dtype == np.uint8 and back.shape == labels.shape
    assert np.array_equal(back, labels)
    assert np.array_equal(_highdicom_labels(path, uids), labels)
    assert [s.label for s in specs] == [1, 2]


@needs_corpus
def test_philips_seg_references_and_omits_empty_frames(philips, philips_seg):
    path, labels = philips_seg
    seg = pydicom.dcmread(path)
    uids = [str(ds.SOPInstanceUID) for ds in philips]
    expected = sorted((lab, uids[k], None) for lab in (1, 2) for k in range(len(uids)) if (labels[k] == lab).any())
    assert sorted(_frame_refs(seg)) == expected
    assert int(seg.NumberOfFrames) == len(expected) < 2 * len(uids)
    # the SEG joins the study and lists the source series
    assert seg.StudyInstanceUID == philips[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == philips[0].FrameOfReferenceUID
    assert seg.SeriesInstanceUID != philips[0].SeriesInstanceUID
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == philips[0].SeriesInstanceUID
    assert {str(r.ReferencedSOPInstanceUID) for r in ref.ReferencedInstanceSequence} == set(uids)
    # plane positions are the source slices' own
    by_uid = {str(ds.SOPInstanceUID): ds for ds in philips}
    for item, (_, uid, _) in zip(seg.PerFrameFunctionalGroupsSequence, _frame_refs(seg)):
        np.testing.assert_allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in by_uid[uid].ImagePositionPatient], atol=1e-3)


@needs_corpus
def test_philips_seg_segment_attributes(philips_seg):
    seg = pydicom.dcmread(philips_seg[0], stop_before_pixels=True)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.SeriesDescription == KW["series_description"]
    assert seg.SeriesNumber == 9901
    assert seg.Manufacturer == "medclipsam" and seg.ManufacturerModelName == "medclipsam"
    assert "medclipsam 0.1.0" in " ".join(seg.SoftwareVersions) and seg.DeviceSerialNumber
    first, second = seg.SegmentSequence
    assert (first.SegmentNumber, first.SegmentLabel) == (1, "left lung")
    assert first.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "44029006"
    assert first.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert first.SegmentAlgorithmType == "AUTOMATIC"
    alg = first.SegmentationAlgorithmIdentificationSequence[0]
    assert (alg.AlgorithmName, alg.AlgorithmVersion) == ("medclipsam", "0.1.0")
    assert alg.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"      # Artificial Intelligence
    assert list(first.RecommendedDisplayCIELabValue) == list(rgb_to_dicom_lab((230, 25, 75)))
    assert (second.SegmentLabel, second.SegmentDescription) == ("liver tumor", "box")
    assert second.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert second.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert second.AnatomicRegionSequence[0].CodeValue == "10200004"
    assert dicom_lab_to_rgb(second.RecommendedDisplayCIELabValue) == (0, 0, 255)


@needs_corpus
def test_read_back_specs(philips, philips_seg):
    _, specs = read_dicom_seg(philips_seg[0], philips)
    left, tumour = specs
    assert (left.name, left.color, left.description) == ("left lung", (230, 25, 75), "left lung")
    assert left.concept.type_code.value == "44029006"
    assert tumour.color == (0, 0, 255) and tumour.concept.anatomic_region.value == "10200004"


@needs_corpus
def test_subset_of_slices_via_frames(philips, tmp_path):
    picks = [20, 3, 11]
    labels = np.zeros((3, int(philips[0].Rows), int(philips[0].Columns)), np.uint8)
    labels[0, 10:20, 10:20] = 1
    labels[2, 40:50, 40:50] = 1
    frames = [(k, None) for k in picks]
    path = write_dicom_seg(tmp_path / "subset.dcm", philips, labels, [SegmentSpec(1, "spleen")], frames=frames, **KW)
    seg = pydicom.dcmread(path, stop_before_pixels=True)
    assert sorted(uid for _, uid, _ in _frame_refs(seg)) == sorted([str(philips[20].SOPInstanceUID),
                                                                    str(philips[11].SOPInstanceUID)])
    back, _ = read_dicom_seg(path, philips, frames=frames)
    assert np.array_equal(back, labels)
    full, _ = read_dicom_seg(path, philips)
    assert full[20].sum() == labels[0].sum() and full[11].sum() == labels[2].sum() and full[3].sum() == 0


# ------------------------------------------------------------------------------------------ Siemens, blank UIDs


@needs_corpus
def test_blank_uid_series_gets_file_meta_references(siemens, tmp_path):
    assert len(siemens) == 20 and all(ds.SOPInstanceUID == "" for ds in siemens)
    labels = sphere_and_box(20, int(siemens[0].Rows), int(siemens[0].Columns))
    with pytest.warns(DicomSegWarning, match="MediaStorageSOPInstanceUID") as caught:
        path = write_dicom_seg(tmp_path / "seg.dcm", siemens, labels, SEGMENTS, **KW)
    message = " ".join(str(w.message) for w in caught)
    assert "StudyInstanceUID replaced by the generated UID" in message
    assert "SeriesInstanceUID replaced by the generated UID" in message
    meta_uids = [str(ds.file_meta.MediaStorageSOPInstanceUID) for ds in siemens]
    seg = pydicom.dcmread(path)
    refs = _frame_refs(seg)
    assert refs and {uid for _, uid, _ in refs} <= set(meta_uids)
    for ref in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence:
        assert ref.ReferencedSOPClassUID == siemens[0].file_meta.MediaStorageSOPClassUID
    assert pydicom.uid.UID(seg.StudyInstanceUID).is_valid and seg.StudyInstanceUID
    assert all(ds.SOPInstanceUID == "" and ds.StudyInstanceUID == "" for ds in siemens)   # inputs untouched
    # the generated study UID is deterministic
    with pytest.warns(DicomSegWarning):
        again = write_dicom_seg(tmp_path / "again.dcm", siemens, labels, SEGMENTS, **KW)
    assert pydicom.dcmread(again, stop_before_pixels=True).StudyInstanceUID == seg.StudyInstanceUID
    back, _ = read_dicom_seg(path, siemens)
    assert np.array_equal(back, labels)
    assert np.array_equal(_highdicom_labels(path, meta_uids), labels)
    # a SEG that is not written warns about nothing: the error says it all
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(EmptySegmentationError):
            write_dicom_seg(tmp_path / "empty.dcm", siemens, np.zeros_like(labels), SEGMENTS, **KW)
    assert not [w for w in caught if issubclass(w.category, DicomSegWarning)]
    assert not (tmp_path / "empty.dcm").exists()
    if dciodvfy_available():
        _assert_valid(path)


@needs_corpus
def test_source_without_any_sop_instance_uid_is_refused(siemens, tmp_path):
    broken = pydicom.dcmread(next(SIEMENS.glob("*.dcm")), stop_before_pixels=True)
    broken.file_meta.MediaStorageSOPInstanceUID = ""
    labels = np.ones((1, int(broken.Rows), int(broken.Columns)), np.uint8)
    with pytest.raises(InputError, match="no SOP Instance UID"):
        write_dicom_seg(tmp_path / "x.dcm", [broken], labels, SEGMENTS[:1], **KW)
    assert _files(tmp_path) == []


# ------------------------------------------------------------------------------------------ enhanced CT


@needs_corpus
def test_enhanced_multiframe_source(tmp_path):
    if not ENHANCED.is_file():
        pytest.skip(f"DICOM corpus case not found at {ENHANCED}")
    ds, frames = load_enhanced()
    assert int(ds.NumberOfFrames) == 2
    labels = np.zeros((2, int(ds.Rows), int(ds.Columns)), np.uint8)
    labels[0, 100:200, 150:260] = 1
    labels[1, 300:330, 40:90] = 2
    labels[1, 100:120, 150:170] = 1
    path = write_dicom_seg(tmp_path / "mf.dcm", [ds], labels, SEGMENTS, frames=frames, **KW)
    seg = pydicom.dcmread(path)
    refs = _frame_refs(seg)
    assert sorted(refs) == sorted([(1, ds.SOPInstanceUID, frames[0][1] + 1), (1, ds.SOPInstanceUID, frames[1][1] + 1),
                                   (2, ds.SOPInstanceUID, frames[1][1] + 1)])
    back, _ = read_dicom_seg(path, [ds], frames=frames)
    assert np.array_equal(back, labels)
    hd_seg = hd.seg.segread(str(path))
    by_frame = hd_seg.get_pixels_by_source_frame(ds.SOPInstanceUID, [f + 1 for _, f in frames],
                                                 combine_segments=True, relabel=False)
    assert np.array_equal(by_frame.astype(np.uint8), labels)
    # one frame only
    one = write_dicom_seg(tmp_path / "one.dcm", [ds], labels[1:], SEGMENTS, frames=frames[1:], **KW)
    assert {f for _, _, f in _frame_refs(pydicom.dcmread(one))} == {frames[1][1] + 1}
    if dciodvfy_available():
        _assert_valid(path)
        _assert_valid(one)


# ------------------------------------------------------------------------------------------ GE 3 slices vs dcmqi


@needs_corpus
def test_ge_three_slices_match_the_dcmqi_liver_seg(tmp_path):
    if not GE3.is_dir():
        pytest.skip(f"DICOM corpus case not found at {GE3}")
    images = load_series(GE3 / "image")
    dcmqi_labels, dcmqi_specs = read_dicom_seg(GE3 / "seg" / "liver_seg.dcm", images)
    nrrd = read_volume(GE3 / "label_nrrd" / "liver_seg.nrrd")
    # the sorted slices lie where the NRRD's slices lie, so the label maps must agree voxel for voxel
    np.testing.assert_allclose(nrrd.geometry.origin, [float(v) for v in images[0].ImagePositionPatient], atol=1e-3)
    assert np.array_equal(dcmqi_labels > 0, nrrd.array > 0) and dcmqi_labels.any()
    assert dcmqi_specs[0].name == "Liver"
    ours = write_dicom_seg(tmp_path / "liver.dcm", images, (nrrd.array > 0).astype(np.uint8),
                           [SegmentSpec(1, "liver")], **KW)
    theirs_ds = pydicom.dcmread(GE3 / "seg" / "liver_seg.dcm", stop_before_pixels=True)
    ours_ds = pydicom.dcmread(ours, stop_before_pixels=True)

    def positions(ds):
        return {uid: [round(float(v), 2) for v in item.PlanePositionSequence[0].ImagePositionPatient]
                for item, (_, uid, _) in zip(ds.PerFrameFunctionalGroupsSequence, _frame_refs(ds))}

    assert positions(ours_ds) == positions(theirs_ds)
    assert ours_ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    back, _ = read_dicom_seg(ours, images)
    assert np.array_equal(back, dcmqi_labels)
    if dciodvfy_available():
        _assert_valid(ours)


@needs_corpus
def test_overlapping_third_party_seg_reads_with_a_warning():
    if not GE3.is_dir():
        pytest.skip(f"DICOM corpus case not found at {GE3}")
    images = load_series(GE3 / "image")
    with pytest.warns(DicomSegWarning, match="overlap"):
        labels, specs = read_dicom_seg(GE3 / "seg" / "partial_overlaps_seg.dcm", images)
    assert len(specs) == 5 and set(np.unique(labels)) <= set(range(6)) and labels.max() > 1


# ------------------------------------------------------------------------------------------ failures


@needs_corpus
def test_failures_leave_no_file(philips, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    rows, cols = int(philips[0].Rows), int(philips[0].Columns)
    good = sphere_and_box(len(philips), rows, cols)
    with pytest.raises(LabelShapeError, match="28 slices|slices"):
        write_dicom_seg(out / "a.dcm", philips, good[:-1], SEGMENTS, **KW)
    with pytest.raises(ValueError, match="source images are 512×512"):
        write_dicom_seg(out / "b.dcm", philips, good[:, :-1], SEGMENTS, **KW)
    with pytest.raises(InputError, match=r"\[2\].*no SegmentSpec"):
        write_dicom_seg(out / "c.dcm", philips, good, SEGMENTS[:1], **KW)
    assert _files(out) == []

    def boom(*args, **kwargs):
        raise ValueError("highdicom says no (simulated)")

    with monkeypatch.context() as m:
        m.setattr(hd.seg, "Segmentation", boom)
        with pytest.raises(DicomSegError, match="simulated") as info:
            write_dicom_seg(out / "d.dcm", philips, good, SEGMENTS, **KW)
    assert isinstance(info.value, MedClipSamError)
    assert _files(out) == []

    def half_write(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"DICM half")
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(hd.seg.Segmentation, "save_as", half_write)
        with pytest.raises(DicomSegError, match="No space left"):
            write_dicom_seg(out / "e.dcm", philips, good, SEGMENTS, **KW)
    assert _files(out) == []

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DicomSegError, match="cannot write"):
        write_dicom_seg(blocker / "f.dcm", philips, good, SEGMENTS, **KW)


@needs_corpus
def test_empty_label_volume_writes_nothing(philips, tmp_path):
    empty = np.zeros((len(philips), int(philips[0].Rows), int(philips[0].Columns)), np.uint8)
    with pytest.raises(EmptySegmentationError, match="nothing was segmented; no SEG written|no SEG written"):
        write_dicom_seg(tmp_path / "empty.dcm", philips, empty, SEGMENTS, **KW)
    assert _files(tmp_path) == []


@needs_corpus
def test_absent_segment_is_dropped_with_a_warning(philips, tmp_path):
    labels = sphere_and_box(len(philips), int(philips[0].Rows), int(philips[0].Columns))
    labels[labels == 1] = 0
    with pytest.warns(DicomSegWarning, match="no voxel"):
        path = write_dicom_seg(tmp_path / "one.dcm", philips, labels, SEGMENTS, **KW)
    seg = pydicom.dcmread(path, stop_before_pixels=True)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver tumor"]
    back, _ = read_dicom_seg(path, philips)
    assert np.array_equal(back, (labels > 0).astype(np.uint8))     # renumbered 2 -> segment 1


@needs_corpus
def test_long_and_non_ascii_names(tmp_path):
    if not GE3.is_dir():
        pytest.skip(f"DICOM corpus case not found at {GE3}")
    images = load_series(GE3 / "image")
    labels = np.zeros((3, int(images[0].Rows), int(images[0].Columns)), np.uint8)
    labels[1, 5:9, 5:9] = 1
    name = "tumeur du foie — lésion hypodense " + "très " * 20
    path = write_dicom_seg(tmp_path / "utf8.dcm", images, labels, [SegmentSpec(1, name)], **KW)
    seg = pydicom.dcmread(path, stop_before_pixels=True)
    assert seg.SpecificCharacterSet == "ISO_IR 192"
    label = seg.SegmentSequence[0].SegmentLabel
    assert len(label.encode("utf-8")) <= 64 and label.startswith("tumeur du foie — lésion") and label.endswith("...")
    # French terms are not in the (English) vocabulary: the generic concept, the prompt as description
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"
    assert seg.SegmentSequence[0].SegmentDescription == label
    _, specs = read_dicom_seg(path, images)
    assert specs[0].name == label
    if dciodvfy_available():
        _assert_valid(path)


# ------------------------------------------------------------------------------------------ codes, colours, dciodvfy


@pytest.mark.parametrize("prompt, category, type_value, region, term", [
    ("left lung", "123037004", "44029006", None, "left lung"),
    ("Right Lung", "123037004", "3341006", None, "right lung"),
    ("the lungs", "123037004", "39607008", None, "lung"),
    ("a round lesion in the breast", "49755003", "52988006", "76752008", "lesion"),
    ("brain tumor", "49755003", "108369006", "12738006", "tumor"),
    ("breast tumour", "49755003", "108369006", "76752008", "tumour"),
    ("lung nodules", "49755003", "27925004", "39607008", "nodule"),
    ("liver", "123037004", "10200004", None, "liver"),
    ("kidney", "123037004", "64033007", None, "kidney"),
    ("spleen", "123037004", "78961009", None, "spleen"),
    ("heart", "123037004", "80891009", None, "heart"),
    ("mass", "49755003", "4147007", None, "mass"),
    ("cortical bone", "85756007", "272673000", None, "bone"),
    ("liverpool football club", "85756007", "85756007", None, None),
    ("", "85756007", "85756007", None, None),
])
def test_concept_for_prompt(prompt, category, type_value, region, term):
    c = concept_for_prompt(prompt)
    assert c.category_code.value == category and c.category_code.scheme_designator == "SCT"
    assert c.type_code.value == type_value
    assert (c.anatomic_region.value if c.anatomic_region is not None else None) == region
    assert c.matched_term == term


def test_laterality_modifier():
    c = concept_for_prompt("segment the right kidney")
    assert c.type_code.value == "64033007" and c.type_modifier.value == "24028007"
    assert concept_for_prompt("left kidney").type_modifier.value == "7771000"
    assert concept_for_prompt("kidney").type_modifier is None


def test_colour_conversion():
    assert rgb_to_dicom_lab((255, 255, 255)) == (65535, 32896, 32896)
    assert rgb_to_dicom_lab((0, 0, 0)) == (0, 32896, 32896)
    for rgb in [(230, 25, 75), (0, 0, 255), (60, 180, 75), (128, 128, 128), (255, 225, 25)]:
        assert np.abs(np.subtract(dicom_lab_to_rgb(rgb_to_dicom_lab(rgb)), rgb)).max() <= 1


def test_parse_dciodvfy_output():
    text = ("Segmentation\n"
            "Warning - </PatientName(0010,0010)[1]> - Value dubious for this VR\n"
            "Error - </SegmentSequence(0062,0002)[1]/SegmentLabel(0062,0005)> - Missing attribute\n")
    report = parse_dciodvfy(text)
    assert report.errors == ["Error - </SegmentSequence(0062,0002)[1]/SegmentLabel(0062,0005)> - Missing attribute"]
    assert len(report.warnings) == 1 and not report.ok and report.raw == text
    with pytest.raises(InputError, match="not found"):
        validate_with_dciodvfy("/nonexistent/seg.dcm")


@needs_dciodvfy
def test_dciodvfy_reports_errors(tmp_path):
    bad = pydicom.Dataset()
    bad.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    bad.SOPInstanceUID = pydicom.uid.generate_uid()
    bad.Modality = "SEG"
    bad.file_meta = pydicom.dataset.FileMetaDataset()
    bad.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    bad.file_meta.MediaStorageSOPClassUID = bad.SOPClassUID
    bad.file_meta.MediaStorageSOPInstanceUID = bad.SOPInstanceUID
    bad.is_little_endian, bad.is_implicit_VR = True, False
    path = tmp_path / "bad.dcm"
    bad.save_as(path, write_like_original=False)
    assert validate_with_dciodvfy(path).errors
