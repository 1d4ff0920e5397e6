"""Stage timing: host clocks (``time.perf_counter``) and percentile summaries.

Engines return host arrays (synchronized results), so host clocks around ``infer`` measure
the real inference time on CPU. CUDA paths must synchronize before reading the clock (or use
CUDA events); that lands with the GPU pipeline.
"""
from __future__ import annotations

import time
from collections import defaultdict

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
