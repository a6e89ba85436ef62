"""The app against a real PACS: Orthanc with its DICOMweb plugin (Debian packages, started here on
loopback), our DICOMweb datastore (:mod:`medclipsam.serving.dicomweb_datastore`), the committed
phantom CT series (issues 5 and 21).

Series are pulled and cached by the datastore; ``PUT /datastore/label?tag=final`` stores a DICOM SEG
made by our highdicom writer in Orthanc (no dcmqi); a resubmitted label adds a SEG and supersedes
the earlier one; SEGs of other tools and older SEGs never replace the newest of ours; a fresh
datastore reads the newest back onto the image's grid; the retraining counter counts images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from servers import ROOT, check_seg_response, monailabel_server, orthanc_available, orthanc_server

SERIES = ROOT / "sample-data" / "phantoms" / "ct_chest"
TRUTH = ROOT / "sample-data" / "phantoms" / "ct_chest_labels.nii.gz"
# the phantom's truth values and the names they mean (values of the default vocabulary differ)
TRUTH_NAMES = [{"name": "tumor", "idx": 1}, {"name": "left lung", "idx": 2}, {"name": "right lung", "idx": 3},
               {"name": "liver", "idx": 4}, {"name": "spine", "idx": 5}]

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]
needs_orthanc = pytest.mark.skipif(orthanc_available() is not None, reason=str(orthanc_available()))


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


def _vocabulary():
    from medclipsam.serving.vocabulary import load_vocabulary

    return load_vocabulary(None)


def _store(orthanc: str, cache: Path, stow_prefix: str | None = None):
    """A fresh datastore of ours on the PACS (as after a restart, or in the training subprocess)."""
    from medclipsam.serving.dicomweb_datastore import MedClipSamDicomWebDatastore

    return MedClipSamDicomWebDatastore(_client(orthanc, stow_prefix), search_filter={"Modality": "CT"},
                                       cache_path=str(cache), vocabulary=_vocabulary())


def _segs(orthanc: str) -> list[dict]:
    """Every SEG instance in the PACS: series, sop, manufacturer, description, referenced series, content time."""
    out = []
    for row in requests.get(f"{orthanc}/dicom-web/series", params={"Modality": "SEG"}, timeout=30).json():
        study, series = row["0020000D"]["Value"][0], row["0020000E"]["Value"][0]
        for m in requests.get(f"{orthanc}/dicom-web/studies/{study}/series/{series}/metadata", timeout=30).json():
            def v(tag, item=m):
                return ((item.get(tag) or {}).get("Value") or [None])[0]
            out.append({"study": study, "series": series, "sop": v("00080018"), "manufacturer": v("00080070"),
                        "description": v("0008103E"), "image": v("0020000E", v("00081115") or {}),
                        "content": f"{v('00080023')}{v('00080033')}"})
    return out


def _ours(orthanc: str) -> list[dict]:
    return [s for s in _segs(orthanc) if s["manufacturer"] == "medclipsam"
            and s["description"] == "medclipsam accepted label"]


def _put_label(url: str, uid: str, path: Path, label_info) -> requests.Response:
    with open(path, "rb") as f:
        return requests.put(f"{url}/datastore/label?image={uid}&tag=final",
                            data={"params": json.dumps({"label_info": label_info})},
                            files={"label": (path.name, f)}, timeout=120)


def _labels(tmp_path: Path, geometry):
    """Two different final labels in vocabulary values: (array, path, label_info) each."""
    from medclipsam.volume.itk_io import read_volume, write_label

    voc, truth = _vocabulary(), read_volume(TRUTH).array
    first = np.zeros(truth.shape, np.uint8)
    first[truth == 1], first[truth == 2] = voc.find("tumor").value, voc.find("left lung").value
    second = np.zeros(truth.shape, np.uint8)
    second[truth == 3], second[truth == 4] = voc.find("right lung").value, voc.find("liver").value
    out = []
    for name, array, names in (("first", first, ["tumor", "left lung"]), ("second", second, ["right lung", "liver"])):
        path = write_label(tmp_path / f"{name}.nii.gz", array, geometry)
        out.append((array, path, [{"name": n, "idx": voc.find(n).value} for n in names]))
    return out


def _client(orthanc: str, stow_prefix: str | None = None):
    from monailabel.datastore.dicom import DICOMwebClientX

    return DICOMwebClientX(url=f"{orthanc}/dicom-web", session=None, qido_url_prefix=None, wado_url_prefix=None,
                           stow_url_prefix=stow_prefix)


def _restamped(orthanc: str, seg: dict, path: Path, *, manufacturer: str | None = None,
               description: str | None = None, when: str | None = None) -> str:
    """A copy of SEG ``seg`` with new UIDs (and another manufacturer / description / content time)
    stored in the PACS; returns its series UID."""
    from pydicom.uid import generate_uid

    ds = _client(orthanc).retrieve_instance(seg["study"], seg["series"], seg["sop"])
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if manufacturer is not None:
        ds.Manufacturer = manufacturer
    if description is not None:
        ds.SeriesDescription = description
    if when is not None:
        ds.ContentDate, ds.ContentTime = when[:8], when[8:]
    ds.save_as(path)
    r = requests.post(f"{orthanc}/instances", data=path.read_bytes(), timeout=30)
    assert r.status_code == 200, r.text
    return str(ds.SeriesInstanceUID)


@needs_orthanc
def test_series_are_listed_pulled_and_segmented(pacs, tmp_path):
    orthanc, url, root = pacs
    uid = _uid()
    # as Slicer's "Next Sample" and OHIF's Active Learning tab ask for a study
    assert requests.get(f"{url}/datastore/?output=stats", timeout=30).json()["total"] == 1
    nxt = requests.post(f"{url}/activelearning/first", json={}, timeout=60).json()
    assert nxt["id"] == uid
    log = (root / "work" / "monailabel.log").read_text()
    assert "Downloading" not in log or "dcmqi" not in log        # our SEG writer: no dcmqi download
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


@needs_orthanc
def test_dicom_seg_output_from_the_pacs_series(pacs, tmp_path):
    _, url, _ = pacs
    uid = _uid()
    r = requests.post(f"{url}/infer/medclipsam?image={uid}&output=dicom_seg",
                      data={"params": json.dumps({"prompt": "lungs", "slices": "8:24"})}, timeout=300)
    seg = check_seg_response(r, uid, tmp_path / "seg.dcm")
    assert seg.SegmentSequence[0].SegmentLabel == "lungs"


@needs_orthanc
def test_final_label_is_stored_in_orthanc_and_read_back_aligned(pacs, tmp_path):
    from medclipsam.volume.itk_io import read_volume

    orthanc, url, _ = pacs
    uid = _uid()
    before = len(_ours(orthanc))
    r = _put_label(url, uid, TRUTH, TRUTH_NAMES)
    assert r.status_code == 200, r.text
    ours = _ours(orthanc)
    assert len(ours) == before + 1 and ours[-1]["image"] == uid, ours
    # the next datalist (a fresh cache, as after a restart) reads it back onto the image's grid, each
    # segment with its name's vocabulary value
    items = _store(orthanc, tmp_path / "cache2").datalist()
    assert [Path(d["image"]).name for d in items] == [f"{uid}.nii.gz"]
    back, image, truth = read_volume(items[0]["label"]), read_volume(items[0]["image"]), read_volume(TRUTH)
    assert back.geometry.shape == image.geometry.shape
    assert np.allclose(back.geometry.origin, image.geometry.origin, atol=1e-3)
    voc = _vocabulary()
    expected = np.zeros(truth.array.shape, np.uint8)
    for item in TRUTH_NAMES:
        expected[truth.array == item["idx"]] = voc.find(item["name"]).value
    assert np.array_equal(back.array, expected)


@needs_orthanc
def test_resubmitted_label_supersedes_the_earlier_and_counts_are_right(pacs, tmp_path):
    from medclipsam.volume.itk_io import read_volume

    orthanc, url, _ = pacs
    uid = _uid()
    requests.get(f"{url}/datastore/?output=stats", timeout=30).raise_for_status()   # MONAI Label cached this list
    image = _read(requests.get(f"{url}/datastore/image?image={uid}", timeout=60).content, tmp_path / "img.nii.gz")
    (first, first_path, first_info), (second, second_path, second_info) = _labels(tmp_path, image.geometry)
    before = _ours(orthanc)

    r = _put_label(url, uid, first_path, first_info)
    assert r.status_code == 200, r.text
    assert r.json()["medclipsam_weak"] == "1 of 5 new final labels before retraining", r.json()
    time.sleep(0.01)
    r = _put_label(url, uid, second_path, second_info)
    assert r.status_code == 200, r.text
    # a resubmit of the same image is not a new study
    assert r.json()["medclipsam_weak"] == "1 of 5 new final labels before retraining", r.json()

    # the PACS has one more SEG of ours per submit, both on the series, the second the newest
    after = _ours(orthanc)
    added = [s for s in after if s["sop"] not in {b["sop"] for b in before}]
    assert len(added) == 2 and {s["image"] for s in added} == {uid}, added
    newest = max(after, key=lambda s: s["content"])
    assert newest in added
    # the server's label is the second, and its info names the newest SEG
    served = _read(requests.get(f"{url}/datastore/label?label={uid}&tag=final", timeout=60).content,
                   tmp_path / "served.nii.gz")
    assert np.array_equal(served.array, second)
    info = requests.get(f"{url}/datastore/?output=all", timeout=30).json()["objects"][uid]["labels"]["final"]["info"]
    assert info["seg"]["series"] == newest["series"]

    # SEGs another tool put in the PACS later (here: copies of the first with another manufacturer /
    # description) and an older SEG of ours are not read as the label
    oldest_first = min(added, key=lambda s: s["content"])
    _restamped(orthanc, oldest_first, tmp_path / "slicer.dcm", manufacturer="3D Slicer")
    _restamped(orthanc, oldest_first, tmp_path / "ohif.dcm", description="Segmentation")
    _restamped(orthanc, oldest_first, tmp_path / "older.dcm",
               when=oldest_first["content"][:8] + "000000.000001")
    assert requests.get(f"{url}/datastore/?output=stats", timeout=30).json()["completed"] == 1
    served = _read(requests.get(f"{url}/datastore/label?label={uid}&tag=final", timeout=60).content,
                   tmp_path / "served2.nii.gz")
    assert np.array_equal(served.array, second)

    # a fresh datastore reads the second back, aligned to the series
    store = _store(orthanc, tmp_path / "fresh")
    items = store.datalist()
    assert [Path(d["image"]).name for d in items] == [f"{uid}.nii.gz"]
    back, fresh_image = read_volume(items[0]["label"]), read_volume(items[0]["image"])
    assert back.geometry.shape == fresh_image.geometry.shape
    assert np.allclose(back.geometry.origin, fresh_image.geometry.origin, atol=1e-3)
    assert np.allclose(back.geometry.direction, fresh_image.geometry.direction, atol=1e-6)
    assert np.array_equal(back.array, second)
    fresh_info = store.get_label_info(uid, "final")
    assert fresh_info["seg"]["series"] == newest["series"]
    assert {(i["name"], i["idx"]) for i in fresh_info["label_info"]} == {(i["name"], i["idx"]) for i in second_info}
    assert store.get_labeled_images() == [uid] and store.get_unlabeled_images() == []


@needs_orthanc
def test_a_label_that_cannot_become_a_seg_or_reach_the_pacs_leaves_everything_as_it_was(pacs, tmp_path):
    from medclipsam.serving.dicomweb_datastore import PacsStoreError
    from medclipsam.serving.http_errors import status_of
    from medclipsam.volume.itk_io import read_volume, write_label

    orthanc, url, _ = pacs
    uid = _uid()
    served_before = requests.get(f"{url}/datastore/label?label={uid}&tag=final", timeout=60).content
    segs_before = _segs(orthanc)
    image = _read(requests.get(f"{url}/datastore/image?image={uid}", timeout=60).content, tmp_path / "img.nii.gz")
    # another grid (one slice short): 400, nothing stored
    g = image.geometry
    short = type(g)(shape=(g.shape[0] - 1, *g.shape[1:]), spacing=g.spacing, origin=g.origin, direction=g.direction)
    bad = write_label(tmp_path / "short.nii.gz", np.ones(short.shape, np.uint8), short)
    r = _put_label(url, uid, bad, [{"name": "lungs", "idx": 1}])
    assert r.status_code == 400, r.text
    assert "grid" in r.text or "shape" in r.text or "size" in r.text, r.text
    assert requests.get(f"{url}/datastore/label?label={uid}&tag=final", timeout=60).content == served_before
    assert len(_segs(orthanc)) == len(segs_before)

    # a PACS that does not take the STOW (a wrong STOW path here): 502 naming the PACS, label unchanged
    store = _store(orthanc, tmp_path / "fresh", stow_prefix="no-such-stow")
    items = store.datalist()
    kept = read_volume(items[0]["label"]).array
    good = write_label(tmp_path / "good.nii.gz", np.where(kept > 0, 1, 0).astype(np.uint8), image.geometry)
    with pytest.raises(PacsStoreError) as e:
        store.save_label(uid, str(good), "final", {"label_info": [{"name": "lungs", "idx": 1}]})
    assert status_of(e.value) == 502 and "PACS" in str(e.value) and "unchanged" in str(e.value)
    assert np.array_equal(read_volume(store.get_label_uri(uid, "final")).array, kept)
    assert len(_segs(orthanc)) == len(segs_before)


@needs_orthanc
def test_a_newer_seg_of_ours_from_elsewhere_replaces_the_local_label(pacs, tmp_path):
    """Another server on the same PACS submitted later: its SEG is the newest of ours, so it wins."""
    from medclipsam.volume.itk_io import read_volume

    orthanc, _, _ = pacs
    uid = _uid()
    store = _store(orthanc, tmp_path / "a")
    geometry = read_volume(store.get_image_uri(uid)).geometry
    (first, first_path, first_info), (second, second_path, second_info) = _labels(tmp_path, geometry)
    store.save_label(uid, str(first_path), "final", {"label_info": first_info})
    seg_of_first = store.get_label_info(uid, "final")["seg"]
    store.save_label(uid, str(second_path), "final", {"label_info": second_info})
    assert np.array_equal(read_volume(store.datalist()[0]["label"]).array, second)
    later = time.strftime("%Y%m%d%H%M%S", time.localtime(time.time() + 60)) + ".000000"
    series = _restamped(orthanc, {"study": seg_of_first["study"], "series": seg_of_first["series"],
                                  "sop": seg_of_first["sop"]}, tmp_path / "later.dcm", when=later)
    assert np.array_equal(read_volume(store.datalist()[0]["label"]).array, first)
    assert store.get_label_info(uid, "final")["seg"]["series"] == series


def test_labels_since_training_counts_each_image_once(monkeypatch):
    """A store listing an image once per SEG (MONAI Label's) must not count a resubmit as a new study."""
    from medclipsam.weak.service import labels_since_training

    class Store:
        def get_labeled_images(self):
            return ["a", "b", "a", "a"]

        def get_label_by_image_id(self, image_id, tag):
            return image_id

        def get_label_info(self, label_id, tag):
            return {"ts": {"a": 200.0, "b": 50.0}[label_id]}

    class Predictor:
        pass

    import medclipsam.weak.service as service

    monkeypatch.setattr(service, "model_stamp", lambda predictor: int(100e9))
    assert labels_since_training(Store(), Predictor()) == 1       # "a" once (newer than the model), not "b"


def test_newest_of_ours_per_series():
    from medclipsam.serving.dicomweb_datastore import SegRef, _content_datetime, newest_per_image, seg_ref_of

    def fields(**kw):
        base = {"Manufacturer": "medclipsam", "SeriesDescription": "medclipsam accepted label",
                "ReferencedSeries": "1.2.3", "StudyInstanceUID": "9", "SeriesInstanceUID": "s",
                "SOPInstanceUID": "i", "ContentDate": "20240102", "ContentTime": "101010.5", "InstanceNumber": "1"}
        return {**base, **kw}

    assert seg_ref_of(fields(Manufacturer="3D Slicer")) is None
    assert seg_ref_of(fields(SeriesDescription="medclipsam v2 (demo)")) is None     # an infer SEG, not a label
    assert seg_ref_of(fields(ReferencedSeries=None)) is None
    a = seg_ref_of(fields(SeriesInstanceUID="a", ContentTime="101010.5"))
    b = seg_ref_of(fields(SeriesInstanceUID="b", ContentTime="101010.500001"))
    c = seg_ref_of(fields(SeriesInstanceUID="c", ContentDate="20231231", ContentTime="235959.9", InstanceNumber="7"))
    d = seg_ref_of(fields(SeriesInstanceUID="d", ReferencedSeries="4.5.6", ContentTime="0910"))
    assert newest_per_image([a, b, c, d]) == {"1.2.3": b, "4.5.6": d}
    assert newest_per_image([b, a]) == {"1.2.3": b}
    assert _content_datetime("20240102", "0910") == "20240102091000.000000"
    assert _content_datetime("", "0910") == "" and SegRef.from_info({"image": "x"}) is None
