"""A real ``monailabel start_server`` starts without a traceback and leaves no process behind when it
stops (issue 21): the scoring MONAI Label runs at every start ends with "nothing to score yet" before
any training, and a background task still running when the server stops ends with it
(:mod:`medclipsam.serving.background`)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import psutil
import pytest
import requests

from servers import monailabel_server

ROOT = Path(__file__).resolve().parents[1]
PHANTOM = ROOT / "sample-data" / "phantoms" / "ct_chest"
TASK = "monailabel.interfaces.utils.app"


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _server_process() -> psutil.Process:
    [server] = [p for p in psutil.Process().children() if "start_server" in " ".join(p.cmdline())]
    return server


def _task_processes(server: psutil.Process, timeout: float) -> list[psutil.Process]:
    t0 = time.time()
    while time.time() - t0 < timeout:
        tasks = [p for p in server.children(recursive=True) if TASK in " ".join(p.cmdline())]
        if tasks:
            return tasks
        time.sleep(0.1)
    raise AssertionError(f"no background task process of the server appeared within {timeout} s")


def _wait_done(url: str, timeout: float) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        r = requests.get(f"{url}/scoring/", timeout=10)
        if r.status_code == 200 and r.json().get("status") in ("DONE", "ERROR", "STOPPED"):
            return r.json()
        time.sleep(0.5)
    raise AssertionError(f"the start-up scoring did not finish within {timeout} s")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_clean_start_and_clean_stop(tmp_path):
    studies = tmp_path / "studies"
    shutil.copytree(PHANTOM, studies / "ct")
    work = tmp_path / "server"
    log = work / "monailabel.log"
    with monailabel_server(studies, work) as url:
        server = _server_process()
        # the scoring of every start, with no trained model: a normal, logged outcome
        task = _wait_done(url, 240)
        assert task["status"] == "DONE", task
        text = log.read_text()
        assert "nothing to score yet" in text
        assert "Traceback" not in text, text[-3000:]
        # a task running when the server stops
        r = requests.post(f"{url}/scoring/medclipsam_uncertainty", json={}, timeout=30)
        assert r.status_code == 200, r.text
        pids = [p.pid for p in _task_processes(server, 30)]
        assert _alive(pids)
    # the server has stopped (servers._stop waited for it): nothing of it is left
    assert not _alive([server.pid])
    t0 = time.time()
    while _alive(pids) and time.time() - t0 < 3:
        time.sleep(0.1)
    assert not _alive(pids), f"background task process(es) {_alive(pids)} outlived the server"
    text = log.read_text()
    assert "ended background task process" in text
    assert "Traceback" not in text, text[-3000:]


PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", CHILD])
print(child.pid, flush=True)
time.sleep(120)
"""
CHILD = """
import os, time
from medclipsam.serving.background import _die_with
_die_with(int(os.environ.get("SERVER", os.getppid())))
print("tied", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux")
def test_a_task_process_dies_with_a_killed_server():
    """SIGKILL leaves the server no chance to end its tasks: the task's death signal does."""
    import os
    import signal
    import subprocess
    import sys

    parent = subprocess.Popen([sys.executable, "-c", f"CHILD = {CHILD!r}\n{PARENT}"], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "tied" and _alive([child])
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        t0 = time.time()
        while _alive([child]) and time.time() - t0 < 5:
            time.sleep(0.05)
        assert not _alive([child]), "the task outlived its killed server"
    finally:
        parent.kill()
    # a task whose server is already gone when it ties itself ends at once
    r = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, "SERVER": "1"}, capture_output=True,
                       timeout=60)
    assert r.returncode == -signal.SIGTERM and b"tied" not in r.stdout


def test_a_task_not_yet_remembered_by_monailabel_is_still_ended():
    """A task process MONAI Label started but has not put in ``background_processes`` yet (a stop
    right after a request) is found as a child running the task module, and ended."""
    import subprocess
    import sys

    from medclipsam.serving.background import TASK_MODULE, end_task_processes, running_task_processes

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    task = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", TASK_MODULE])
    try:
        found = [p.pid for p in running_task_processes()]
        assert task.pid in found and other.pid not in found
        assert task.pid in end_task_processes(grace_s=5)
        assert task.wait(timeout=10) is not None and other.poll() is None
    finally:
        for p in (task, other):
            p.kill()
            p.wait()
