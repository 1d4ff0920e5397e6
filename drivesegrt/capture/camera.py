"""Cameras (index or /dev/videoN) and network streams, read through a Reconnector."""
from __future__ import annotations

import cv2
import numpy as np

from .base import Source, _fps_or
from .reconnect import Backoff, Reconnector


class CaptureSource(Source):
    """Camera (index or /dev/videoN) or network stream through OpenCV/FFmpeg. Live.

    It must open and deliver a first frame now (else ValueError: bad input). Later failures
    are outages: the :class:`Reconnector` reopens with ``backoff`` and ends the stream after
    ``reconnect_timeout`` seconds away (None: keeps trying until the run is stopped).
    ``name``: the camera's name in a several-camera run (its outage messages carry it)."""

    live = True
    OPEN_TIMEOUT_MS = 10000
    READ_TIMEOUT_MS = 10000

    def __init__(self, spec: str, kind: str, reconnect_timeout: float | None = None,
                 backoff: Backoff = Backoff(), name: str | None = None):
        super().__init__(spec)
        self.kind = kind
        cap = self.open()
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise ValueError(f"{self._what()} {spec} opened but delivers no frames")
        self._first: np.ndarray | None = first
        self.size = (first.shape[1], first.shape[0])
        self.fps = _fps_or(cap.get(cv2.CAP_PROP_FPS))
        what = f"{self._what()} {spec}"
        self._stream = Reconnector(self.open, f"{name}: {what}" if name else what,
                                   reconnect_timeout, backoff, cap=cap)

    def _what(self) -> str:
        return "camera" if self.kind == "camera" else "stream"

    def open(self) -> cv2.VideoCapture:
        """A new capture of the device or URL; ValueError when it does not open."""
        if self.kind == "camera":
            target = int(self.spec) if self.spec.isdigit() else self.spec
            cap = cv2.VideoCapture(target)
        else:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.OPEN_TIMEOUT_MS,
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.READ_TIMEOUT_MS]
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise ValueError(f"{self._what()} {self.spec} does not open")
        return cap

    def _next(self):
        if self._first is not None:
            image, self._first = self._first, None
            return image
        return self._stream.read()

    @property
    def reconnects(self) -> int:
        return self._stream.reconnects

    @property
    def outage_s(self) -> float:
        return self._stream.outage_s

    @property
    def end_reason(self) -> str | None:
        """Why the stream ended on its own (reconnect timeout), else None."""
        return self._stream.gave_up

    def interrupt(self) -> None:
        self._stream.cancel()

    def close(self):
        self._stream.close()

    def describe(self) -> dict:
        return {**super().describe(), **self._stream.describe()}

