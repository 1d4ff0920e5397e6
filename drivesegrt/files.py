"""File facts every stage shares: which suffixes are images, how to list them, how JSON is written."""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path

# Suffixes read as images (OpenCV decodes all of them), by sources, calibration and datasets.
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Suffixes taken for recorded drives when a folder is scanned (batch); a file named directly
# is opened whatever its suffix.
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".m4v", ".webm", ".ts", ".mts", ".m2ts", ".mpg",
              ".mpeg", ".flv", ".wmv", ".h264", ".h265", ".hevc")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS and path.is_file()


def image_paths(spec: str | Path) -> list[Path] | None:
    """Images named by a folder, a glob or one image file, in name order; None when ``spec``
    is none of these (e.g. a video file)."""
    spec = str(spec)
    p = Path(spec)
    if p.is_dir():
        return sorted(q for q in p.iterdir() if is_image(q))
    if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
        return [p]
    if any(ch in spec for ch in "*?["):
        return sorted(q for q in map(Path, glob.glob(spec)) if is_image(q))
    return None


def json_text(obj) -> str:
    """How every JSON output file is written: indented, one final newline."""
    return json.dumps(obj, indent=2) + "\n"


def write_json(path: str | Path, obj) -> None:
    """Atomic JSON write (tmp + rename): a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json_text(obj))
    os.replace(tmp, path)
