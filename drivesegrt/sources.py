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
:class:`~drivesegrt.stream.Reconnector`, which reopens with backoff when frames stop and gives
up after ``reconnect_timeout`` seconds (then the source ends like a file, and the run finalizes).
A frame size change mid-stream is logged; frames keep their own size (sinks decide: the
overlay video keeps its first size, masks follow the frame). OpenCV's FFmpeg backend already
scales a stream that switches resolution to its first size, so streams rarely show one.
"""
from __future__ import annotations

import glob
import math
import os
import queue
import sys
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import cv2
import numpy as np

from .frame import Frame
from .stream import Backoff, Reconnector
from .timing import now

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt", "rtp", "mms")


class Source(ABC):
    """A blocking frame reader. Subclasses set ``kind``, ``live``, ``fps``, ``size``."""

    kind: str = "?"               # video | images | camera | stream | synthetic
    live: bool = False            # live: drop stale frames; recorded: every frame in order
    fps: float = 30.0             # nominal frames per second (the writer's fps)
    size: tuple[int, int] = (0, 0)   # (width, height) of the first frame
    frame_count: int | None = None   # recorded sources: frames expected, when known
    reconnects: int = 0

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


def _fps_or(value: float, default: float = 30.0) -> float:
    return float(value) if value and math.isfinite(value) and 0 < value < 1000 else default


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


class CaptureSource(Source):
    """Camera (index or /dev/videoN) or network stream through OpenCV/FFmpeg. Live.

    It must open and deliver a first frame now (else ValueError: bad input). Later failures
    are outages: the :class:`Reconnector` reopens with ``backoff`` and ends the stream after
    ``reconnect_timeout`` seconds away (None: keeps trying until the run is stopped)."""

    live = True
    OPEN_TIMEOUT_MS = 10000
    READ_TIMEOUT_MS = 10000

    def __init__(self, spec: str, kind: str, reconnect_timeout: float | None = None,
                 backoff: Backoff = Backoff()):
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
        self._stream = Reconnector(self.open, f"{self._what()} {spec}", reconnect_timeout,
                                   backoff, cap=cap)

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


class SyntheticSource(Source):
    """Generated driving-like frames: sky, buildings, a road in perspective with moving lane
    dashes, poles and a car drifting across. Recorded by default (every frame, as fast as
    asked); ``live=1`` paces frames in real time at ``fps`` like a camera."""

    kind = "synthetic"
    OPTIONS = {"w": 960, "h": 540, "fps": 30.0, "frames": 300, "live": 0, "seed": 0}

    def __init__(self, spec: str):
        super().__init__(spec)
        opts = dict(self.OPTIONS)
        query = spec.split("?", 1)[1] if "?" in spec else ""
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key not in opts:
                raise ValueError(f"synthetic: unknown option {key!r}; allowed: {', '.join(opts)}")
            try:
                opts[key] = type(self.OPTIONS[key])(float(value) if key == "fps" else int(value))
            except ValueError:
                raise ValueError(f"synthetic: option {key}={value!r} is not a number") from None
        if opts["w"] < 32 or opts["h"] < 32 or opts["fps"] <= 0 or opts["frames"] < 0:
            raise ValueError("synthetic: need w, h >= 32, fps > 0, frames >= 0 (0 = endless)")
        self.size = (opts["w"], opts["h"])
        self.fps = opts["fps"]
        self.live = bool(opts["live"])
        self.frame_count = opts["frames"] or None
        self._rng = np.random.default_rng(opts["seed"])
        self._background = self._draw_background()
        self._t_next = None

    def _draw_background(self) -> np.ndarray:
        w, h = self.size
        img = np.empty((h, w, 3), np.uint8)
        horizon = int(h * 0.45)
        sky = np.linspace(235, 170, horizon, dtype=np.float32)
        img[:horizon] = np.stack([sky, sky * 0.85, sky * 0.6], -1).astype(np.uint8)[:, None]  # BGR
        img[horizon:] = (70, 110, 80)                                  # verge (BGR green-grey)
        x = 0
        while x < w:                                                   # buildings
            bw = int(self._rng.integers(w // 16, w // 6))
            bh = int(self._rng.integers(h // 10, int(h * 0.3)))
            shade = int(self._rng.integers(70, 150))
            cv2.rectangle(img, (x, horizon - bh), (x + bw, horizon), (shade, shade, shade + 10), -1)
            x += bw + int(self._rng.integers(2, w // 40 + 3))
        cx = w // 2
        sidewalk = np.array([[cx - w // 30, horizon], [cx + w // 30, horizon],
                             [w + w // 3, h], [-w // 3, h]], np.int32)
        road = np.array([[cx - w // 50, horizon], [cx + w // 50, horizon],
                         [w + w // 8, h], [-w // 8, h]], np.int32)
        cv2.fillPoly(img, [sidewalk], (150, 150, 160))
        cv2.fillPoly(img, [road], (90, 85, 85))
        self._horizon = horizon
        return img

    def _road_x(self, y: float, side: float) -> float:
        """x of a line on the road at row y; side in [-1, 1] across the road at the bottom."""
        w, h = self.size
        t = (y - self._horizon) / (h - self._horizon)
        return w / 2 + side * t * (w / 2 + w / 8)

    def _next(self):
        n = self.frames_read
        if self.frame_count is not None and n >= self.frame_count:
            return None
        if self.live:                      # pace like a camera at self.fps
            t = time.perf_counter()
            self._t_next = t if self._t_next is None else max(self._t_next, t - 1.0)
            if self._t_next > t:
                time.sleep(self._t_next - t)
            self._t_next += 1.0 / self.fps
        w, h = self.size
        img = self._background.copy()
        hz = self._horizon
        phase = (n * 0.04) % 1.0
        for k in range(8):                  # lane dashes moving towards the viewer
            t0 = ((k + phase) / 8) ** 2
            t1 = min(1.0, ((k + phase + 0.45) / 8) ** 2)
            y0, y1 = hz + t0 * (h - hz), hz + t1 * (h - hz)
            for side in (-0.35, 0.35):
                pts = np.array([[self._road_x(y0, side) - 1 - 6 * t0, y0],
                                [self._road_x(y0, side) + 1 + 6 * t0, y0],
                                [self._road_x(y1, side) + 1 + 6 * t1, y1],
                                [self._road_x(y1, side) - 1 - 6 * t1, y1]], np.int32)
                cv2.fillPoly(img, [pts], (230, 230, 230))
        for k in range(3):                  # poles passing by on both sides
            t = ((k + phase) / 3) ** 2
            y = hz + t * (h - hz)
            for side in (-1.15, 1.15):
                x = int(self._road_x(y, side))
                ph = int(10 + t * h * 0.5)
                cv2.rectangle(img, (x - 1 - int(4 * t), int(y) - ph), (x + 1 + int(4 * t), int(y)),
                              (60, 60, 60), -1)
        cx = int(w / 2 + w * 0.18 * math.sin(n * 0.03))        # a car drifting across lanes
        cy, cw, ch = int(hz + (h - hz) * 0.35), w // 9, h // 12
        cv2.rectangle(img, (cx - cw // 2, cy - ch), (cx + cw // 2, cy), (40, 40, 170), -1)
        cv2.rectangle(img, (cx - cw // 3, cy - ch - ch // 2), (cx + cw // 3, cy - ch),
                      (30, 30, 120), -1)
        return img


def _image_paths(spec: str) -> list[Path] | None:
    p = Path(spec)
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTS and q.is_file())
    if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
        return [p]
    if any(ch in spec for ch in "*?["):
        return sorted(Path(q) for q in glob.glob(spec)
                      if Path(q).suffix.lower() in IMAGE_EXTS and Path(q).is_file())
    return None


def open_source(spec: str, reconnect_timeout: float | None = None,
                backoff: Backoff = Backoff()) -> Source:
    """The Source named by ``spec`` (see the module docstring); errors name the spec.
    reconnect_timeout/backoff: outage handling of cameras and streams (CaptureSource)."""
    spec = str(spec).strip()
    if not spec:
        raise ValueError("empty --source")
    if spec.startswith("synthetic:") or spec == "synthetic":
        return SyntheticSource(spec)
    if spec.isdigit() or spec.startswith("/dev/video"):
        if spec.startswith("/dev/") and not Path(spec).exists():
            raise ValueError(f"camera {spec} does not open (no such device)")
        return CaptureSource(spec, "camera", reconnect_timeout, backoff)
    scheme = urlsplit(spec).scheme.lower()
    if "://" in spec:
        if scheme == "file":
            return open_source(urlsplit(spec).path, reconnect_timeout, backoff)
        if scheme not in STREAM_SCHEMES:
            raise ValueError(f"unsupported stream scheme {scheme!r}; allowed: "
                             f"{', '.join(STREAM_SCHEMES)}")
        return CaptureSource(spec, "stream", reconnect_timeout, backoff)
    paths = _image_paths(spec)
    if paths is not None:
        return ImageSource(spec, paths)
    if Path(spec).exists():
        return VideoFileSource(spec)
    raise FileNotFoundError(f"source not found: {spec}")


# ------------------------------------------------------------------ the capture stage

_END = None


class _CaptureStage:
    """A thread reading ``source`` until it ends or ``stop()``; subclasses decide what to
    keep (``_run``). ``frames_in``/``frames_dropped`` feed summary.json."""

    def __init__(self, source: Source, max_frames: int | None):
        self.source = source
        self._stop = threading.Event()
        self._max = max_frames
        self.frames_in = 0
        self.frames_dropped = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def _run(self):
        raise NotImplementedError

    def depth(self) -> int:
        """Frames captured and waiting for the infer stage."""
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        self.source.interrupt()


class Prefetch(_CaptureStage):
    """Recorded sources: a thread decodes ahead into a bounded queue (back-pressure, no drops).
    ``read`` returns frames in order, then None once the source ends or ``stop()`` was called
    (frames already queued are still delivered: the pipeline drains)."""

    def __init__(self, source: Source, depth: int = 4, max_frames: int | None = None):
        super().__init__(source, max_frames)
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.is_set() and (self._max is None or self.frames_in < self._max):
                frame = self.source.read()
                if frame is None:
                    break
                self.frames_in += 1
                while not self._stop.is_set():
                    try:
                        self._q.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                else:
                    self.frames_in -= 1         # stopped while waiting: never entered the pipeline
        except Exception as e:  # surfaced by the pipeline after the queues drain
            self.error = e
        finally:
            self._put_end()

    def _put_end(self):
        while True:
            try:
                self._q.put(_END, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set():          # consumer gone: make room for the end marker
                    try:
                        self._q.get_nowait()
                        self.frames_in -= 1
                    except queue.Empty:
                        pass

    def read(self) -> Frame | None:
        return self._q.get()

    def depth(self) -> int:
        return self._q.qsize()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class LatestFrame(_CaptureStage):
    """Live sources: a capture thread keeps only the newest frame. A frame replaced before
    ``read`` took it is dropped and counted in ``frames_dropped``."""

    def __init__(self, source: Source, max_frames: int | None = None):
        super().__init__(source, max_frames)
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._ended = False
        self._delivered = 0
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    break
                with self._cond:
                    self.frames_in += 1
                    if self._latest is not None:
                        self.frames_dropped += 1
                    self._latest = frame
                    self._cond.notify()
        except Exception as e:
            self.error = e
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def read(self) -> Frame | None:
        with self._cond:
            while self._latest is None and not self._ended and not self._stop.is_set():
                self._cond.wait(timeout=0.1)
            if self._stop.is_set() or (self._max is not None and self._delivered >= self._max):
                return None
            frame, self._latest = self._latest, None
            if frame is not None:
                self._delivered += 1
            return frame

    def depth(self) -> int:
        return int(self._latest is not None)

    def stop(self) -> None:
        super().stop()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        self.stop()
        self._thread.join(timeout=5)
        with self._cond:
            if self._latest is not None:     # captured but never processed
                self.frames_dropped += 1
                self._latest = None


def open_reader(source: Source, depth: int = 4, max_frames: int | None = None):
    """The capture stage for ``source``: LatestFrame for live sources, Prefetch otherwise."""
    if source.live:
        return LatestFrame(source, max_frames)
    return Prefetch(source, depth, max_frames)
