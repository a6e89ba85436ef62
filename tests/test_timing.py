"""StageClock: per-stage seconds and the hooks benchmarks use (start, sync, stop)."""

from __future__ import annotations

import time

from medclipsam.timing import StageClock


class Recording(StageClock):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def start(self, name: str) -> None:
        self.events.append(f"start {name}")

    def sync(self) -> None:
        time.sleep(0.02)                 # queued work finishing: counted in the stage's time
        self.events.append("sync")

    def stop(self, name: str) -> None:
        self.events.append(f"stop {name}")


def test_hooks_run_in_order_and_sync_counts_in_the_stage():
    clock = Recording()
    with clock.stage("saliency"):
        pass
    with clock.stage("saliency"):
        pass
    assert clock.events == ["start saliency", "sync", "stop saliency"] * 2
    assert clock.seconds["saliency"] >= 0.04            # both syncs counted, accumulated
    assert clock.total() >= clock.seconds["saliency"]


def test_stage_time_is_recorded_when_the_stage_raises():
    clock = StageClock()
    try:
        with clock.stage("sam_encoder"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert "sam_encoder" in clock.seconds
