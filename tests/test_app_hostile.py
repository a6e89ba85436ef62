"""The app's server as an attacker on the network would try it (issue 21): real ``monailabel
start_server`` processes on loopback — a NIfTI-folder store and a DICOM-folder store — and every
hostile case of the issue (path variants for ids, tags and file names; bad uploads; bad options;
unknown ids, models and sessions), bounded in count and time.

For each case: the status, that the message names the problem, that ``/info/`` still answers. After
all of them: the studies folder and a sentinel folder beside it hash as before (nothing outside the
store, and nothing in it, created, changed or deleted). The cases and their answers are written to
``<tmp>/hostile_cases.json`` (``benchmarks/RESULTS.md`` records a run)."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests

from servers import ROOT, monailabel_server

SERIES = ROOT / "sample-data" / "phantoms" / "ct_chest"
TRUTH = ROOT / "sample-data" / "phantoms" / "ct_chest_labels.nii.gz"
TIMEOUT = 60
MAX_CASES = 400

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def tree_hash(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Path → SHA-256 of every file under ``root`` (links by their target), folders included as names."""
    out: dict[str, str] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        rel = d.relative_to(root)
        if any(str(rel).startswith(s) for s in skip):
            continue
        out[f"{rel}/"] = "dir"
        for f in filenames:
            p = d / f
            if any(str(p.relative_to(root)).startswith(s) for s in skip):
                continue
            out[str(p.relative_to(root))] = (f"link:{os.readlink(p)}" if p.is_symlink()
                                             else hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _uid() -> str:
    import pydicom

    f = next(p for p in sorted(SERIES.iterdir()) if p.is_file())
    return pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two servers (NIfTI store, DICOM store) with a sentinel folder beside their studies."""
    from medclipsam.dicom import read_series
    from medclipsam.volume.itk_io import write_image

    root = tmp_path_factory.mktemp("hostile")
    nifti_studies, dicom_studies, sentinel = root / "studies", root / "dicom_studies", root / "sentinel"
    nifti_studies.mkdir()
    with read_series(SERIES) as s:
        write_image(nifti_studies / "ct_chest.nii.gz", s)
    shutil.copytree(SERIES, dicom_studies / "patient1" / "ct")
    sentinel.mkdir()
    (sentinel / "x.nii.gz").write_bytes(b"sentinel image")
    (sentinel / "notes.txt").write_text("do not touch")
    (sentinel / "labels" / "final").mkdir(parents=True)
    (sentinel / "labels" / "final" / "x.nii.gz").write_bytes(b"sentinel label")
    before = {"sentinel": tree_hash(sentinel), "dicom_source": tree_hash(dicom_studies, skip=(".medclipsam",))}
    with monailabel_server(nifti_studies, root / "work_nifti") as nurl, \
            monailabel_server(dicom_studies, root / "work_dicom") as durl:
        yield {"root": root, "nifti": nurl, "dicom": durl, "nifti_studies": nifti_studies,
               "dicom_studies": dicom_studies, "sentinel": sentinel, "before": before, "uid": _uid(),
               "log": []}


def raw(url: str, method: str, target: str, *, body: bytes = b"", headers: dict | None = None) -> tuple[int, str]:
    """A request sent byte for byte (no client-side normalisation of ``..`` or percent-escapes)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        hdrs = {} if "Transfer-Encoding" in (headers or {}) else {"Content-Length": str(len(body))}
        hdrs.update(headers or {})
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            try:
                conn.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def multipart_body(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "medclipsamboundary7f3a"
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, (name, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def check(world, name: str, status: int | tuple[int, ...], text: str, got: tuple[int, str], url: str) -> None:
    assert len(world["log"]) < MAX_CASES
    code, body = got
    world["log"].append({"case": name, "status": code, "answer": body[:300]})
    expected = status if isinstance(status, tuple) else (status,)
    assert code in expected, f"{name}: {code} {body[:400]}"
    assert text.lower() in body.lower(), f"{name}: the answer does not name the problem ({text!r}): {body[:400]}"
    assert requests.get(f"{url}/info/", timeout=10).status_code == 200, f"{name}: /info/ stopped answering"


# ---------------------------------------------------------------------------------------- the cases
def traversal_variants(world) -> list[str]:
    abs_sentinel = str(world["sentinel"] / "x")
    return ["../../sentinel/x", "..%2F..%2Fsentinel%2Fx", "%2e%2e%2f%2e%2e%2fsentinel%2fx",
            "..%252F..%252Fsentinel%252Fx", "%252e%252e", abs_sentinel.replace("/", "%2F"), abs_sentinel,
            "..", ".", "", "x/../../y", "..\\..\\sentinel\\x", "ct_chest/../ct_chest"]


def label_bytes(array: np.ndarray, like: Path, tmp: Path, name: str = "label.nii.gz", shift_mm: float = 0.0,
                dtype=np.uint8) -> bytes:
    import SimpleITK as sitk

    ref = sitk.ReadImage(str(like))
    img = sitk.GetImageFromArray(array.astype(dtype))
    img.SetSpacing(ref.GetSpacing())
    img.SetDirection(ref.GetDirection())
    o = list(ref.GetOrigin())
    o[0] += shift_mm
    img.SetOrigin(o)
    p = tmp / name
    sitk.WriteImage(img, str(p))
    return p.read_bytes()


def put_label(world, url: str, image: str, data: bytes, filename: str = "label.nii.gz", tag: str = "final",
              params: str = '{"label_info": [{"name": "tumor", "idx": 1}]}') -> tuple[int, str]:
    body, ctype = multipart_body({"params": params}, {"label": (filename, data)})
    return raw(url, "PUT", f"/datastore/label?image={image}&tag={tag}", body=body,
               headers={"Content-Type": ctype})


def test_traversal_and_unknown_ids_are_refused(world):
    for store in ("nifti", "dicom"):
        url = world[store]
        image = "ct_chest" if store == "nifti" else world["uid"]
        good_label = TRUTH.read_bytes()
        for v in traversal_variants(world):
            check(world, f"{store}: infer image={v!r}", (400, 404), "image",
                  raw(url, "POST", f"/infer/medclipsam?image={v}", body=b""), url)
            check(world, f"{store}: put label image={v!r}", (400, 404), "image",
                  put_label(world, url, v, good_label), url)
            if v:                                   # an empty tag is MONAI Label's default, "final"
                check(world, f"{store}: put label tag={v!r}", (400, 404), "tag",
                      put_label(world, url, image, good_label, tag=v), url)
            body, ctype = multipart_body({"params": "{}"}, {"file": ("x.nii.gz", b"not an image")})
            check(world, f"{store}: put image id={v!r}", (400, 403, 404), "image",
                  raw(url, "PUT", f"/datastore/image?image={v}", body=body, headers={"Content-Type": ctype}), url)
            check(world, f"{store}: delete image id={v!r}", (400, 403, 404), "image",
                  raw(url, "DELETE", f"/datastore/image?id={v}"), url)
            check(world, f"{store}: delete label id={v!r}", (400, 403, 404), "image",
                  raw(url, "DELETE", f"/datastore/label?id={v}&tag=final"), url)
            check(world, f"{store}: get image={v!r}", (400, 404), "image",
                  raw(url, "GET", f"/datastore/image?image={v}"), url)
            check(world, f"{store}: get label tag={v!r}", (400, 404), "tag" if v else "tag",
                  raw(url, "GET", f"/datastore/label?label={image}&tag={v or '%20'}"), url)
        # the infer params cannot name another image or a hostile tag
        for params in ({"prompt": "tumor", "image": "/etc/ssl"}, {"prompt": "tumor", "save_label": True,
                                                                  "label_tag": "../.."}):
            body, ctype = multipart_body({"params": json.dumps(params)}, {})
            check(world, f"{store}: infer params {params}", 400, "image" if "image" in params else "tag",
                  raw(url, "POST", f"/infer/medclipsam?image={image}", body=body, headers={"Content-Type": ctype}),
                  url)
        for sid in ("..", "%2e%2e", "../../x", "nope"):
            check(world, f"{store}: session {sid!r}", (400, 404), "session",
                  raw(url, "POST", f"/infer/medclipsam?session_id={sid}", body=b""), url)
            # with a '/' the path matches no route at all: a plain 404
            check(world, f"{store}: delete session {sid!r}", (400, 404), "not found" if "/" in sid else "session",
                  raw(url, "DELETE", f"/session/{sid}"), url)


def test_deleting_a_source_study_is_refused(world):
    for store, image in (("nifti", "ct_chest"), ("dicom", world["uid"])):
        url = world[store]
        check(world, f"{store}: delete source image", 403, "allow_delete",
              raw(url, "DELETE", f"/datastore/image?id={image}"), url)
        check(world, f"{store}: delete source image (deprecated route)", 403, "allow_delete",
              raw(url, "DELETE", f"/datastore/?id={image}"), url)
        check(world, f"{store}: upload model weights", 403, "weights",
              raw(url, "PUT", "/model/medclipsam_weak", body=b""), url)


def test_bad_labels_are_refused_and_the_previous_label_stays(world, tmp_path):
    from medclipsam.volume.itk_io import read_volume

    url, studies = world["nifti"], world["nifti_studies"]
    image = studies / "ct_chest.nii.gz"
    truth = read_volume(TRUTH).array.astype(np.uint8)
    r = put_label(world, url, "ct_chest", label_bytes(truth, image, tmp_path))
    assert r[0] == 200, r
    stored = studies / "labels" / "final" / "ct_chest.nii.gz"
    kept = stored.read_bytes()
    good = label_bytes(truth, image, tmp_path, "good.nii.gz")
    cases = {
        "not NIfTI": (b"hello, this is text", "label.nii.gz", "nifti"),
        "PNG named .nii.gz": (b"\x89PNG\r\n\x1a\n" + b"\0" * 400, "label.nii.gz", "nifti"),
        "truncated": (gzip.compress(gzip.decompress(good)[:-5000]), "label.nii.gz", "truncated"),
        "other shape": (label_bytes(truth[:-2], image, tmp_path, "s.nii.gz"), "label.nii.gz", "voxels"),
        "shifted 10 mm": (label_bytes(truth, image, tmp_path, "o.nii.gz", shift_mm=10.0), "label.nii.gz", "mm"),
        "float-valued": (label_bytes(truth.astype(np.float32) * 0.5, image, tmp_path, "f.nii.gz",
                                     dtype=np.float32), "label.nii.gz", "integer"),
        "value not in vocabulary": (label_bytes(np.where(truth > 0, 200, 0), image, tmp_path, "v.nii.gz"),
                                    "label.nii.gz", "vocabulary"),
        ".exe name": (good, "label.exe", ".exe"),
        "no extension": (good, "label", "label"),
    }
    for name, (data, filename, text) in cases.items():
        check(world, f"label {name}", 400, text, put_label(world, url, "ct_chest", data, filename), url)
        assert stored.read_bytes() == kept, f"label {name}: the previous label changed"
    check(world, "label params not JSON", 400, "json",
          put_label(world, url, "ct_chest", good, params="{label_info: tumor"), url)
    # a 1 GB upload is refused from its headers, before anything is read
    check(world, "label of 1 GB", 413, "MiB",
          raw(url, "PUT", "/datastore/label?image=ct_chest&tag=final", body=b"x" * 1024,
              headers={"Content-Length": str(1 << 30), "Content-Type": "multipart/form-data; boundary=b"}), url)
    check(world, "chunked upload", 411, "Content-Length",
          raw(url, "PUT", "/datastore/label?image=ct_chest&tag=final",
              headers={"Transfer-Encoding": "chunked", "Content-Type": "multipart/form-data; boundary=b"}), url)
    assert stored.read_bytes() == kept
    assert sorted(p.name for p in stored.parent.iterdir()) == ["ct_chest.nii.gz"], "a stray label file was left"


def test_dicom_store_refuses_uploads_and_a_seg_of_another_series(world, tmp_path):
    url, uid = world["dicom"], world["uid"]
    body, ctype = multipart_body({"params": "{}"}, {"file": ("new.nii.gz", TRUTH.read_bytes())})
    check(world, "dicom: upload image", 403, "DICOM",
          raw(url, "PUT", "/datastore/image?image=new", body=body, headers={"Content-Type": ctype}), url)
    check(world, "dicom: label not DICOM named .dcm", 400, "dcm",
          put_label(world, url, uid, b"\0" * 200, "label.dcm"), url)
    assert not (world["dicom_studies"] / ".medclipsam" / "dicom-seg" / f"{uid}.dcm").exists()


def test_bad_train_and_task_options_get_400_or_404(world):
    url = world["nifti"]
    for params, text in (({"epochs": -1}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"size": 100000}, "size"),
                         ({"lr_max": -1}, "lr_max"), ({"optimizer": "nope"}, "optimizer"),
                         ({"nonsense": 1}, "nonsense")):
        check(world, f"train {params}", 400, text,
              raw(url, "POST", "/train/medclipsam_weak", body=json.dumps(params).encode(),
                  headers={"Content-Type": "application/json"}), url)
    check(world, "train unknown model", 404, "trainer", raw(url, "POST", "/train/nope", body=b"{}",
                                                            headers={"Content-Type": "application/json"}), url)
    check(world, "infer unknown model", 404, "model", raw(url, "POST", "/infer/nope?image=ct_chest", body=b""), url)
    check(world, "strategy unknown", 404, "strategy", raw(url, "POST", "/activelearning/nope", body=b"{}",
                                                          headers={"Content-Type": "application/json"}), url)
    check(world, "scoring unknown", 404, "scoring", raw(url, "POST", "/scoring/nope", body=b"{}",
                                                        headers={"Content-Type": "application/json"}), url)
    body, ctype = multipart_body({"params": "{prompt: tumor"}, {})
    check(world, "infer params not JSON", 400, "json",
          raw(url, "POST", "/infer/medclipsam?image=ct_chest", body=body, headers={"Content-Type": ctype}), url)
    body, ctype = multipart_body({"info": "[1, 2]"}, {})
    check(world, "image info not an object", 400, "json object",
          raw(url, "PUT", "/datastore/image/info?image=ct_chest", body=body, headers={"Content-Type": ctype}), url)
    body, ctype = multipart_body({"info": '{"ts": 99999999999}'}, {})
    check(world, "image info sets ts", 400, "ts",
          raw(url, "PUT", "/datastore/image/info?image=ct_chest", body=body, headers={"Content-Type": ctype}), url)
    body, ctype = multipart_body({}, {"files": ("a.tar", b"x" * 100)})
    check(world, "session archive", 403, "archives",
          raw(url, "PUT", "/session/?uncompress=true", body=body, headers={"Content-Type": ctype}), url)


def test_image_and_session_uploads_are_checked(world, tmp_path):
    """What PUT /datastore/image, PUT /session/ and an infer upload accept: self-contained NIfTI/NRRD
    volumes only; an existing id is never overwritten; a good upload is stored under its id."""
    url, studies = world["nifti"], world["nifti_studies"]
    image = (studies / "ct_chest.nii.gz").read_bytes()
    nii = gzip.decompress(image)
    two_file = nii[:344] + b"ni1\0" + nii[348:352]                       # a .hdr that points at a .img
    detached = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 4\nencoding: raw\ndata file: /etc/passwd\n\n"

    def put_image(image_id: str, filename: str, data: bytes) -> tuple[int, str]:
        body, ctype = multipart_body({"params": "{}"}, {"file": (filename, data)})
        return raw(url, "PUT", f"/datastore/image?image={image_id}", body=body, headers={"Content-Type": ctype})

    for name, (image_id, filename, data, status, text) in {
        "existing id": ("ct_chest", "x.nii.gz", image, 409, "already exists"),
        "detached NRRD": ("new1", "x.nrrd", detached, 400, "detached"),
        "two-file NIfTI header": ("new2", "x.nii", two_file, 400, "two-file"),
        "DICOM as image": ("new3", "x.dcm", b"\0" * 128 + b"DICM", 400, "NIfTI"),
        "text as NIfTI": ("new4", "x.nii.gz", b"hello", 400, "not"),
        "executable": ("new5", "x.exe", image, 400, "x.exe"),
    }.items():
        check(world, f"image upload: {name}", status, text, put_image(image_id, filename, data), url)
    assert sorted(p.name for p in studies.glob("*.nii*")) == ["ct_chest.nii.gz"]
    body, ctype = multipart_body({}, {"files": ("x.exe", b"MZ" + b"\0" * 100)})
    check(world, "session upload: executable", 400, "x.exe",
          raw(url, "PUT", "/session/", body=body, headers={"Content-Type": ctype}), url)
    body, ctype = multipart_body({"params": '{"prompt": "tumor"}'}, {"file": ("x.exe", b"MZ")})
    check(world, "infer upload: executable", 400, "x.exe",
          raw(url, "POST", "/infer/medclipsam", body=body, headers={"Content-Type": ctype}), url)
    body, ctype = multipart_body({"params": '{"prompt": "tumor"}'}, {"file": ("x.nii.gz", image)})
    check(world, "infer upload and an image id", 400, "either",
          raw(url, "POST", "/infer/medclipsam?image=ct_chest", body=body, headers={"Content-Type": ctype}), url)
    # the accepted case: a new id, stored in the store under that id and nothing else
    code, answer = put_image("uploaded_ok", "whatever name.nii.gz", image)
    assert code == 200 and json.loads(answer) == {"image": "uploaded_ok"}, answer
    assert (studies / "uploaded_ok.nii.gz").read_bytes() == image


def test_deleting_with_allow_delete(tmp_path):
    """--conf allow_delete true: an image of the NIfTI store can be deleted; hostile ids still cannot,
    and nothing beside the store changes."""
    from medclipsam.dicom import read_series
    from medclipsam.volume.itk_io import write_image

    studies, sentinel = tmp_path / "studies", tmp_path / "sentinel"
    studies.mkdir()
    sentinel.mkdir()
    (sentinel / "keep.nii.gz").write_bytes(b"sentinel")
    with read_series(SERIES) as s:
        write_image(studies / "a.nii.gz", s)
    shutil.copy(studies / "a.nii.gz", studies / "b.nii.gz")
    before = tree_hash(sentinel)
    world = {"log": []}
    with monailabel_server(studies, tmp_path / "work", conf={"allow_delete": "true"}) as url:
        for v in ("../sentinel/keep", "..%2Fsentinel%2Fkeep", str(sentinel / "keep"), "a/../b", "nope"):
            check(world, f"allow_delete: delete {v!r}", (400, 404), "image",
                  raw(url, "DELETE", f"/datastore/image?id={v}"), url)
        assert raw(url, "DELETE", "/datastore/image?id=b")[0] == 200
        ids = requests.get(f"{url}/datastore/?output=all", timeout=10).json()["objects"]
    assert sorted(ids) == ["a"] and not (studies / "b.nii.gz").exists() and (studies / "a.nii.gz").exists()
    assert tree_hash(sentinel) == before


def test_zz_nothing_outside_or_inside_the_stores_changed(world):
    """Last (zz): the sentinel folder and the DICOM source files are as they were; the log is kept."""
    assert tree_hash(world["sentinel"]) == world["before"]["sentinel"]
    assert tree_hash(world["dicom_studies"], skip=(".medclipsam",)) == world["before"]["dicom_source"]
    outside = sorted(p.name for p in world["root"].iterdir())
    assert outside == ["dicom_studies", "sentinel", "studies", "work_dicom", "work_nifti"], outside
    refused = [c for c in world["log"] if c["status"] >= 400]
    (world["root"] / "hostile_cases.json").write_text(json.dumps(world["log"], indent=1))
    print(f"\nhostile cases tried={len(world['log'])} refused={len(refused)} "
          f"statuses={sorted({c['status'] for c in world['log']})} log={world['root'] / 'hostile_cases.json'}")
    assert len(refused) == len(world["log"]) and len(refused) >= 100
    assert all(c["status"] < 500 for c in world["log"])
