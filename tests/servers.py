"""Real services for the app tests: ``monailabel start_server`` and Orthanc (Debian ``orthanc`` +
``orthanc-dicomweb``) started in subprocesses on free loopback ports, and a multipart reader for
MONAI Label's infer responses."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Iterator

import requests

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "apps" / "medclipsam"
ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({proc.returncode}); its log:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout} s; log:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def monailabel_server(studies: str | Path, workdir: Path, conf: dict[str, str] | None = None,
                      env: dict[str, str] | None = None, timeout: float = 180) -> Iterator[str]:
    """``monailabel start_server --app apps/medclipsam --studies STUDIES`` on a free loopback port, as
    a user starts it (the venv's ``monailabel`` script; only the venv's bin on PATH besides the
    system's, no PYTHONPATH — the app sets what it needs). Yields the base URL."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    exe = bin_dir / "monailabel"
    cmd = [str(exe), "start_server", "--app", str(APP), "--studies", str(studies), "-i", "127.0.0.1", "-p", str(port)]
    conf = {"model_dir": str(workdir / "model"), **(conf or {})}      # never the repository's app folder
    for k, v in conf.items():
        cmd += ["--conf", k, v]
    e = {k: v for k, v in os.environ.items() if not k.startswith("MONAI_LABEL") and k != "PYTHONPATH"}
    e["PATH"] = f"{bin_dir}{os.pathsep}{e.get('PATH', '')}"
    e["OMP_NUM_THREADS"] = e.get("OMP_NUM_THREADS", "2")
    e.update(env or {})
    with _service(cmd, workdir, "monailabel.log", port, "/info/", timeout, env=e) as url:
        yield url


@contextmanager
def _service(cmd: list[str], workdir: Path, log_name: str, port: int, probe: str, timeout: float,
             env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``cmd`` in ``workdir`` (output to ``log_name``) until ``probe`` answers on ``port``; yields the
    base URL and stops the process afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / log_name
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{url}{probe}", proc, log, timeout)
        yield url
    finally:
        _stop(proc)


def orthanc_available() -> str | None:
    """None when Orthanc with DICOMweb can run here, else why not."""
    if ORTHANC is None:
        return "Orthanc is not installed (Debian: apt-get install orthanc orthanc-dicomweb; .ci/run does it)"
    if not DICOMWEB_PLUGIN.exists():
        return f"Orthanc's DICOMweb plugin {DICOMWEB_PLUGIN} is missing (apt-get install orthanc-dicomweb)"
    return None


@contextmanager
def orthanc_server(workdir: Path, timeout: float = 60) -> Iterator[str]:
    """Orthanc on a free loopback port with DICOMweb at ``/dicom-web/`` and storage in ``workdir``;
    yields its base URL."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "medclipsam-test", "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"), "HttpPort": port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomServerEnabled": False, "HttpServerEnabled": True,
        "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": 1,
    }
    cfg = workdir / "orthanc.json"
    cfg.write_text(json.dumps(config))
    with _service([ORTHANC, str(cfg)], workdir, "orthanc.log", port, "/system", timeout) as url:
        yield url


def check_seg_response(response: requests.Response, series_uid: str, path: Path):
    """A DICOM SEG answer of ``?output=dicom_seg``: saved to ``path``, referencing the series, valid
    (dciodvfy, when installed); returns the data set."""
    import pydicom

    from medclipsam.dicom.validate import dciodvfy_available, validate_with_dciodvfy

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom")
    path.write_bytes(response.content)
    seg = pydicom.dcmread(path)
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    if dciodvfy_available():
        report = validate_with_dciodvfy(path)
        assert report.ok, report.errors
    return seg


def multipart(response: requests.Response) -> dict[str, bytes]:
    """The parts of a ``multipart/form-data`` response by name (MONAI Label's infer: params + image)."""
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + response.content)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in msg.iter_parts()}
