"""Image folders, globs and single image files, in name order."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import cv2

from ..files import IMAGE_EXTS
from .base import Source


def unique_stems(paths: list[Path]) -> list[str]:
    """One output stem per path, all different: the file's stem, except that a later file
    whose stem an earlier one has (``a.jpg``, ``a.png``) gets ``a-1`` (``a-2``, ... skipping
    stems another file has). Deterministic: the same paths in the same order, the same stems."""
    taken = set(Counter(p.stem for p in paths))
    seen: set[str] = set()
    stems = []
    for p in paths:
        stem = p.stem
        if stem in seen:
            k = 1
            while f"{stem}-{k}" in taken:
                k += 1
            stem = f"{stem}-{k}"
            taken.add(stem)
        seen.add(p.stem)
        stems.append(stem)
    return stems


class ImageSource(Source):
    """Image files in name order; an unreadable file is skipped with a warning and counted in
    ``frames_corrupt`` (ValueError only when none is readable). Outputs are named by stem;
    files that share a stem get unique ones (:func:`unique_stems`, listed in ``describe``)."""

    kind = "images"

    def __init__(self, spec: str, paths: list[Path]):
        super().__init__(spec)
        if not paths:
            raise FileNotFoundError(f"no images found at {spec} (extensions: {', '.join(IMAGE_EXTS)})")
        self._paths = paths
        self._stems = unique_stems(paths)
        self.renamed = {s: str(p) for s, p in zip(self._stems, paths) if s != p.stem}
        if self.renamed:
            names = [f"{Path(p).name} -> {s}" for s, p in list(self.renamed.items())[:3]]
            print(f"drivesegrt: warning: {spec}: {len(self.renamed)} image(s) share a stem with "
                  f"an earlier one; outputs renamed: {', '.join(names)}"
                  f"{', ...' if len(self.renamed) > 3 else ''} (all in summary.json "
                  f"source.renamed)", file=sys.stderr)
        self._pos = 0
        self._current: str | None = None
        self.frame_count = len(paths)
        self.fps = 1.0
        self._first = None
        first = self._next()
        if first is None:
            raise ValueError(f"{spec}: none of the {len(paths)} image(s) is readable "
                             f"(first: {paths[0]})")
        self.size = (first.shape[1], first.shape[0])
        self._first, self._first_stem = first, self._current

    def _next(self):
        if self._first is not None:
            image, self._first, self._current = self._first, None, self._first_stem
            return image
        while self._pos < len(self._paths):
            path, stem = self._paths[self._pos], self._stems[self._pos]
            self._pos += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                self._current = stem
                return image
            self.frames_corrupt += 1
            print(f"drivesegrt: warning: skipping unreadable image {path}", file=sys.stderr)
        return None

    def _stem(self):
        return self._current

    def describe(self) -> dict:
        return {**super().describe(), "renamed": self.renamed}
