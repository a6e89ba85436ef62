"""Per-stage timing of a pipeline run.

The pipeline times each stage with a :class:`StageClock`; a benchmark passes a subclass that
also records memory, so timings come from the same code path users run.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class StageClock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def start(self, name: str) -> None:
        """Called when a stage begins (subclasses hook in here)."""

    def stop(self, name: str) -> None:
        """Called when a stage ends (subclasses hook in here)."""

    def sync(self) -> None:
        """Called at the end of a stage before its time is read (e.g. wait for queued GPU work)."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.start(name)
        t = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
            self.stop(name)

    def total(self) -> float:
        return time.perf_counter() - self._t0
