"""Stage timing: host clocks, CUDA events (:class:`StageTimer`) and percentile summaries.

Engines on the CPU return host arrays (synchronized results), so host clocks around ``infer``
measure the real inference time. On a CUDA device work is queued asynchronously, so a host clock
measures only the queueing; :class:`StageTimer` records CUDA events on the stream instead and
reads them once the frame is done. Both give the same stage names, so frames.jsonl and
summary.json look the same on either device.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np

PERCENTILES = (50, 95, 99)


def now() -> float:
    return time.perf_counter()


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def percentiles(values) -> dict[str, float]:
    """{"p50","p95","p99"} of ``values`` in their unit (0.0 each when empty)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {f"p{p}": 0.0 for p in PERCENTILES}
    return {f"p{p}": round(float(v), 3) for p, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES))}


class StageStats:
    """Accumulates per-stage milliseconds over a run; ``summary()`` gives the percentiles."""

    def __init__(self):
        self._ms: dict[str, list[float]] = defaultdict(list)

    def add(self, stage: str, ms: float) -> None:
        self._ms[stage].append(ms)

    def add_all(self, stages_ms: dict[str, float]) -> None:
        for k, v in stages_ms.items():
            self._ms[k].append(v)

    def stages(self) -> list[str]:
        return list(self._ms)

    def values(self, stage: str) -> list[float]:
        return self._ms.get(stage, [])

    def mean(self, stage: str) -> float:
        v = self._ms.get(stage)
        return float(np.mean(v)) if v else 0.0

    def summary(self) -> dict[str, dict[str, float]]:
        return {k: percentiles(v) for k, v in self._ms.items()}


class RateMeter:
    """Frames per second over a sliding window of the last ``window`` events (for the HUD)."""

    def __init__(self, window: int = 30):
        self._times: list[float] = []
        self._window = window

    def tick(self, t: float | None = None) -> float:
        self._times.append(time.perf_counter() if t is None else t)
        if len(self._times) > self._window:
            del self._times[0]
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class StageTimer:
    """Milliseconds per named stage of one frame, on any device, with no host sync per stage.

    CPU (``device`` None or cpu): ``start``/``stop`` read the host clock (the work is done when
    ``stop`` is called). CUDA: they record CUDA events on ``stream`` (default: the current
    stream); ``read`` waits for each stage's stop event and returns ``elapsed_time``. A stage may
    start on one stream and stop on another (e.g. postprocess ends after the download stream's
    copy): events are timestamps on one GPU timeline. ``add_host_ms`` adds host-side work done
    for a stage (e.g. staging a frame into pinned memory) to its device time.

    Events are created once per stage and reused frame after frame; one timer per in-flight
    frame (a timer's events are overwritten by its next frame). Not thread-safe.
    """

    def __init__(self, device=None):
        self.cuda = device is not None and getattr(device, "type", str(device)).startswith("cuda")
        self._events: dict[str, tuple] = {}       # stage -> (start, stop) torch.cuda.Event
        self._t0: dict[str, float] = {}
        self._ms: dict[str, float] = {}           # host-measured or added milliseconds
        self._order: list[str] = []               # stages in the order they started

    def reset(self) -> None:
        """Forget the previous frame's stages (the events themselves are kept for reuse)."""
        self._t0.clear()
        self._ms.clear()
        self._order.clear()

    def _pair(self, stage: str):
        pair = self._events.get(stage)
        if pair is None:
            import torch

            pair = self._events[stage] = (torch.cuda.Event(enable_timing=True),
                                          torch.cuda.Event(enable_timing=True))
        return pair

    def start(self, stage: str, stream=None) -> None:
        if stage not in self._order:
            self._order.append(stage)
        if self.cuda:
            self._pair(stage)[0].record(stream)
        else:
            self._t0[stage] = time.perf_counter()

    def stop(self, stage: str, stream=None) -> None:
        if self.cuda:
            self._pair(stage)[1].record(stream)
        else:
            self._ms[stage] = self._ms.get(stage, 0.0) + ms_since(self._t0.pop(stage))

    @contextmanager
    def stage(self, name: str, stream=None):
        """``with timer.stage("infer", stream):`` = start + stop around the block."""
        self.start(name, stream)
        yield
        self.stop(name, stream)

    def add_host_ms(self, stage: str, ms: float) -> None:
        if stage not in self._order:
            self._order.append(stage)
        self._ms[stage] = self._ms.get(stage, 0.0) + ms

    def read(self) -> dict[str, float]:
        """{stage: ms} in the order the stages started. CUDA: blocks until each stage's stop
        event has completed (call it when the frame's results are needed anyway)."""
        out = {}
        for stage in self._order:
            ms = self._ms.get(stage, 0.0)
            if self.cuda and stage in self._events:
                start, stop = self._events[stage]
                stop.synchronize()
                ms += start.elapsed_time(stop)
            out[stage] = ms
        return out
