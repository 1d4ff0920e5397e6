"""Several cameras in one run: ``--source NAME=URI`` texts and sources-file entries -> the
camera entries of the run config (name, uri, per-camera options).

    front=rtsp://car/front     named "front"
    /dev/video2                unnamed: cam<position> (cam0, cam1, ...)
    synthetic:?w=640&h=360     a '=' inside a URI is not a name: names are plain words

A name is letters, digits, '_' and '-' (it names the camera's output directory); a text whose
part before the first '=' is not such a word is a URI as a whole.
"""
from __future__ import annotations

import re

CAMERA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def split_name(text: str) -> tuple[str | None, str]:
    """``"front=rtsp://x"`` -> ("front", "rtsp://x"); ``"clip.mp4"`` -> (None, "clip.mp4")."""
    head, sep, rest = str(text).partition("=")
    if sep and CAMERA_NAME.fullmatch(head):
        return head, rest
    return None, str(text)


def camera_entries(texts) -> list[dict]:
    """``--source`` texts -> [{"name", "uri"}], unnamed ones called cam<position>."""
    return [{"name": name or f"cam{i}", "uri": uri}
            for i, (name, uri) in enumerate(map(split_name, texts))]


def file_entries(items: list, path) -> list[dict]:
    """A sources file's list -> camera entries: each item a mapping with ``uri`` (and
    optionally ``name`` and per-camera options) or a ``NAME=URI`` text; ValueError naming the
    file and the item otherwise."""
    entries = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            name, uri = split_name(item)
            entries.append({"name": name or f"cam{i}", "uri": uri})
            continue
        if not isinstance(item, dict) or "uri" not in item:
            raise ValueError(f"{path}: item {i + 1} must be a mapping with a 'uri' (and "
                             f"optionally 'name'), or a NAME=URI text; got {item!r}")
        entries.append({"name": f"cam{i}", **item})
    if not entries:
        raise ValueError(f"{path}: the sources list is empty")
    return entries
