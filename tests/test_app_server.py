"""The MONAI Label app through a real ``monailabel start_server``, called over HTTP as 3D Slicer and
OHIF call it (issue 5): local NIfTI and DICOM-folder datastores, demo models, the committed phantom
CT series (1 tumor, 2 left lung, 3 right lung in its ground truth)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from servers import ROOT, check_seg_response, monailabel_server, multipart

SERIES = ROOT / "sample-data" / "phantoms" / "ct_chest"
TRUTH = ROOT / "sample-data" / "phantoms" / "ct_chest_labels.nii.gz"
INFER_TIMEOUT = 300

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _series_uid() -> str:
    import pydicom

    f = next(p for p in sorted(SERIES.iterdir()) if p.is_file())
    return pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID


def _volume(data: bytes, suffix: str, tmp: Path):
    from medclipsam.volume.itk_io import read_volume

    p = tmp / f"result{suffix}"
    p.write_bytes(data)
    return read_volume(p)


@pytest.fixture(scope="module")
def nifti_server(tmp_path_factory):
    from medclipsam.dicom import read_series
    from medclipsam.volume.itk_io import write_image

    root = tmp_path_factory.mktemp("nifti_store")
    studies = root / "studies"
    studies.mkdir()
    with read_series(SERIES) as s:
        write_image(studies / "ct_chest.nii.gz", s)
    with monailabel_server(studies, root / "work") as url:
        yield url, studies


@pytest.fixture(scope="module")
def dicom_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom_store")
    studies = root / "studies"
    shutil.copytree(SERIES, studies / "patient1" / "ct")
    with monailabel_server(studies, root / "work") as url:
        yield url, studies


def _infer(url: str, image: str, params: dict, output: str | None = None) -> requests.Response:
    q = f"{url}/infer/medclipsam?image={image}" + (f"&output={output}" if output else "")
    return requests.post(q, data={"params": json.dumps(params)}, timeout=INFER_TIMEOUT)


def test_info_lists_the_zero_shot_model_with_vocabulary_and_options(nifti_server):
    url, _ = nifti_server
    info = requests.get(f"{url}/info/", timeout=10).json()
    m = info["models"]["medclipsam"]
    assert m["type"] == "segmentation" and m["dimension"] == 3
    assert m["labels"]["left lung"] == 2 and m["labels"]["prompted"] == max(m["labels"].values())
    cfg = m["config"]
    assert cfg["prompt"] == "" and cfg["preset"][0] == "v2" and cfg["gate"] is True
    assert {"saliency", "postprocess", "visual_prompts", "window", "presence_threshold", "device"} <= set(cfg)
    assert info["datastore"]["total"] == 1


def test_slicer_style_request_returns_label_in_source_grid(nifti_server, tmp_path):
    """Slicer: multipart params with every option (lists reduced to the selection), NIfTI back, names
    from label_names."""
    url, studies = nifti_server
    info = requests.get(f"{url}/info/", timeout=10).json()
    params = {k: (v[0] if isinstance(v, list) else v) for k, v in info["models"]["medclipsam"]["config"].items()}
    params.update({"prompt": "left lung; tumor", "slices": "8:24", "client_id": "user-xyz"})
    r = _infer(url, "ct_chest", params)
    assert r.status_code == 200, r.text
    parts = multipart(r)
    meta = json.loads(parts["params"])
    assert meta["label_names"] == {"left lung": 2, "tumor": 4}
    label = _volume(parts["image"], ".nii.gz", tmp_path)
    from medclipsam.volume.itk_io import read_volume

    image, truth = read_volume(studies / "ct_chest.nii.gz"), read_volume(TRUTH)
    assert label.geometry.shape == image.geometry.shape
    assert np.allclose(label.geometry.origin, image.geometry.origin)
    lab = label.array.astype(int)
    assert set(np.unique(lab)) <= {0, 2, 4}
    left = lab == 2
    assert left.sum() > 0 and (left & (truth.array == 2)).sum() > 0.8 * left.sum()   # not flipped


def test_ohif_style_class_prompt_returns_nrrd(nifti_server, tmp_path):
    """OHIF: only edited keys, label_prompt indices, .nrrd uint8, output=image."""
    url, _ = nifti_server
    params = {"label_prompt": [1], "result_extension": ".nrrd", "result_dtype": "uint8",
              "result_compress": False, "restore_label_idx": False, "slices": "8:24"}
    r = _infer(url, "ct_chest", params, output="image")
    assert r.status_code == 200, r.text
    label = _volume(r.content, ".nrrd", tmp_path)
    assert set(np.unique(label.array).astype(int)) == {0, 1}


def test_bad_requests_get_a_message(nifti_server):
    url, _ = nifti_server
    r = _infer(url, "ct_chest", {"prompt": "  "})
    assert r.status_code == 400 and "no text prompt" in r.json()["detail"]
    r = requests.post(f"{url}/infer/medclipsam?image=ct_chest", data={"params": "{prompt: tumor"}, timeout=30)
    assert r.status_code == 400 and "not JSON" in r.json()["detail"]
    r = _infer(url, "ct_chest", {"prompt": "lungs", "window": "ct-liver"})
    assert r.status_code == 400 and "window" in r.json()["detail"]
    r = _infer(url, "ct_chest", {"prompt": "lungs"}, output="dicom_seg")       # a NIfTI store has no DICOM
    assert r.status_code == 400 and "DICOM SEG needs" in r.json()["detail"]


def test_info_answers_while_inferences_run_and_they_queue(nifti_server):
    url, _ = nifti_server
    statuses: list[int] = []

    def run(prompt: str) -> None:
        statuses.append(_infer(url, "ct_chest", {"prompt": prompt}).status_code)

    threads = [threading.Thread(target=run, args=(p,)) for p in ("lungs", "tumor")]
    for t in threads:
        t.start()
    time.sleep(1.0)
    delays = []
    while any(t.is_alive() for t in threads) and len(delays) < 20:
        t0 = time.perf_counter()
        assert requests.get(f"{url}/info/", timeout=30).status_code == 200
        delays.append(time.perf_counter() - t0)
        time.sleep(0.3)
    for t in threads:
        t.join()
    assert statuses == [200, 200]
    assert len(delays) >= 3, "the inferences ended before /info/ could be timed; nothing was measured"
    assert max(delays) < 1.0, f"/info/ took {max(delays):.2f} s during an inference"


def test_dicom_folder_datastore_infer_dicom_seg_and_final_label(dicom_server, tmp_path):
    import pydicom

    url, studies = dicom_server
    uid = _series_uid()
    ds = requests.get(f"{url}/datastore/?output=all", timeout=10).json()
    assert uid in ds["objects"]
    # a label in the series' grid, as Slicer shows it: the NIfTI the datastore serves
    r = requests.get(f"{url}/datastore/image?image={uid}", timeout=30)
    assert r.status_code == 200
    image = _volume(r.content, ".nii.gz", tmp_path)
    assert image.geometry.shape == (32, 128, 128)
    r = _infer(url, uid, {"prompt": "lungs", "slices": "8:24"}, output="dicom_seg")
    check_seg_response(r, uid, tmp_path / "seg.dcm")
    # Slicer's "Submit Label": the final label becomes training data and a DICOM SEG beside the studies
    from medclipsam.volume.itk_io import read_volume

    truth = tmp_path / "final.nii.gz"
    shutil.copy(TRUTH, truth)
    with open(truth, "rb") as f:
        r = requests.put(f"{url}/datastore/label?image={uid}&tag=final",
                         data={"params": json.dumps({"label_info": [{"name": "tumor", "idx": 1},
                                                                    {"name": "left lung", "idx": 2}]})},
                         files={"label": ("final.nii.gz", f)}, timeout=60)
    assert r.status_code == 200, r.text
    stats = requests.get(f"{url}/datastore/?output=stats", timeout=10).json()
    assert stats["completed"] == 1
    written = studies / ".medclipsam" / "dicom-seg" / f"{uid}.dcm"
    assert written.is_file()
    sseg = pydicom.dcmread(written)
    assert [s.SegmentLabel for s in sseg.SegmentSequence][:2] == ["tumor", "left lung"]
    from medclipsam.dicom import read_dicom_seg, read_series
    from medclipsam.volume.outputs import slice_frames

    with read_series(studies) as series:
        datasets, frames = slice_frames(series)
        back, _ = read_dicom_seg(written, datasets, frames=frames)
    assert np.array_equal(back > 0, read_volume(TRUTH).array > 0)
