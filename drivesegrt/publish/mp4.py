"""Fragmented MP4 after a failed write: cut the file back to its last complete fragment.

overlay.mp4 is written as a fragmented MP4 (``ftyp``, an empty ``moov``, then one
``moof`` + ``mdat`` pair every quarter second), so every complete fragment is playable on its
own. When the disk fills up, the file ends inside a fragment; :func:`trim_to_complete` cuts it
at the end of the last complete top-level box (never between a ``moof`` and its ``mdat``), so
players and decoders read it to the end without errors, and says how many frames that kept.
Only box headers and the small ``moof`` boxes are read, never the video data.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO


def _boxes(f: BinaryIO, start: int, end: int):
    """(type, offset, size) of the complete boxes between ``start`` and ``end``, in order;
    stops at the first box that is cut off or malformed."""
    o = start
    while o + 8 <= end:
        f.seek(o)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:                         # a 64-bit size follows the type
            if o + 16 > end:
                return
            size, header = struct.unpack(">Q", f.read(8))[0], 16
        elif size == 0:                       # "to the end of the file"
            size = end - o
        if size < header or o + size > end:
            return
        yield kind, o, size
        o += size


def _trun_samples(moof: bytes) -> int:
    """Samples listed by the ``trun`` boxes of one ``moof`` (its bytes, header included)."""
    total = 0
    o = 8
    while o + 8 <= len(moof):
        size, kind = struct.unpack(">I4s", moof[o:o + 8])
        if size < 8:
            break
        if kind == b"traf":
            total += _trun_samples(moof[o:o + size])
        elif kind == b"trun" and o + 16 <= len(moof):   # full box: version+flags, then count
            total += struct.unpack(">I", moof[o + 12:o + 16])[0]
        o += size
    return total


def trim_to_complete(path: str | Path) -> int:
    """Truncate the fragmented MP4 at ``path`` to its complete top-level boxes, a ``moof``
    never kept without its ``mdat``; in place (truncating needs no free space). Returns the
    number of frames the kept fragments hold."""
    path = Path(path)
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        keep, frames, pending = 0, 0, 0
        for kind, offset, size in _boxes(f, 0, end):
            if kind == b"moof":
                f.seek(offset)
                pending = _trun_samples(f.read(size))
                continue
            if kind == b"mdat":
                frames += pending
            pending = 0
            keep = offset + size
    if keep < end:
        os.truncate(path, keep)
    return frames
