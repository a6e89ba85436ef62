"""``medclipsam segment-series`` end to end: outputs in the source geometry, and every kind of bad
input stopping with a clear message, a non-zero exit and no output file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medclipsam.cli import main
from medclipsam.phantoms.synthetic_ct import write_synthetic_ct

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "dicom"
TINY = ["--clip", "random:tiny", "--sam", "tiny:random", "--set", "m2ib.layer=2", "--set", "m2ib.steps=3",
        "--set", "m2ib.samples=2", "--quiet"]
LAST_LINE = re.compile(r"^slices=(\d+) processed=(\d+) gated=(\d+) seconds=(\d+\.\d+)$")


def corpus(case: str) -> Path:
    path = CORPUS / case
    if not path.exists():
        pytest.skip(f"real DICOM corpus not present at {path}")
    return path


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    return write_synthetic_ct(tmp_path_factory.mktemp("ct") / "series", slices=10, size=64).folder


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["segment-series", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def last_line(stdout: str) -> tuple[int, int, int]:
    m = LAST_LINE.match(stdout.strip().splitlines()[-1])
    assert m, f"last line is not 'slices=.. processed=.. gated=.. seconds=..': {stdout!r}"
    return int(m[1]), int(m[2]), int(m[3])


def sitk_geometry(path: Path):
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    return img, sitk.GetArrayFromImage(img)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_label_volume_in_the_source_geometry(series, tmp_path, capsys, suffix):
    out = tmp_path / f"labels{suffix}"
    code, stdout, err = run(capsys, str(series), "--prompt", "lesion", "--out", str(out), "--no-gate",
                            "--report", str(tmp_path / "report.json"), *TINY)
    assert code == 0, err
    assert last_line(stdout) == (10, 10, 0)
    assert "RANDOM WEIGHTS" in err
    img, arr = sitk_geometry(out)
    # expected geometry straight from the DICOM tags (independent of our reader)
    first = pydicom.dcmread(sorted(series.glob("*.dcm"))[0], stop_before_pixels=True)
    assert img.GetSize() == (64, 64, 10) and arr.dtype == np.uint8
    assert np.allclose(img.GetSpacing(), (0.8, 0.8, 2.5))
    assert np.allclose(img.GetOrigin(), [float(v) for v in first.ImagePositionPatient], atol=1e-4)
    assert np.allclose(img.GetDirection(), np.eye(3).ravel())
    assert arr.any() and set(np.unique(arr)) <= {0, 1}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["volume_config"]["propagation"]["enabled"] is False       # the settings the run used (off: no card)
    assert "propagation" in report["prompts"][0]


def test_geometry_matches_simpleitk_on_a_real_ct_series(tmp_path, capsys):
    import SimpleITK as sitk

    folder = corpus("ct_series_philips_uncompressed")
    out = tmp_path / "ct.nii.gz"
    code, stdout, err = run(capsys, str(folder), "--prompt", "brain", "--slices", "12:15",
                            "--presence-threshold", "-1", "--out", str(out), *TINY)
    assert code == 0, err
    assert last_line(stdout) == (3, 3, 0)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    img, arr = sitk_geometry(out)
    assert img.GetSize() == ref.GetSize()
    assert np.allclose(img.GetSpacing(), ref.GetSpacing(), atol=1e-4)
    assert np.allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-3)
    assert np.allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6)
    assert not arr[:12].any() and not arr[15:].any()          # outside --slices stays empty


def test_multi_label_dicom_seg(series, tmp_path, capsys):
    from medclipsam.dicom.validate import dciodvfy_available, validate_with_dciodvfy

    out = tmp_path / "seg.dcm"
    code, stdout, err = run(capsys, str(series), "--prompt", "lesion", "--prompt", "left lung", "--out", str(out),
                            "--no-gate", *TINY)
    assert code == 0, err
    assert last_line(stdout)[0] == 10
    seg = pydicom.dcmread(out)
    assert seg.Modality == "SEG"
    refs = {s.SOPInstanceUID for s in (pydicom.dcmread(f, stop_before_pixels=True) for f in series.glob("*.dcm"))}
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced <= refs and referenced
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    # random models: the first prompt may claim every voxel; a prompt left with none is named, not hidden
    assert labels[0] == "lesion" and (labels[1:] == ["left lung"] or "'left lung') have no voxel" in err)
    if len(labels) == 2:
        assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "44029006"
    assert seg.SeriesDescription == "medclipsam v2 tiny + SAM tiny RANDOM WEIGHTS"
    if dciodvfy_available():
        report = validate_with_dciodvfy(out)
        assert not report.errors, report.raw


def test_list_series_and_choice(series, tmp_path, capsys):
    two = tmp_path / "two"
    shutil.copytree(series, two / "a")
    other = write_synthetic_ct(two / "b", slices=4, size=64, seed=7)
    code, stdout, _ = run(capsys, str(two), "--list-series")
    assert code == 0 and other.series_uid in stdout and stdout.count("images") == 2
    out = tmp_path / "x.nii.gz"
    code, _, err = run(capsys, str(two), "--prompt", "lesion", "--out", str(out), *TINY)
    assert code == 2 and other.series_uid in err and "--series" in err and not out.exists()
    code, stdout, err = run(capsys, str(two), "--series", other.series_uid, "--prompt", "lesion", "--out", str(out),
                            "--no-gate", *TINY)
    assert code == 0, err
    assert last_line(stdout)[0] == 4


# ---------------------------------------------------------------- bad input: exit 2, clear message, no output
def _broken_copy(series: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "broken"
    shutil.copytree(series, dst)
    return dst


def _expect_refusal(capsys, tmp_path, args, *words, suffix=".nii.gz"):
    out = tmp_path / "out" / f"labels{suffix}"
    code, stdout, err = run(capsys, *args, "--out", str(out), *TINY)
    assert code == 2, (stdout, err)
    assert err.startswith("error: ") and "Traceback" not in err
    for w in words:
        assert w.lower() in err.lower(), err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_corrupt_file(series, tmp_path, capsys):
    d = _broken_copy(series, tmp_path)
    (d / "slice_9999.dcm").write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(0).bytes(300))
    _expect_refusal(capsys, tmp_path, [str(d), "--prompt", "lesion"], "slice_9999.dcm")


def test_truncated_pixel_data(series, tmp_path, capsys):
    d = _broken_copy(series, tmp_path)
    f = d / "slice_0004.dcm"
    f.write_bytes(f.read_bytes()[:-1000])
    _expect_refusal(capsys, tmp_path, [str(d), "--prompt", "lesion"], "slice_0004.dcm", "truncated")


def test_folder_without_images(tmp_path, capsys):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "notes.txt").write_text("no images here")
    _expect_refusal(capsys, tmp_path, [str(d), "--prompt", "lesion"], "no")


def test_missing_image_position(series, tmp_path, capsys):
    d = _broken_copy(series, tmp_path)
    f = d / "slice_0003.dcm"
    ds = pydicom.dcmread(f)
    del ds.ImagePositionPatient
    ds.save_as(f)
    _expect_refusal(capsys, tmp_path, [str(d), "--prompt", "lesion"], "ImagePositionPatient", "slice_0003.dcm")


def test_unsupported_transfer_syntax_without_decoder(tmp_path, capsys, monkeypatch):
    from pydicom.pixel_data_handlers import numpy_handler

    folder = corpus("ct_series_siemens_j2k_blank_uids_with_reference_seg")
    monkeypatch.setattr(pydicom.config, "pixel_data_handlers", [numpy_handler])
    _expect_refusal(capsys, tmp_path, [str(folder), "--prompt", "lesion"], "JPEG 2000", "pip install")


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt(series, tmp_path, capsys, prompt):
    _expect_refusal(capsys, tmp_path, [str(series), "--prompt", prompt], "prompt", "empty")


def test_output_that_cannot_be_written(series, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = blocker / "labels.nii.gz"
    code, _, err = run(capsys, str(series), "--prompt", "lesion", "--out", str(out), *TINY)
    assert code == 2 and "cannot write" in err and str(blocker) in err
    code, _, err = run(capsys, str(series), "--prompt", "lesion", "--out", str(tmp_path / "labels.png"), *TINY)
    assert code == 2 and ".nii.gz" in err


def test_existing_output_is_kept_without_overwrite(series, tmp_path, capsys):
    out = tmp_path / "labels.nii.gz"
    out.write_bytes(b"previous result")
    code, _, err = run(capsys, str(series), "--prompt", "lesion", "--out", str(out), *TINY)
    assert code == 2 and "--overwrite" in err and out.read_bytes() == b"previous result"


def test_missing_slice_refuses_nifti_but_writes_seg(series, tmp_path, capsys):
    d = _broken_copy(series, tmp_path)
    (d / "slice_0005.dcm").unlink()
    _expect_refusal(capsys, tmp_path, [str(d), "--prompt", "lesion"], "missing slices", ".dcm")
    out = tmp_path / "seg.dcm"
    code, stdout, err = run(capsys, str(d), "--prompt", "lesion", "--out", str(out), "--no-gate", *TINY)
    assert code == 0, err
    assert last_line(stdout)[0] == 9 and "missing slices" in err


def test_seg_needs_a_dicom_source(tmp_path, capsys):
    from medclipsam.volume import Geometry
    from medclipsam.volume.itk_io import write_label

    vol = tmp_path / "vol.nii.gz"
    write_label(vol, np.zeros((3, 32, 32), np.uint8), Geometry((3, 32, 32)))
    _expect_refusal(capsys, tmp_path, [str(vol), "--prompt", "lesion"], "DICOM SEG", "DICOM series", suffix=".dcm")


@pytest.mark.parametrize("case", ["mr_multiframe_enhanced_philips", "ct_multiframe_enhanced", "us_rgb_single_frame",
                                  "xray_dx_monochrome1", "ct_series_siemens_j2k_blank_uids_with_reference_seg",
                                  "mr_series_siemens_t1_sag_uncompressed"])
def test_dicom_seg_round_trip_on_real_series(case, tmp_path, tiny_clip, tiny_sam):
    """Every SEG we write passes dciodvfy and re-reads (highdicom and pydicom) into the same mask."""
    import highdicom as hd

    from medclipsam.config import PipelineConfig
    from medclipsam.dicom.seg import read_dicom_seg
    from medclipsam.dicom.validate import dciodvfy_available, validate_with_dciodvfy
    from medclipsam.pipeline import Pipeline
    from medclipsam.volume.engine import VolumeConfig, VolumePipeline
    from medclipsam.volume.inputs import open_volume
    from medclipsam.volume.outputs import slice_frames, write_result
    from medclipsam.volume.presence import PresenceConfig

    folder = corpus(case)
    pipeline = Pipeline(tiny_clip, tiny_sam, PipelineConfig.from_preset("v2", {"m2ib.layer": "2", "m2ib.steps": "2",
                                                                               "m2ib.samples": "2"}))
    src = open_volume(folder)
    try:
        result = VolumePipeline(pipeline, VolumeConfig(presence=PresenceConfig(enabled=False))).run(src, ["lesion"])
        assert result.labels.any(), "random SAM paints something on every processed slice"
        out, _notes = write_result(tmp_path / "seg.dcm", result, src, series_description="tiny random",
                                    algorithm_version="t")
        datasets, frames = slice_frames(src)
        back, segments = read_dicom_seg(out, datasets, frames=frames)
        assert np.array_equal(back, result.labels)
        assert [s.name for s in segments] == ["lesion"]
        seg = hd.seg.segread(str(out))
        assert seg.number_of_segments == 1
        # highdicom: the frames of segment 1 reference exactly the slices that have voxels
        referenced = {str(item.ReferencedSOPInstanceUID) for fr in seg.PerFrameFunctionalGroupsSequence
                      for d in fr.DerivationImageSequence for item in d.SourceImageSequence}
        with_voxels = {src.slices[k].sop_instance_uid for k in range(len(src)) if result.labels[k].any()}
        assert referenced == with_voxels
    finally:
        src.close()
    if dciodvfy_available():
        report = validate_with_dciodvfy(out)
        assert not report.errors, report.raw


def test_sample_series_matches_its_generator(tmp_path):
    """sample-data/dicom is what make_sample_series.py writes (no stale or hand-edited data)."""
    import importlib.util

    from medclipsam.volume.itk_io import read_volume

    root = Path(__file__).resolve().parents[1] / "sample-data"
    spec = importlib.util.spec_from_file_location("make_sample_series", root / "make_sample_series.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make(tmp_path)
    shipped = sorted((root / "dicom" / "phantom_ct").glob("*.dcm"))
    assert len(shipped) == 24
    for f in shipped:
        assert f.read_bytes() == (tmp_path / "phantom_ct" / f.name).read_bytes(), f.name
    for name in ("phantom_ct_lesion.nii.gz", "phantom_ct_lungs.nii.gz"):
        a, b = read_volume(root / "dicom" / name), read_volume(tmp_path / name)
        assert np.array_equal(a.array, b.array) and a.geometry.same_grid(b.geometry) and a.array.any()


def test_ground_truth_lies_on_the_sample_series_grid():
    from medclipsam.volume.inputs import open_volume
    from medclipsam.volume.itk_io import read_volume

    root = Path(__file__).resolve().parents[1] / "sample-data" / "dicom"
    src = open_volume(root / "phantom_ct")
    truth = read_volume(root / "phantom_ct_lesion.nii.gz")
    assert src.geometry.same_grid(truth.geometry)
    # the lesion is brighter (+80 HU) than the water around it, on the grid the truth says
    k = int(np.argmax(truth.array.reshape(len(src), -1).sum(axis=1)))
    hu = src.read_slice(k)
    lesion = truth.array[k] > 0
    assert hu[lesion].mean() > hu[~lesion & (hu > -500)].mean() + 50


def test_target_absent_everywhere(series, tmp_path, capsys):
    """A threshold no slice reaches: an empty label volume (NIfTI), and no SEG (it cannot be empty)."""
    out = tmp_path / "labels.nii.gz"
    code, stdout, err = run(capsys, str(series), "--prompt", "lesion", "--presence-threshold", "1.0",
                            "--out", str(out), *TINY)
    assert code == 0, err
    assert last_line(stdout) == (10, 0, 10)
    _img, arr = sitk_geometry(out)
    assert arr.shape == (10, 64, 64) and not arr.any()
    seg = tmp_path / "seg.dcm"
    code, stdout, err = run(capsys, str(series), "--prompt", "lesion", "--presence-threshold", "1.0",
                            "--out", str(seg), *TINY)
    assert code == 2 and "no SEG written" in err and "10 of 10 slices" in err and not seg.exists()
    assert last_line(stdout) == (10, 0, 10)


def test_unknown_window_fails_before_loading_models(series, tmp_path, capsys):
    code, _, err = run(capsys, str(series), "--prompt", "lesion", "--window", "ct-foot",
                       "--out", str(tmp_path / "x.nii.gz"), "--clip", "local-dir:/nonexistent",
                       "--sam", "vit_h:/no.pth")
    assert code == 2 and "unknown window preset 'ct-foot'" in err and "ct-lung" in err


def test_nifti_volume_in_nifti_out_keeps_its_grid(tmp_path, capsys):
    from medclipsam.volume import Geometry
    from medclipsam.volume.itk_io import read_volume

    g = Geometry((6, 40, 48), (0.9, 0.7, 3.0), (12.0, -30.0, 45.0),
                 (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0))          # sagittal-like axes
    hu = np.full(g.shape, -1000, np.int16)
    hu[:, 8:32, 8:40] = 40
    vol = tmp_path / "ct.nii"
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(hu)
    img.SetSpacing(g.spacing)
    img.SetOrigin(g.origin)
    img.SetDirection(g.direction)
    sitk.WriteImage(img, str(vol))
    out = tmp_path / "labels.nrrd"
    code, stdout, err = run(capsys, str(vol), "--prompt", "liver", "--no-gate", "--out", str(out), *TINY)
    assert code == 0, err
    assert last_line(stdout) == (6, 6, 0) and "values look like Hounsfield units" in err
    back = read_volume(out)
    assert back.geometry.same_grid(g, atol=1e-5)
