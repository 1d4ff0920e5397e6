"""Frame sources and the capture stage.

``open_source(spec)`` understands one string (``--source``):

    video file          path/to/drive.mp4 (anything FFmpeg decodes)
    image folder/glob   path/to/dir, 'path/*.png', or one image file; name order, stems kept
    camera              0, 1, ... or /dev/videoN
    network stream      rtsp://, rtsps://, http(s)://, udp://, tcp://, rtmp://, srt://, ...
    synthetic           synthetic:  or  synthetic:?w=960&h=540&fps=30&frames=300&live=0&seed=0

A Source is a plain blocking reader (``read() -> Frame | None``; None = end of stream). The
capture *stage* wraps it in a reader thread chosen by the source's kind (``open_reader``):

* recorded sources (file, images, synthetic): :class:`Prefetch` decodes ahead into a bounded
  queue — every frame, in order, back-pressure instead of drops;
* live sources (camera, stream, ``synthetic:?live=1``): :class:`LatestFrame` keeps only the
  newest frame; a frame replaced before the pipeline took it is dropped and counted, so
  latency stays bounded when inference is slower than the camera.

Cameras and network streams survive outages: :class:`CaptureSource` reads through a
:class:`~drivesegrt.capture.reconnect.Reconnector`, which reopens with backoff when frames stop and gives
up after ``reconnect_timeout`` seconds (then the source ends like a file, and the run finalizes).
A frame size change mid-stream is logged; frames keep their own size (sinks decide: the
overlay video keeps its first size, masks follow the frame). OpenCV's FFmpeg backend already
scales a stream that switches resolution to its first size, so streams rarely show one.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ..files import image_paths
from .base import Source, quiet_decoder_logs
from .camera import CaptureSource
from .images import ImageSource
from .reader import LatestFrame, Prefetch, open_reader
from .reconnect import Backoff
from .synthetic import SyntheticSource
from .video import VideoFileSource

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt", "rtp", "mms")

__all__ = ["Source", "VideoFileSource", "ImageSource", "CaptureSource", "SyntheticSource",
           "Prefetch", "LatestFrame", "open_source", "open_reader", "quiet_decoder_logs",
           "STREAM_SCHEMES"]


def open_source(spec: str, reconnect_timeout: float | None = None,
                backoff: Backoff = Backoff(), name: str | None = None) -> Source:
    """The Source named by ``spec`` (see the module docstring); errors name the spec.
    reconnect_timeout/backoff: outage handling of cameras and streams (CaptureSource); name:
    the camera's, in its outage messages (several cameras)."""
    spec = str(spec).strip()
    if not spec:
        raise ValueError("empty --source")
    if spec.startswith("synthetic:") or spec == "synthetic":
        return SyntheticSource(spec)
    if spec.isdigit() or spec.startswith("/dev/video"):
        if spec.startswith("/dev/") and not Path(spec).exists():
            raise ValueError(f"camera {spec} does not open (no such device)")
        return CaptureSource(spec, "camera", reconnect_timeout, backoff, name)
    try:
        url = urlsplit(spec)
        url.port                              # parses host and port: "[::1", ":x" fail here
    except ValueError as e:
        raise ValueError(f"malformed source URL {spec!r} ({e})") from None
    scheme = url.scheme.lower()
    if "://" in spec:
        if scheme == "file":
            return open_source(url.path, reconnect_timeout, backoff, name)
        if scheme not in STREAM_SCHEMES:
            raise ValueError(f"unsupported stream scheme {scheme!r}; allowed: "
                             f"{', '.join(STREAM_SCHEMES)}")
        return CaptureSource(spec, "stream", reconnect_timeout, backoff, name)
    paths = image_paths(spec)
    if paths is not None:
        return ImageSource(spec, paths)
    if Path(spec).exists():
        return VideoFileSource(spec)
    raise FileNotFoundError(f"source not found: {spec}")


