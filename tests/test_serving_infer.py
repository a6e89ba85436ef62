"""The infer task's work (medclipsam.serving.infer) with the demo models on the committed phantom CT
series: label in the source grid and voxel order, DICOM SEG, the NIfTI + DICOM-folder layout of the
DICOMweb cache, errors before work, queued concurrent requests, models loaded once (issue 5)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from medclipsam.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SERIES = ROOT / "sample-data" / "phantoms" / "ct_chest"
TRUTH = ROOT / "sample-data" / "phantoms" / "ct_chest_labels.nii.gz"     # 1 tumor, 2 left lung, 3 right lung
FAST = {"slices": "8:24"}                                                 # half the series: enough, faster

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def segmenter():
    from medclipsam.serving.infer import ZeroShotSegmenter

    return ZeroShotSegmenter()


@pytest.fixture(scope="module")
def nifti_copy(tmp_path_factory) -> Path:
    """The phantom series as a NIfTI volume (what MONAI Label's local datastore hands over)."""
    from medclipsam.dicom import read_series
    from medclipsam.volume.itk_io import write_image

    out = tmp_path_factory.mktemp("nifti") / "ct_chest.nii.gz"
    with read_series(SERIES) as s:
        write_image(out, s)
    return out


def _read(path):
    from medclipsam.volume.itk_io import read_volume

    return read_volume(path)


def test_nifti_input_label_in_source_grid_with_vocabulary_values(segmenter, nifti_copy):
    path, js = segmenter(nifti_copy, {"prompt": "Left lung; tumour", "result_extension": ".nrrd", **FAST})
    try:
        label, image, truth = _read(path), _read(nifti_copy), _read(TRUTH)
        assert label.geometry.shape == image.geometry.shape
        assert np.allclose(label.geometry.origin, image.geometry.origin)
        assert np.allclose(label.geometry.direction, image.geometry.direction)
        import SimpleITK as sitk

        assert path.endswith(".nrrd") and sitk.ReadImage(path).GetPixelID() == sitk.sitkUInt8
        values = set(np.unique(label.array).astype(int))
        assert values <= {0, 2, 4} and 2 in values
        assert js["label_names"] == {"left lung": 2, "tumor": 4}
        lab, tru = label.array.astype(int), truth.array.astype(int)
        # no flip: the left-lung label lies on the left lung of the source voxel grid
        left = (lab == 2)
        assert (left & (tru == 2)).sum() > 0.8 * left.sum()
        assert (left & (tru == 3)).sum() < 0.05 * left.sum()
        assert js["dicom"] is False and js["slices"] == 16
        assert any("DEMO MODEL" in w for w in js["warnings"])
        per_slice = js["targets"][0]["per_slice"]
        assert len(per_slice) == 16 and {"similarity", "present", "found"} <= set(per_slice[0])
        assert js["models"]["clip"] and "seconds" in js and js["seconds"]["total"] > 0
    finally:
        Path(path).unlink(missing_ok=True)


def test_dicom_folder_input_and_dicom_seg_output(segmenter, tmp_path):
    import highdicom as hd
    import pydicom

    from medclipsam.dicom.validate import dciodvfy_available, validate_with_dciodvfy

    path, js = segmenter(SERIES, {"prompt": "lungs", **FAST}, output="dicom_seg")
    try:
        assert path.endswith(".dcm") and js["dicom"] is True
        ds = pydicom.dcmread(path)
        assert ds.Modality == "SEG" and ds.SegmentSequence[0].SegmentLabel == "lungs"
        assert ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"
        ref_uid = ds.ReferencedSeriesSequence[0].SeriesInstanceUID
        src = pydicom.dcmread(next(p for p in sorted(SERIES.iterdir()) if p.is_file()), stop_before_pixels=True)
        assert ref_uid == src.SeriesInstanceUID
        assert hd.seg.segread(path).number_of_segments == 1
        if dciodvfy_available():
            report = validate_with_dciodvfy(path)
            assert report.ok, report.errors
    finally:
        Path(path).unlink(missing_ok=True)


def test_dicomweb_cache_layout_segments_the_dicom(segmenter, nifti_copy, tmp_path):
    """``<uid>.nii.gz`` beside ``<uid>/`` (DICOMweb cache): the DICOM series is used, the label fits the NIfTI."""
    nifti = tmp_path / "1.2.3.nii.gz"
    shutil.copy(nifti_copy, nifti)
    shutil.copytree(SERIES, tmp_path / "1.2.3")
    path, js = segmenter(nifti, {"prompt": "lungs", **FAST})
    try:
        assert js["dicom"] is True and path.endswith(".nii.gz")
        a, b = _read(path), _read(nifti)
        assert a.geometry.shape == b.geometry.shape and np.allclose(a.geometry.origin, b.geometry.origin)
    finally:
        Path(path).unlink(missing_ok=True)
    seg, _ = segmenter(nifti, {"prompt": "lungs", **FAST}, output="dicom_seg")
    Path(seg).unlink()


def test_errors_before_any_work(segmenter, nifti_copy, tmp_path):
    loads = segmenter.models.loads
    with pytest.raises(InputError, match="no text prompt"):
        segmenter(nifti_copy, {"prompt": ""})
    with pytest.raises(InputError, match="DICOM SEG needs"):
        segmenter(nifti_copy, {"prompt": "lungs"}, output="dicom_seg")
    with pytest.raises(InputError, match="not a label format"):
        segmenter(nifti_copy, {"prompt": "lungs", "result_extension": ".png"})
    with pytest.raises(InputError, match="not found"):
        segmenter(tmp_path / "nothing.nii.gz", {"prompt": "lungs"})
    with pytest.raises(InputError, match="CUDA"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        segmenter(nifti_copy, {"prompt": "lungs", "device": "cuda"})
    assert segmenter.models.loads == loads


def test_concurrent_requests_queue_and_models_load_once(nifti_copy):
    from medclipsam.serving.infer import ZeroShotSegmenter

    seg = ZeroShotSegmenter()
    assert seg.models.loads == 0                      # nothing loaded when the task is built
    results, errors = [], []

    def run(prompt):
        try:
            results.append(seg(nifti_copy, {"prompt": prompt, "slices": "12:16"}))
        except Exception as e:                        # noqa: BLE001 - the test reports it
            errors.append(e)

    threads = [threading.Thread(target=run, args=(p,)) for p in ("lungs", "tumor", "spine")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3
    assert seg.models.loads == 1 and seg.models.loaded_devices() == ["cpu"]
    assert sum(js["seconds"]["queued"] > 0 for _, js in results) >= 2   # two of them waited their turn
    for path, _ in results:
        Path(path).unlink()


def test_result_json_reports_overlaps_and_the_tumour_inside_the_lungs_survives(segmenter, nifti_copy):
    """``lungs; tumor``: the tumour (vocabulary value 4) keeps the voxels the lungs (1) also claim,
    and the result JSON says so (issue 21)."""
    path, js = segmenter(nifti_copy, {"prompt": "lungs; tumor", "slices": "13:20"})
    try:
        label, truth = _read(path).array.astype(int), _read(TRUTH).array.astype(int)
        tumour = label == 4
        assert (tumour & (truth == 1)).sum() > 0.6 * (truth[13:20] == 1).sum()
        [overlap] = js["overlaps"]
        assert overlap["labels"] == [1, 4] and overlap["names"] == ["lungs", "tumor"]
        assert overlap["kept_label"] == 4 and overlap["kept_name"] == "tumor" and overlap["voxels"] > 0
        assert overlap["rule"] == "the smaller target"
        assert any("overlap" in n for n in js["notes"])
    finally:
        Path(path).unlink(missing_ok=True)


def test_a_request_cannot_set_an_unbounded_saliency_batch(segmenter, nifti_copy, tmp_path):
    """``set`` pairs arrive over HTTP: a saliency batch that would hold a whole series in memory is refused."""
    from medclipsam.errors import ConfigError, MedClipSamError

    before = sorted(p.name for p in nifti_copy.parent.iterdir())
    with pytest.raises(ConfigError, match="saliency_batch must be at most 64") as e:
        segmenter(nifti_copy, {"prompt": "lungs", "set": "saliency_batch=100000"})
    assert isinstance(e.value, MedClipSamError)        # → 400 in the serving status table
    assert sorted(p.name for p in nifti_copy.parent.iterdir()) == before


@pytest.mark.parametrize("pair, words", [
    ("volume.inspect=100000", "unknown setting 'volume.inspect'"),          # only VOLUME_SETTINGS are settable
    ("volume.slice_range=0:5", "unknown setting 'volume.slice_range'"),
    ("pipeline.presence.threshold=0.1", "unknown setting 'pipeline.presence.threshold'"),   # prefix = section
    ("methods.m2ib=1", "unknown setting 'methods.m2ib'"),
    ("m2ib=1", "'m2ib' is a section"),
    ("pipeline.m2ib.samples=100000000", "m2ib.samples must be at most 64"),  # a noise batch that fills memory
    ("m2ib.steps=100000000", "m2ib.steps at most 200"),
])
def test_request_setting_keys_are_checked_against_the_settings(segmenter, nifti_copy, pair, words):
    """The resolver's section prefixes and method-keyed parameters arrive over HTTP in ``set``: every
    key outside the two settable sections is refused before any work, nothing written beside the input."""
    from medclipsam.errors import MedClipSamError

    before = sorted(p.name for p in nifti_copy.parent.iterdir())
    with pytest.raises(MedClipSamError) as e:
        segmenter(nifti_copy, {"prompt": "lungs", "set": pair})
    assert words in str(e.value)
    assert sorted(p.name for p in nifti_copy.parent.iterdir()) == before
