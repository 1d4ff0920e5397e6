"""Recorded video files (anything FFmpeg decodes)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .base import Source, _fps_or


class VideoFileSource(Source):
    """A recorded video. Decoding stops at the first frame FFmpeg cannot decode (truncated or
    corrupt file): every frame before it is delivered."""

    kind = "video"

    def __init__(self, path: str):
        super().__init__(path)
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"video not found: {path}")
        self._cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            raise ValueError(f"{path}: cannot open as a video (unknown or corrupt format)")
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise ValueError(f"{path}: no decodable video frames")
        self._first: np.ndarray | None = first
        self.size = (first.shape[1], first.shape[0])
        self.fps = _fps_or(self._cap.get(cv2.CAP_PROP_FPS))
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = n if n > 0 else None

    def _next(self):
        if self._first is not None:
            image, self._first = self._first, None
            return image
        ok, image = self._cap.read()
        return image if ok else None

    def close(self):
        self._cap.release()

