"""The app against a real PACS: Orthanc with its DICOMweb plugin (Debian packages, started here on
loopback), MONAI Label's DICOMweb datastore, the committed phantom CT series (issue 5).

Series are pulled and cached by the datastore; ``PUT /datastore/label?tag=final`` stores a DICOM SEG
in Orthanc (MONAI Label converts with dcmqi's ``itkimage2segimage``, which must come from the venv,
not a download); a fresh datastore's ``datalist()`` reads it back onto the image's grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests

from servers import ROOT, check_seg_response, monailabel_server, orthanc_available, orthanc_server

SERIES = ROOT / "sample-data" / "phantoms" / "ct_chest"
TRUTH = ROOT / "sample-data" / "phantoms" / "ct_chest_labels.nii.gz"

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.skipif(orthanc_available() is not None, reason=str(orthanc_available()))]


def _uid() -> str:
    import pydicom

    return pydicom.dcmread(next(p for p in sorted(SERIES.iterdir()) if p.is_file()),
                           stop_before_pixels=True).SeriesInstanceUID


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pacs")
    with orthanc_server(root / "orthanc") as orthanc:
        for f in sorted(SERIES.iterdir()):
            if f.is_file():
                r = requests.post(f"{orthanc}/instances", data=f.read_bytes(), timeout=30)
                assert r.status_code == 200, r.text
        cache = root / "cache"
        with monailabel_server(f"{orthanc}/dicom-web", root / "work",
                               env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(cache)}) as url:
            yield orthanc, url, root


def _read(data: bytes, path: Path):
    from medclipsam.volume.itk_io import read_volume

    path.write_bytes(data)
    return read_volume(path)


def test_series_are_listed_pulled_and_segmented(pacs, tmp_path):
    orthanc, url, root = pacs
    uid = _uid()
    # as Slicer's "Next Sample" and OHIF's Active Learning tab ask for a study
    assert requests.get(f"{url}/datastore/?output=stats", timeout=30).json()["total"] == 1
    nxt = requests.post(f"{url}/activelearning/first", json={}, timeout=60).json()
    assert nxt["id"] == uid
    log = (root / "work" / "monailabel.log").read_text()
    assert "Downloading" not in log or "dcmqi" not in log        # dcmqi found on PATH, not fetched
    image = _read(requests.get(f"{url}/datastore/image?image={uid}", timeout=60).content, tmp_path / "img.nii.gz")
    r = requests.post(f"{url}/infer/medclipsam?image={uid}&output=all",
                      data={"params": json.dumps({"prompt": "left lung", "slices": "8:24"})}, timeout=300)
    assert r.status_code == 200, r.text
    from servers import multipart

    parts = multipart(r)
    meta = json.loads(parts["params"])
    assert meta["dicom"] is True and meta["label_names"] == {"left lung": 2}
    label = _read(parts["image"], tmp_path / "label.nii.gz")
    assert label.geometry.shape == image.geometry.shape
    assert np.allclose(label.geometry.origin, image.geometry.origin, atol=1e-3)
    from medclipsam.volume.itk_io import read_volume

    truth = read_volume(TRUTH).array
    left = label.array == 2
    assert left.sum() > 0 and (left & (truth == 2)).sum() > 0.8 * left.sum()


def test_dicom_seg_output_from_the_pacs_series(pacs, tmp_path):
    _, url, _ = pacs
    uid = _uid()
    r = requests.post(f"{url}/infer/medclipsam?image={uid}&output=dicom_seg",
                      data={"params": json.dumps({"prompt": "lungs", "slices": "8:24"})}, timeout=300)
    seg = check_seg_response(r, uid, tmp_path / "seg.dcm")
    assert seg.SegmentSequence[0].SegmentLabel == "lungs"


def test_final_label_is_stored_in_orthanc_and_read_back_aligned(pacs, tmp_path):
    from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore

    from medclipsam.volume.itk_io import read_volume

    orthanc, url, _ = pacs
    uid = _uid()
    with open(TRUTH, "rb") as f:
        r = requests.put(f"{url}/datastore/label?image={uid}&tag=final",
                         data={"params": json.dumps({"label_info": [{"name": "tumor", "idx": 1},
                                                                    {"name": "left lung", "idx": 2},
                                                                    {"name": "right lung", "idx": 3},
                                                                    {"name": "liver", "idx": 4},
                                                                    {"name": "spine", "idx": 5}]})},
                         files={"label": ("label.nii.gz", f)}, timeout=120)
    assert r.status_code == 200, r.text
    segs = requests.get(f"{orthanc}/dicom-web/series", params={"Modality": "SEG"}, timeout=30).json()
    assert len(segs) == 1, segs
    # the next datalist (a fresh cache, as after a restart) reads it back onto the image's grid
    client = DICOMwebClientX(url=f"{orthanc}/dicom-web", session=None, qido_url_prefix=None, wado_url_prefix=None,
                             stow_url_prefix=None)
    store = DICOMWebDatastore(client, search_filter={"Modality": "CT"}, cache_path=str(tmp_path / "cache2"))
    items = store.datalist()
    assert [Path(d["image"]).name for d in items] == [f"{uid}.nii.gz"]
    back, image, truth = read_volume(items[0]["label"]), read_volume(items[0]["image"]), read_volume(TRUTH)
    assert back.geometry.shape == image.geometry.shape
    assert np.allclose(back.geometry.origin, image.geometry.origin, atol=1e-3)
    assert np.array_equal(back.array > 0, truth.array > 0)
