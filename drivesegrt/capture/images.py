"""Image folders, globs and single image files, in name order."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2

from ..files import IMAGE_EXTS
from .base import Source


class ImageSource(Source):
    """Image files in name order; an unreadable file is skipped with a warning."""

    kind = "images"

    def __init__(self, spec: str, paths: list[Path]):
        super().__init__(spec)
        if not paths:
            raise FileNotFoundError(f"no images found at {spec} (extensions: {', '.join(IMAGE_EXTS)})")
        self._paths = paths
        self._pos = 0
        self._current: Path | None = None
        self.frames_failed = 0
        self.frame_count = len(paths)
        self.fps = 1.0
        first = cv2.imread(str(paths[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise ValueError(f"{paths[0]}: cannot read as an image")
        self.size = (first.shape[1], first.shape[0])

    def _next(self):
        while self._pos < len(self._paths):
            path = self._paths[self._pos]
            self._pos += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                self._current = path
                return image
            self.frames_failed += 1
            print(f"drivesegrt: warning: skipping unreadable image {path}", file=sys.stderr)
        return None

    def _stem(self):
        return self._current.stem if self._current else None

