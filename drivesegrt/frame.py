"""Frame: the one object passed between pipeline stages.

A Frame is created by a source (image + index + capture time), filled in by the infer stage
(class-id map) and the publish stage (overlay), and timed all along: ``stages_ms`` holds the
milliseconds each stage spent on it, in the order the stages ran.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

# Stage names, in pipeline order. frames.jsonl and summary.json use exactly these keys.
STAGES = ("capture", "preprocess", "infer", "postprocess", "figures", "overlay", "write")


@dataclass(eq=False)
class Frame:
    index: int                      # capture index (live sources: dropped frames keep their numbers)
    image: np.ndarray               # (H, W, 3) uint8 BGR, as decoded
    t_capture: float                # time.perf_counter() when the frame was captured
    wall_capture: float = field(default_factory=time.time)   # Unix time, for logs
    stem: str | None = None         # image sources: file stem (names overlays/masks)
    stages_ms: dict[str, float] = field(default_factory=dict)
    labels: np.ndarray | None = None    # (H, W) uint8 class ids at frame size
    overlay: np.ndarray | None = None   # (H, W, 3) uint8 BGR
    job: object | None = None           # the segmenter's Job, collected by the publish stage
    latency_ms: float | None = None     # capture -> published
    confidence: np.ndarray | None = None    # (H, W) uint8 top-class probability x 255, if asked
    temporal: str | None = None         # temporal smoothing of this frame: start | cut | smoothed
    figures: dict = field(default_factory=dict)   # driving figures for frames.jsonl (JSON-ready)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.image.shape[1], self.image.shape[0]

    def record(self) -> dict:
        """The frames.jsonl object for this frame."""
        rec = {"index": self.index, "capture_time": round(self.wall_capture, 6),
               "stages_ms": {k: round(v, 3) for k, v in self.stages_ms.items()},
               "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3)}
        if self.stem is not None:
            rec["stem"] = self.stem
        if self.temporal is not None:
            rec["temporal"] = self.temporal
        rec.update(self.figures)
        return rec
