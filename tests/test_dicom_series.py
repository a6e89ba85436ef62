"""Reading DICOM series (medclipsam.dicom.series) on the real corpus and on damaged copies of it.

The corpus lives outside the project (shared/corpora/dicom); tests that need it skip when it is
absent. Damaged or rearranged copies are written to pytest's tmp_path only.
"""

from __future__ import annotations

import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medclipsam.dicom import DicomInputError, DicomSeries, SeriesSummary, read_series, scan_series
from medclipsam.errors import InputError
from medclipsam.volume import VolumeSource

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "dicom"
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"

PHILIPS_CT = "ct_series_philips_uncompressed"
GE_MR = "mr_series_ge_3d_t1_oblique_uncompressed"
SIEMENS_MR = "mr_series_siemens_t1_sag_uncompressed"
PHILIPS_MR = "mr_series_philips_classic_rescaleslope"
PHILIPS_MR_ENH = "mr_multiframe_enhanced_philips"
ENH_CT = "ct_multiframe_enhanced"
J2K_CT = "ct_series_siemens_j2k_blank_uids_with_reference_seg"
RT_CT = "rtstruct_referencing_ct_ge_phantom"
SEG_CT = "seg_referencing_ct_ge_3slice"
LOCALIZER = "ct_localizer_philips_surview"
US_RGB = "us_rgb_single_frame"
US_CINE = "us_multiframe_jpeg_ybr"
DX = "xray_dx_monochrome1"


def case(name: str) -> Path:
    p = CORPUS / name
    if not p.is_dir():
        pytest.skip(f"real DICOM corpus not present at {CORPUS}")
    return p


def dcm(path: Path, stop_before_pixels: bool = True) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels, force=True)


