"""MONAI Label's background tasks end when the server stops.

MONAI Label 0.8.5 runs every training, scoring and batch-inference task as a subprocess
(``python -m monailabel.interfaces.utils.app -m METHOD -r JSON``), started with ``subprocess.Popen``
from a worker thread (``monailabel/utils/async_tasks/utils.py`` ``_task_func``) and remembered in
``background_processes``; nothing ends them when the server stops. uvicorn stops on SIGINT/SIGTERM
by shutting down gracefully and then raising the signal again with its default action, so the
server process dies and a running task is orphaned: the scoring that MONAI Label starts at every
start-up (``MONAI_LABEL_AUTO_UPDATE_SCORING``) was seen running 18 s after its server had stopped,
a training task would run to its end.

:func:`tie_to_server` (called once from :class:`~medclipsam.serving.app_setup.AppSetup`) takes two
measures, in the two processes it can run in:

1. **In the server** (the app built inside uvicorn's ``serve``, whose SIGINT/SIGTERM handlers are in
   place): those handlers are chained, so a stop first ends every running task process and its
   descendants (SIGTERM; SIGKILL after :data:`GRACE_S`), then lets uvicorn shut down. This is the
   normal stop (Ctrl-C, ``kill``, ``systemctl stop``), and the only remedy for a SIGINT stop,
   where Python would otherwise wait at exit for the worker thread still reading the task's output.
   The server's pid is put in the environment (:data:`SERVER_PID_ENV`), which MONAI Label copies
   into every task.
2. **In a task process** (MONAI Label rebuilds the app there from the same ``main.py``):
   ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` — Linux sends the task SIGTERM when the server thread that
   started it dies, i.e. when the server dies in any way (SIGKILL, a crash), which no handler in the
   server can see. A task whose server had already died before this point exits at once. Elsewhere
   than Linux a daemon thread watches the parent pid instead.

A ``preexec_fn`` on MONAI Label's ``Popen`` would do (2) too, but that call cannot be given one
without replacing MONAI Label's code; setting the death signal from inside the task is equivalent
(the task runs nothing of its own before the app is built but imports).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable

logger = logging.getLogger(__name__)

SERVER_PID_ENV = "MEDCLIPSAM_SERVER_PID"
TASK_MODULE = "monailabel.interfaces.utils.app"      # what MONAI Label runs as a task process
GRACE_S = 5.0                                        # SIGTERM → SIGKILL for task processes
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1                                # <linux/prctl.h>


@dataclass(frozen=True)
class Tied:
    """What :func:`tie_to_server` did: ``role`` is ``server``, ``task`` or ``none``, ``how`` says how."""

    role: str
    how: str


def running_task_processes() -> list[Any]:
    """MONAI Label's running background task processes (``psutil.Process``), descendants included:
    those MONAI Label remembers, and any child process of this one running :data:`TASK_MODULE` (a task
    started a moment ago may not be remembered yet when a stop comes)."""
    import psutil

    found: dict[int, Any] = {}

    def add(proc: Any) -> None:
        try:
            for p in [proc, *proc.children(recursive=True)]:
                found[p.pid] = p
        except psutil.Error:
            pass

    try:
        from monailabel.utils.async_tasks.utils import background_processes
    except ImportError:
        background_processes = {}
    for by_id in list(background_processes.values()):
        for popen in list(by_id.values()):
            if popen.poll() is None:
                try:
                    add(psutil.Process(popen.pid))
                except psutil.NoSuchProcess:
                    continue
    try:
        children = psutil.Process().children(recursive=False)
    except psutil.Error:
        children = []
    for child in children:
        try:
            if child.pid not in found and TASK_MODULE in " ".join(child.cmdline()):
                add(child)
        except psutil.Error:
            continue
    return list(found.values())


def end_task_processes(grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM every running task process (and its descendants), SIGKILL those still there after
    ``grace_s``; returns their pids."""
    import psutil

    procs = running_task_processes()
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return [p.pid for p in procs]


def _is_uvicorn_handler(handler: Any) -> bool:
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("uvicorn")


def _chain(previous: Callable[[int, Any], Any]) -> Callable[[int, Any], Any]:
    def on_stop(signum: int, frame: Any) -> None:
        pids = end_task_processes()
        if pids:
            logger.info("medclipsam: server stopping (%s): ended background task process(es) %s",
                        signal.Signals(signum).name, ", ".join(map(str, pids)))
        previous(signum, frame)

    on_stop.medclipsam_chained = True                # type: ignore[attr-defined]
    return on_stop


def _tie_server() -> Tied:
    handlers = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    if any(getattr(h, "medclipsam_chained", False) for h in handlers.values()):
        return Tied("server", "already tied")
    for s, h in handlers.items():
        signal.signal(s, _chain(h))
    os.environ[SERVER_PID_ENV] = str(os.getpid())
    return Tied("server", "SIGINT/SIGTERM end the background task processes before uvicorn's shutdown")


def _die_with(server_pid: int) -> str:
    """Make this process get SIGTERM when ``server_pid`` (its parent) dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        how = "prctl(PR_SET_PDEATHSIG, SIGTERM)"
    else:
        def watch() -> None:
            while os.getppid() == server_pid:
                threading.Event().wait(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="medclipsam-parent-watch", daemon=True).start()
        how = "a thread watching the parent pid"
    if os.getppid() != server_pid:                   # the server died before the line above
        os.kill(os.getpid(), signal.SIGTERM)
    return how


def tie_to_server() -> Tied:
    """Tie MONAI Label's background task processes to the server's life (module docstring). Safe to
    call in any process: it does nothing outside a uvicorn server's main thread and a task process
    that server started."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) == TASK_MODULE:
        server = os.environ.get(SERVER_PID_ENV, "")
        if not server.isdigit():
            return Tied("none", f"a task process not started by a medclipsam server (no {SERVER_PID_ENV})")
        tied = Tied("task", _die_with(int(server)))
    elif threading.current_thread() is threading.main_thread() and _is_uvicorn_handler(
            signal.getsignal(signal.SIGTERM)):
        tied = _tie_server()
    else:
        return Tied("none", "not a uvicorn server's main thread nor a task process")
    logger.info("medclipsam: background tasks tied to the server (%s: %s)", tied.role, tied.how)
    return tied


__all__ = ["tie_to_server", "end_task_processes", "running_task_processes", "Tied", "SERVER_PID_ENV", "GRACE_S"]
