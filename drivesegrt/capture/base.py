"""The Source interface: a blocking frame reader (``read() -> Frame | None``; None = end).

What the capture stage and the pipeline read from any source is declared here: kind, live,
fps, size, frame_count, and the counters summary.json reports (frames_read, frames_corrupt,
reconnects, outage_s, end_reason, size_changes). Sources that never reconnect or fail keep
the defaults.
"""
from __future__ import annotations

import math
import os
import sys
from abc import ABC, abstractmethod

import cv2
import numpy as np

from ..frame import Frame
from ..timing import now


class Source(ABC):
    """A blocking frame reader. Subclasses set ``kind``, ``live``, ``fps``, ``size``."""

    kind: str = "?"               # video | images | camera | stream | synthetic
    live: bool = False            # live: drop stale frames; recorded: every frame in order
    fps: float = 30.0             # nominal frames per second (the writer's fps)
    size: tuple[int, int] = (0, 0)   # (width, height) of the first frame
    frame_count: int | None = None   # recorded sources: frames expected, when known
    # What summary.json reports of every source (defaults: a source that never fails or
    # reconnects). Cameras and streams count outages; image folders count unreadable files,
    # video files the frames FFmpeg could not decode.
    frames_corrupt: int = 0          # frames the source could not decode (skipped, never in frames_in)
    reconnects: int = 0              # times the stream was reopened after an outage
    outage_s: float = 0.0            # seconds spent without the stream
    end_reason: str | None = None    # why the source ended on its own before its end, if it did

    def __init__(self, spec: str):
        self.spec = spec
        self.frames_read = 0
        self.size_changes = 0
        self._last_shape: tuple[int, ...] | None = None

    @abstractmethod
    def _next(self) -> np.ndarray | None:
        """The next decoded (H, W, 3) uint8 BGR image, or None at end of stream."""

    def read(self) -> Frame | None:
        """Next Frame (index, capture time, ``capture`` ms = decode time) or None at the end."""
        t0 = now()
        image = self._next()
        if image is None:
            return None
        t1 = now()
        if image.shape != self._last_shape:
            if self._last_shape is not None and self.kind != "images":   # folders: sizes vary
                self._size_changed(self._last_shape, image.shape)
            self._last_shape = image.shape
        frame = Frame(index=self.frames_read, image=image, t_capture=t1, stem=self._stem())
        frame.stages_ms["capture"] = (t1 - t0) * 1e3
        self.frames_read += 1
        return frame

    def _size_changed(self, old: tuple[int, ...], new: tuple[int, ...]) -> None:
        self.size_changes += 1
        print(f"drivesegrt: warning: {self.spec}: frame size changed from {old[1]}x{old[0]} to "
              f"{new[1]}x{new[0]} at frame {self.frames_read} (overlay video keeps "
              f"{self.size[0]}x{self.size[1]}; masks follow the source)", file=sys.stderr)

    def _stem(self) -> str | None:
        return None

    def interrupt(self) -> None:
        """Wake a ``read`` blocked in a wait of ours (reconnect backoff) so the capture thread
        can stop; it then returns None. Called from another thread."""

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"spec": self.spec, "kind": self.kind, "live": self.live, "fps": round(self.fps, 3),
                "width": self.size[0], "height": self.size[1]}


def quiet_decoder_logs() -> None:
    """Silence FFmpeg's and OpenCV's own log lines (the CLI does, unless --verbose).

    A stream that is down makes FFmpeg print "Connection refused" and OpenCV a warning, on
    every reconnect attempt; our messages already say it once, in one line. Only FFmpeg's
    fatal messages stay. OpenCV reads OPENCV_FFMPEG_LOGLEVEL when it first uses FFmpeg, so
    this must run before the first capture opens; a value the user set is kept."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")           # AV_LOG_FATAL
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


# Frame rates a source may declare: the overlay video is written at the source's rate, and
# FFmpeg's muxers refuse time bases far outside this range.
FPS_RANGE = (0.01, 1000.0)


def _fps_or(value: float, default: float = 30.0) -> float:
    """``value`` when it is a usable frame rate (finite, within FPS_RANGE), else ``default``."""
    value = float(value or 0)
    return value if math.isfinite(value) and FPS_RANGE[0] <= value <= FPS_RANGE[1] else default