def copy_files(files, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        target = dest / f.name
        shutil.copyfile(f, target)
        out.append(target)
    return out


def sorted_by_normal(files) -> list[Path]:
    """Independent reference order: IPP · (row × column) ascending."""
    def key(p):
        ds = dcm(p)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        return float(np.dot(np.asarray(ds.ImagePositionPatient, float), np.cross(iop[:3], iop[3:])))
    return sorted(files, key=key)


def stored(path: Path) -> np.ndarray:
    """pydicom's own pixel array (the reference the reader is compared with)."""
    ds = dcm(path, stop_before_pixels=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.pixel_array


def physical(path: Path) -> np.ndarray:
    ds = dcm(path)
    return stored(path).astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


# --------------------------------------------------------------------------------------------- real series

def test_philips_ct_series_sorted_with_hu_and_geometry():
    folder = case(PHILIPS_CT)
    files = sorted(folder.glob("*.dcm"))
    with read_series(folder) as s:
        assert isinstance(s, DicomSeries) and isinstance(s, VolumeSource)
        assert len(s) == 28 == s.geometry.shape[0] == len(s.slices)
        assert s.geometry.shape == (28, 512, 512)
        assert s.modality == "CT" and not s.is_rgb and s.photometric == "MONOCHROME2"
        assert "STD BRAIN 5MM" in s.description and "28 slices" in s.description
        assert s.series_uid == dcm(files[0]).SeriesInstanceUID
        # order: ascending z (the normal of IOP (1,0,0,0,1,0) is +z), i.e. most inferior first
        reference = sorted_by_normal(files)
        assert [r.path.name for r in s.slices] == [p.name for p in reference]
        zs = [float(dcm(r.path).ImagePositionPatient[2]) for r in s.slices]
        assert all(b - a == pytest.approx(5.0, abs=1e-3) for a, b in zip(zs, zs[1:]))
        g = s.geometry
        assert g.regular and g.has_patient_geometry
        assert g.spacing == pytest.approx((0.451171875, 0.451171875, 5.0))
        assert g.origin == pytest.approx(tuple(float(v) for v in dcm(reference[0]).ImagePositionPatient))
        assert g.origin[2] == pytest.approx(min(zs))
        assert np.allclose(g.direction_matrix(), np.eye(3))
        assert s.window_hint == pytest.approx((0.0, 80.0))    # centre 40, width 80
        k = 14
        hu = s.read_slice(k)
        assert hu.dtype == np.float32 and hu.shape == (512, 512)
        assert np.array_equal(hu, physical(s.slices[k].path).astype(np.float32))
        assert hu.min() >= -1025 and hu.max() < 4000
        assert (hu < -900).mean() > 0.5                     # air around the phantom
        assert ((hu > -100) & (hu < 150)).mean() > 0.01     # water-like parts
        assert (hu > 300).mean() > 0.005                    # dense parts
        assert s.slices[k].frame is None and s.slices[k].sop_instance_uid == dcm(s.slices[k].path).SOPInstanceUID
        # nothing decoded is kept for single-frame files
        assert s._cache is None
        assert not any(isinstance(v, np.ndarray) for v in vars(s).values())


def test_ge_oblique_mr_sorted_along_normal_not_by_name():
    folder = case(GE_MR)
    files = sorted(folder.glob("*.dcm"))
    with read_series(folder) as s:
        assert len(s) == 130
        iop = np.asarray(dcm(files[0]).ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        keys = [float(np.dot(np.asarray(dcm(r.path).ImagePositionPatient, float), normal)) for r in s.slices]
        assert all(b > a for a, b in zip(keys, keys[1:]))
        assert [r.path.name for r in s.slices] != [p.name for p in files]     # names are not in slice order
        g = s.geometry
        assert g.regular
        assert g.spacing[2] == pytest.approx(1.2, abs=0.01)
        assert np.allclose(g.direction_matrix()[:, 2], normal / np.linalg.norm(normal), atol=1e-6)
        assert np.allclose(g.direction_matrix()[:, 0], iop[:3], atol=1e-6)
        assert abs(g.direction_matrix()[2, 2]) < 0.99                          # oblique
        sl = s.read_slice(64)
        assert np.array_equal(sl, physical(s.slices[64].path).astype(np.float32)) and sl.max() > 100


def test_siemens_sagittal_mr_gap_spacing():
    folder = case(SIEMENS_MR)
    with read_series(folder) as s:
        assert len(s) == 35 and s.modality == "MR"
        g = s.geometry
        assert g.regular and g.spacing[2] == pytest.approx(4.8, abs=1e-3)
        assert float(dcm(s.slices[0].path).SliceThickness) == pytest.approx(4.0)
        # IOP (0,1,0,0,0,-1): normal = (-1,0,0), so x decreases from slice to slice
        assert np.allclose(g.direction_matrix()[:, 2], (-1.0, 0.0, 0.0))
        xs = [float(dcm(r.path).ImagePositionPatient[0]) for r in s.slices]
        assert xs[0] == pytest.approx(81.6, abs=1e-3) and all(b < a for a, b in zip(xs, xs[1:]))


def test_philips_classic_rescale_matches_enhanced_twin():
    classic_dir, enhanced_dir = case(PHILIPS_MR), case(PHILIPS_MR_ENH)
    with read_series(classic_dir) as classic, read_series(enhanced_dir) as enhanced:
        assert len(classic) == len(enhanced) == 40
        assert classic.geometry.same_grid(enhanced.geometry, atol=1e-4)
        assert enhanced.geometry.regular and enhanced.geometry.spacing[2] == pytest.approx(4.0, abs=1e-3)
        assert {r.frame for r in enhanced.slices} == set(range(40))
        assert len({r.path for r in enhanced.slices}) == 1
        for k in (0, 17, 39):
            a, b = classic.read_slice(k), enhanced.read_slice(k)
            assert np.allclose(a, b, atol=1e-4)
            assert float(dcm(classic.slices[k].path).RescaleSlope) == pytest.approx(0.1)
            assert np.allclose(a, stored(classic.slices[k].path) * 0.1, atol=1e-4)
        assert 10 < float(classic.read_slice(20).max()) < 500   # slope applied (stored values are 10× larger)


def test_enhanced_ct_two_frames():
    folder = case(ENH_CT)
    with read_series(folder) as s:
        assert len(s) == 2 and [r.frame for r in s.slices] in ([0, 1], [1, 0])
        ds = dcm(s.slices[0].path)
        positions = [tuple(float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient)
                     for item in ds.PerFrameFunctionalGroupsSequence]
        first = positions[s.slices[0].frame]
        assert s.geometry.origin == pytest.approx(first)
        assert s.geometry.spacing[:2] == pytest.approx((0.388672, 0.388672))
        assert np.allclose(s.geometry.direction_matrix()[:, 0], (-1, 0, 0))
        frame = stored(s.slices[0].path)[s.slices[0].frame]
        assert np.array_equal(s.read_slice(0), (frame.astype(np.float64) - 1024).astype(np.float32))
        assert s.window_hint == pytest.approx((49 - 51, 49 + 51))


def test_j2k_series_with_blank_uids():
    folder = case(J2K_CT)
    with read_series(folder) as s:
        assert len(s) == 20 and s.series_uid == "" and s.study_uid == ""
        assert any("blank SeriesInstanceUID" in n for n in s.notes)
        assert any("SOPInstanceUID" in n and "file meta" in n for n in s.notes)
        assert any("not DICOM" in n and "labels.json" in n for n in s.notes)
        for ref in s.slices:
            meta_uid = dcm(ref.path).file_meta.MediaStorageSOPInstanceUID
            assert ref.sop_instance_uid == meta_uid and ref.sop_instance_uid
            assert ref.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
        assert s.geometry.origin[2] == pytest.approx(-804.5)        # most inferior first
        assert s.geometry.spacing[2] == pytest.approx(2.0, abs=1e-3) and s.geometry.regular
        hu = s.read_slice(10)
        assert hu.shape == (512, 512) and hu.min() >= -1025 and hu.max() > 200
        assert (hu < -900).mean() > 0.1 and ((hu > -100) & (hu < 100)).mean() > 0.05
        datasets = s.source_datasets()
        assert len(datasets) == 20
        assert [d.SOPInstanceUID for d in datasets] == [r.sop_instance_uid for r in s.slices]
        assert all(d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and "PixelData" not in d for d in datasets)
        assert any("filled" in n for n in s.notes)


def test_rtstruct_and_seg_are_skipped_with_notes():
    with read_series(case(RT_CT)) as s:
        assert len(s) == 2 and s.geometry.spacing[2] == pytest.approx(5.0)
        assert any("RTSTRUCT" in n and "1 non-image" in n for n in s.notes)
    with read_series(case(SEG_CT)) as s:
        assert len(s) == 3 and s.geometry.spacing[2] == pytest.approx(1.0, abs=1e-3)
        assert any("2 SEG" in n for n in s.notes)
        assert any("liver_seg.nrrd" in n for n in s.notes)
        # implicit VR LE, signed: values match pydicom's
        assert np.array_equal(s.read_slice(1), physical(s.slices[1].path).astype(np.float32))


def test_localizer_alone_is_one_slice():
    with read_series(case(LOCALIZER)) as s:
        assert len(s) == 1 and s.geometry.shape == (1, 256, 512)
        assert s.geometry.has_patient_geometry
        assert s.geometry.spacing == pytest.approx((0.9765625, 0.9765625, 0.625))
        assert s.geometry.origin == pytest.approx((0.0, -124.8, 916.5))
        assert s.read_slice(0).shape == (256, 512)


def test_localizer_in_axial_series_is_left_out(tmp_path):
    files = copy_files(sorted(case(SEG_CT).glob("image/*.dcm")), tmp_path)
    series_uid = dcm(files[0]).SeriesInstanceUID
    loc = dcm(CORPUS / LOCALIZER / "I10.dcm", stop_before_pixels=False)
    loc.SeriesInstanceUID = series_uid
    loc.save_as(str(tmp_path / "scout.dcm"))
    with read_series(tmp_path) as s:
        assert len(s) == 3 and all(r.path.name != "scout.dcm" for r in s.slices)
        assert any("localizer" in n.lower() for n in s.notes)


def test_us_rgb_single_frame_without_patient_geometry():
    with read_series(case(US_RGB)) as s:
        assert s.is_rgb and len(s) == 1 and s.modality == "US"
        assert not s.geometry.has_patient_geometry and s.geometry.shape == (1, 480, 640)
        assert s.window_hint is None
        rgb = s.read_slice(0)
        assert rgb.dtype == np.uint8 and rgb.shape == (480, 640, 3)
        assert np.array_equal(rgb, stored(s.slices[0].path))
        assert any("patient geometry" in n for n in s.notes)


def test_dx_monochrome1_is_exposed_not_inverted():
    with read_series(case(DX)) as s:
        assert s.photometric == "MONOCHROME1" and s.modality == "DX" and not s.is_rgb
        assert not s.geometry.has_patient_geometry
        assert s.geometry.spacing[:2] == pytest.approx((1.2012, 1.2), abs=1e-4)
        assert np.array_equal(s.read_slice(0), stored(s.slices[0].path).astype(np.float32))  # as stored, not inverted
        assert s.window_hint == pytest.approx((0.0, 256.0))


def test_us_cine_multiframe_is_refused():
    with pytest.raises(DicomInputError, match="time points") as e:
        read_series(case(US_CINE))
    assert "30 frames" in str(e.value) and "frame" in str(e.value).lower()


# --------------------------------------------------------------------------------------------- inputs

def test_zip_input_same_as_folder_and_cleaned_up(tmp_path):
    folder = case(PHILIPS_MR)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.glob("*.dcm")):
            zf.write(f, f"export/{f.name}")
        zf.writestr("export/README.txt", "not DICOM")
    with read_series(folder) as ref:
        expected_geometry, expected = ref.geometry, ref.read_slice(7)
    s = read_series(archive)
    try:
        assert s.geometry.same_grid(expected_geometry, atol=1e-9) and len(s) == 40
        assert np.array_equal(s.read_slice(7), expected)
        assert any("README.txt" in n for n in s.notes)
        temp_file = s.slices[0].path
        assert temp_file.is_file() and not str(temp_file).startswith(str(tmp_path))
    finally:
        s.close()
    assert not temp_file.exists() and not temp_file.parent.parent.exists()
    with pytest.raises(DicomInputError, match="closed"):
        s.read_slice(0)


def test_read_series_decodes_nothing_and_multiframe_is_decoded_once(monkeypatch):
    import medclipsam.dicom.series as series_module

    def boom(self):
        raise AssertionError("pixel data decoded while reading headers")

    with monkeypatch.context() as m:
        m.setattr(pydicom.dataset.Dataset, "pixel_array", property(boom))
        s = read_series(case(PHILIPS_MR_ENH))
        assert len(scan_series(case(PHILIPS_CT))) == 1
    calls = []
    real = series_module.decode_file
    monkeypatch.setattr(series_module, "decode_file", lambda *a: calls.append(a[0]) or real(*a))
    values = [float(s.read_slice(k).sum()) for k in range(len(s))]
    assert len(calls) == 1 and len(set(values)) > 30          # one decode for 40 frames, distinct slices
    sl = s.read_slice(3)
    sl[:] = -1                                                 # callers get a copy, not the cache
    assert float(s.read_slice(3).sum()) == values[3]
    s.close()
    assert s._cache is None


def test_zip_member_names_cannot_escape(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(case(SEG_CT).glob("image/*.dcm")):
            zf.write(f, f"../../{f.name}")
        zf.writestr("/abs/evil.txt", "x")
    with read_series(archive) as s:
        assert len(s) == 3
        assert all("medclipsam-dicom-" in str(r.path) for r in s.slices)
    assert not (tmp_path.parent / "01.dcm").exists() and not Path("/abs/evil.txt").exists()
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DicomInputError, match="zip"):
        read_series(tmp_path / "bad.zip")


def test_file_list_input():
    files = sorted(case(SEG_CT).glob("image/*.dcm"))
    with read_series([str(f) for f in files[:2]]) as s:
        assert len(s) == 2 and {r.path for r in s.slices} == set(files[:2])


def test_two_series_listed_and_selectable(tmp_path):
    a = copy_files(sorted(case(SEG_CT).glob("image/*.dcm")), tmp_path / "a")
    b = copy_files(sorted(case(RT_CT).glob("image/*.dcm")), tmp_path / "b")
    uid_a, uid_b = dcm(a[0]).SeriesInstanceUID, dcm(b[0]).SeriesInstanceUID
    with pytest.raises(DicomInputError) as e:
        read_series(tmp_path)
    msg = str(e.value)
    assert uid_a in msg and uid_b in msg and "--series" in msg and "2 image series" in msg
    assert "PHANTOM_EXAMPLE" in msg and "3 image(s)" in msg and "2 image(s)" in msg
    summaries = scan_series(tmp_path)
    assert all(isinstance(x, SeriesSummary) for x in summaries)
    assert {(x.series_uid, x.num_images, x.modality) for x in summaries} == {(uid_a, 3, "CT"), (uid_b, 2, "CT")}
    with read_series(tmp_path, series_uid=uid_b) as s:
        assert len(s) == 2 and s.series_uid == uid_b
        assert all(r.path.parent.name == "b" for r in s.slices)
        assert any("other image series" in n for n in s.notes)
    with pytest.raises(DicomInputError, match="not in") as e:
        read_series(tmp_path, series_uid="1.2.3.4")
    assert uid_a in str(e.value) and uid_b in str(e.value)


def test_scan_corpus_root_and_twin_exports_are_duplicates():
    root = case(PHILIPS_MR).parent
    summaries = {x.series_uid: x for x in scan_series(root)}
    assert "" in summaries and summaries[""].num_images == 20
    twin = dcm(next(case(PHILIPS_MR).glob("*.dcm"))).SeriesInstanceUID
    assert summaries[twin].num_images == 80            # 40 classic files + 40 frames of the enhanced file
    assert not any(x.modality in ("SEG", "RTSTRUCT") for x in summaries.values())
    # classic and enhanced exports of one acquisition share the SeriesInstanceUID: refused, not mixed
    with pytest.raises(DicomInputError, match="several images at one position"):
        read_series(root, series_uid=twin)
    with read_series(root, series_uid="") as s:                 # "" picks the blank-UID series
        assert len(s) == 20 and s.modality == "CT"
        assert any("other image series" in n for n in s.notes)


def test_empty_and_non_dicom_folders(tmp_path):
    with pytest.raises(DicomInputError, match="empty"):
        read_series(tmp_path)
    (tmp_path / "README.txt").write_text("hello")
    with pytest.raises(DicomInputError, match="no DICOM images") as e:
        read_series(tmp_path)
    assert "README.txt" in str(e.value)
    with pytest.raises(InputError, match="not found"):
        read_series(tmp_path / "missing")


def test_files_without_suffix_and_bare_datasets(tmp_path):
    for i, f in enumerate(sorted(case(SEG_CT).glob("image/*.dcm"))):
        shutil.copyfile(f, tmp_path / f"IM{i:04d}")
    with read_series(tmp_path) as s:
        assert len(s) == 3 and all(r.path.suffix == "" for r in s.slices)
    # a data set written without preamble and file meta (as some old exports are), no suffix
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = dcm(PYDICOM_FILES / "MR_small.dcm", stop_before_pixels=False)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    bare = tmp_path / "bare" / "IMAGE1"
    bare.parent.mkdir()
    bare.write_bytes(buf.getvalue())
    assert bare.read_bytes()[128:132] != b"DICM"
    with read_series(bare.parent) as s, read_series(PYDICOM_FILES / "MR_small.dcm") as ref:
        assert len(s) == 1 and np.array_equal(s.read_slice(0), ref.read_slice(0))


def test_dicomdir_is_ignored(tmp_path):
    copy_files(sorted(case(SEG_CT).glob("image/*.dcm")), tmp_path)
    shutil.copyfile(PYDICOM_FILES / "dicomdirtests" / "DICOMDIR", tmp_path / "DICOMDIR")
    with read_series(tmp_path) as s:
        assert len(s) == 3 and any("DICOMDIR" in n for n in s.notes)


# --------------------------------------------------------------------------------------------- damage

def test_random_bytes_with_dcm_name_is_an_error(tmp_path):
    copy_files(sorted(case(SEG_CT).glob("image/*.dcm")), tmp_path)
    (tmp_path / "junk.dcm").write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(DicomInputError, match="junk.dcm"):
        read_series(tmp_path)


@pytest.mark.parametrize("offset", [132, 600, 1000])
def test_mangled_header_is_an_error(tmp_path, offset):
    files = copy_files(sorted(case(PHILIPS_CT).glob("*.dcm"))[:3], tmp_path)
    data = bytearray(files[1].read_bytes())
    data[offset:offset + 200] = np.random.default_rng(offset).integers(0, 256, 200, dtype=np.uint8).tobytes()
    files[1].write_bytes(bytes(data))
    with pytest.raises(DicomInputError) as e:
        read_series(tmp_path)
    assert files[1].name in str(e.value) and ("damaged" in str(e.value) or "not a readable" in str(e.value))


def test_truncated_uncompressed_pixel_data(tmp_path):
    files = copy_files(sorted(case(PHILIPS_CT).glob("*.dcm"))[:3], tmp_path)
    files[2].write_bytes(files[2].read_bytes()[:-1000])
    with pytest.raises(DicomInputError, match="truncated") as e:
        read_series(tmp_path)
    assert files[2].name in str(e.value) and "re-transfer" in str(e.value)


def test_truncated_compressed_pixel_data(tmp_path):
    files = copy_files(sorted(case(J2K_CT).glob("image/*.dcm"))[:3], tmp_path)
    files[0].write_bytes(files[0].read_bytes()[:-1000])
    with pytest.raises(DicomInputError, match="truncated") as e:
        read_series(tmp_path)
    assert files[0].name in str(e.value)


def test_pydicom_truncated_file(tmp_path):
    shutil.copyfile(PYDICOM_FILES / "MR_truncated.dcm", tmp_path / "MR_truncated.dcm")
    with pytest.raises(DicomInputError, match="truncated") as e:
        read_series(tmp_path)
    assert "MR_truncated.dcm" in str(e.value) and "8192" in str(e.value)


def test_missing_position_names_file_and_attribute(tmp_path):
    files = copy_files(sorted(case(SEG_CT).glob("image/*.dcm")), tmp_path)
    ds = dcm(files[1], stop_before_pixels=False)
    del ds.ImagePositionPatient
    ds.save_as(str(files[1]))
    with pytest.raises(DicomInputError, match="ImagePositionPatient") as e:
        read_series(tmp_path)
    assert files[1].name in str(e.value)


def test_mixed_orientations_refused(tmp_path):
    files = copy_files(sorted(case(SEG_CT).glob("image/*.dcm")), tmp_path)
    ds = dcm(files[2], stop_before_pixels=False)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(str(files[2]))
    with pytest.raises(DicomInputError, match="mixed orientations") as e:
        read_series(tmp_path)
    assert files[2].name in str(e.value)


def test_duplicate_positions_refused_but_identical_copies_read_once(tmp_path):
    files = copy_files(sorted(case(SEG_CT).glob("image/*.dcm")), tmp_path)
    shutil.copyfile(files[0], tmp_path / "copy_of_first.dcm")      # the same SOP instance twice
    with read_series(tmp_path) as s:
        assert len(s) == 3 and any("only once" in n for n in s.notes)
    ds = dcm(files[0], stop_before_pixels=False)                     # a second image at that position
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.EchoNumbers = 2
    ds.save_as(str(tmp_path / "copy_of_first.dcm"))
    with pytest.raises(DicomInputError, match="several images at one position") as e:
        read_series(tmp_path)
    assert "2 of 4 slices" in str(e.value)


def test_differing_size_refused(tmp_path):
    files = copy_files(sorted(case(SEG_CT).glob("image/*.dcm")), tmp_path)
    ds = dcm(files[1], stop_before_pixels=False)
    ds.PixelSpacing = [0.5, 0.5]
    ds.save_as(str(files[1]))
    with pytest.raises(DicomInputError, match="PixelSpacing"):
        read_series(tmp_path)


def test_missing_slice_reads_irregular_with_note(tmp_path):
    files = sorted_by_normal(sorted(case(PHILIPS_MR).glob("*.dcm")))
    copy_files(files[:20] + files[21:], tmp_path)
    with read_series(tmp_path) as s:
        assert len(s) == 39
        assert not s.geometry.regular and "missing slices" in s.geometry.irregular_reason
        assert s.geometry.slice_positions is not None and len(s.geometry.slice_positions) == 39
        assert any("missing slices" in n and "NIfTI" in n for n in s.notes)
        assert s.read_slice(20).shape == (96, 96)


def test_missing_decoder_is_reported_before_decoding(monkeypatch):
    folder = case(J2K_CT)
    import pydicom.config
    from pydicom.pixel_data_handlers import numpy_handler

    monkeypatch.setattr(pydicom.config, "pixel_data_handlers", [numpy_handler])
    with pytest.raises(DicomInputError) as e:
        read_series(folder)
    msg = str(e.value)
    assert "JPEG 2000" in msg and "1.2.840.10008.1.2.4.90" in msg
    assert "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg" in msg


def test_decode_failure_in_read_slice_names_file(tmp_path):
    files = copy_files(sorted(case(SEG_CT).glob("image/*.dcm")), tmp_path)
    s = read_series(tmp_path)
    victim = s.slices[1].path
    victim.write_bytes(b"gone")
    with pytest.raises(DicomInputError) as e:
        s.read_slice(1)
    assert victim.name in str(e.value)
    assert s.read_slice(0).shape == (512, 512)
    s.close()
    assert files[0].is_file()     # close() removes temporary folders only, never the input


# --------------------------------------------------------------------------------------------- pydicom files

def test_pydicom_ct_small_one_slice(tmp_path):
    shutil.copyfile(PYDICOM_FILES / "CT_small.dcm", tmp_path / "CT_small.dcm")
    with read_series(tmp_path / "CT_small.dcm") as s:
        assert len(s) == 1 and s.modality == "CT" and s.geometry.has_patient_geometry
        assert s.geometry.spacing == pytest.approx((0.661468, 0.661468, 5.0))
        assert s.geometry.origin == pytest.approx((-158.135803, -179.035797, -75.699997))
        assert np.array_equal(s.read_slice(0), physical(PYDICOM_FILES / "CT_small.dcm").astype(np.float32))


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_pydicom_compressed_equal_uncompressed(name):
    with read_series(PYDICOM_FILES / "MR_small.dcm") as ref, read_series(PYDICOM_FILES / name) as s:
        expected = ref.read_slice(0)
        assert s.geometry.same_grid(ref.geometry)
        assert np.array_equal(s.read_slice(0), expected) and expected.std() > 10
