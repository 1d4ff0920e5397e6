"""Sinks: where published frames go. Several at once; each writes in its own way:

    VideoSink   overlay.mp4: H.264 through an ffmpeg pipe when ffmpeg exists, else OpenCV mp4v
    ImageSink   overlays/<stem>.jpg (image sources)
    MaskSink    masks/<stem>.png (image sources) or masks/<6-digit index>.png (video)
    ConfidenceSink  confidence/<same name>.png: top-class probability x 255
    WindowSink  a cv2 window when a display exists
    JsonlSink   frames.jsonl, one object per published frame

Encoding and file writes run on a per-sink worker thread (:class:`Worker`) behind a bounded
queue, so the publish stage only hands frames over; the worker's time per frame is reported as
the ``encode`` stage in summary.json. ``close()`` drains and finalizes (a playable mp4 even
after Ctrl-C). A failed write (disk full, directory gone or read-only) raises
:class:`OutputError` naming the file and the reason; files already written stay complete (a
half-written image is removed) and the other sinks still finalize.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

from ..frame import Frame
from ..timing import ms_since, now

VIDEO_CODECS = ("auto", "h264", "mp4v")


class OutputError(OSError):
    """Writing an output failed mid-run (disk full, unwritable); the message names the file."""


def _output_error(path: Path, e: OSError) -> OutputError:
    err = OutputError(f"cannot write {path}: {e.strerror or e}")
    err.errno = e.errno
    return err


class Worker:
    """One background thread running submitted jobs in order, behind a bounded queue.
    An exception in a job is re-raised in the caller at the next ``submit`` or at ``close``."""

    def __init__(self, name: str, depth: int = 8):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.error: BaseException | None = None
        self.job_ms: list[float] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            job = self._q.get()
            if job is None:
                return
            if self.error is not None:
                continue                        # keep draining so submitters never block
            fn, args = job
            t0 = now()
            try:
                fn(*args)
            except Exception as e:
                self.error = e
            self.job_ms.append(ms_since(t0))

    def submit(self, fn, *args) -> None:
        self._raise()
        self._q.put((fn, args))

    def _raise(self):
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        self._raise()

    def depth(self) -> int:
        return self._q.qsize()


class Sink:
    name = "sink"
    path: Path | None = None
    _worker: Worker | None = None

    def write(self, frame: Frame) -> None:
        raise NotImplementedError

    def backlog(self) -> int:
        """Frames handed over but not written yet (the writer thread's queue)."""
        return self._worker.depth() if self._worker is not None else 0

    def close(self) -> None:
        pass

    def encode_ms(self) -> list[float]:
        return []

    def describe(self) -> dict:
        return {"path": str(self.path) if self.path else None}


def _ffmpeg_cmd(path: Path, size: tuple[int, int], fps: float, preset: str, crf: int) -> list[str]:
    w, h = size
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", f"{fps:.6g}", "-i", "-",
            "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
            "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)]


class VideoSink(Sink):
    """overlay.mp4 at the source's size and fps. ``codec``: auto (H.264 via ffmpeg when
    available and the size is even — yuv420p needs it —, else mp4v), h264, mp4v."""

    name = "video"

    def __init__(self, path: Path, size: tuple[int, int], fps: float, codec: str = "auto",
                 preset: str = "ultrafast", crf: int = 23, queue_size: int = 8):
        if codec not in VIDEO_CODECS:
            raise ValueError(f"video codec {codec!r}; allowed: {', '.join(VIDEO_CODECS)}")
        self.path, self.size, self.fps = Path(path), tuple(size), float(fps)
        even = size[0] % 2 == 0 and size[1] % 2 == 0
        have_ffmpeg = shutil.which("ffmpeg") is not None
        if codec == "h264" and not (have_ffmpeg and even):
            raise ValueError("video codec h264 needs ffmpeg on PATH and an even frame size")
        self._proc: subprocess.Popen | None = None
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0
        if codec != "mp4v" and have_ffmpeg and even:
            # Own session: a terminal Ctrl-C must not stop ffmpeg before we finalize it.
            self._proc = subprocess.Popen(_ffmpeg_cmd(self.path, size, fps, preset, crf),
                                          stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                                          start_new_session=True)
            self.encoder = f"libx264 (ffmpeg pipe, preset {preset}, crf {crf})"
        else:
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"),
                                           fps, size)
            if not self._writer.isOpened():
                raise ValueError(f"{self.path}: OpenCV cannot open an mp4v writer")
            self.encoder = "mp4v (OpenCV VideoWriter)"
        self._worker = Worker("encode", queue_size)

    def write(self, frame: Frame) -> None:
        img = frame.overlay
        if (img.shape[1], img.shape[0]) != self.size:   # a stream changed size mid-run
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_LINEAR)
        self._worker.submit(self._encode, img)
        self.frames += 1

    def _encode(self, img: np.ndarray) -> None:
        if self._proc is not None:
            try:
                self._proc.stdin.write(memoryview(np.ascontiguousarray(img)).cast("B"))
            except BrokenPipeError:
                raise OutputError(f"ffmpeg stopped while writing {self.path}: "
                                  f"{self._ffmpeg_error()}") from None
        else:
            self._writer.write(img)

    def _ffmpeg_error(self) -> str:
        try:
            err = self._proc.stderr.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            err = ""
        return err.splitlines()[-1] if err else f"exit code {self._proc.poll()}"

    def close(self) -> None:
        try:
            self._worker.close()
        finally:
            if self._proc is not None:
                try:
                    self._proc.stdin.close()
                except BrokenPipeError:
                    pass
                rc = self._proc.wait()
                if rc != 0:
                    raise RuntimeError(f"ffmpeg failed to finalize {self.path}: {self._ffmpeg_error()}")
                self._proc.stderr.close()
            elif self._writer is not None:
                self._writer.release()

    def encode_ms(self) -> list[float]:
        return self._worker.job_ms

    def describe(self) -> dict:
        return {"path": str(self.path), "encoder": self.encoder, "frames": self.frames,
                "width": self.size[0], "height": self.size[1], "fps": round(self.fps, 3)}


class _FileSink(Sink):
    """Writes one image file per frame (named by stem, else 6-digit index) on a worker thread.
    Subclasses pick the Frame attribute, the suffix and the cv2.imwrite params."""

    attr, suffix, params = "overlay", ".jpg", ()

    def __init__(self, directory: Path, queue_size: int = 8):
        self.path = Path(directory)
        self.path.mkdir(parents=True, exist_ok=True)
        self._worker = Worker(f"{self.name}-writer", queue_size)
        self.files = 0

    def write(self, frame: Frame) -> None:
        stem = frame.stem if frame.stem is not None else f"{frame.index:06d}"
        self._worker.submit(self._save, self.path / f"{stem}{self.suffix}",
                            getattr(frame, self.attr), list(self.params))

    def _save(self, path: Path, image: np.ndarray, params: list[int]) -> None:
        # Encode, then write with Python I/O: unlike cv2.imwrite this reports *why* a write
        # failed (ENOSPC, EACCES, ...), and a partial file can be removed.
        ok, buf = cv2.imencode(self.suffix, image, params)
        if not ok:
            raise OutputError(f"cannot encode {path}")
        try:
            with open(path, "wb") as f:
                f.write(buf)
        except OSError as e:
            try:
                path.unlink(missing_ok=True)        # no half-written image left behind
            except OSError:
                pass                                # the directory itself is gone
            raise _output_error(path, e) from None
        self.files += 1

    def close(self) -> None:
        self._worker.close()

    def describe(self) -> dict:
        return {"path": str(self.path), "files": self.files}


class ImageSink(_FileSink):
    """overlays/<stem>.jpg (image sources)."""

    name = "images"
    attr, suffix, params = "overlay", ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 90)


class MaskSink(_FileSink):
    """masks/<stem>.png or masks/<6-digit index>.png: single-channel uint8 class ids."""

    name = "masks"
    # Level 1: masks compress about as well as at the default level, 3-4x faster.
    attr, suffix, params = "labels", ".png", (cv2.IMWRITE_PNG_COMPRESSION, 1)


class ConfidenceSink(_FileSink):
    """confidence/<stem>.png or confidence/<6-digit index>.png, named like the masks:
    single-channel uint8 top-class probability x 255 at the source resolution."""

    name = "confidence"
    # Smooth gradients: most of the encode time goes to choosing PNG filters per row; the SUB
    # filter with run-length matching halves it for files of the same size.
    attr, suffix, params = "confidence", ".png", (
        cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB,
        cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE)


class WindowSink(Sink):
    """A cv2 window. ``unavailable_reason()`` says why not when there is no display/GUI backend."""

    name = "window"
    TITLE = "drivesegrt"

    @staticmethod
    def unavailable_reason() -> str | None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                     or os.environ.get("WAYLAND_DISPLAY")):
            return "no display (DISPLAY is not set)"
        try:
            cv2.namedWindow(WindowSink.TITLE, cv2.WINDOW_NORMAL)
        except cv2.error:
            return "OpenCV was built without GUI support (opencv-python-headless)"
        return None

    def write(self, frame: Frame) -> None:
        cv2.imshow(self.TITLE, frame.overlay)
        cv2.waitKey(1)

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.TITLE)
        except cv2.error:
            pass


class JsonlSink(Sink):
    """frames.jsonl: ``Frame.record()`` per published frame, line-buffered so a reader (a
    dashboard, a test) can follow the run live."""

    name = "jsonl"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = open(self.path, "w", buffering=1)

    def write(self, frame: Frame) -> None:
        try:
            self._f.write(json.dumps(frame.record()) + "\n")
        except OSError as e:
            raise _output_error(self.path, e) from None

    def close(self) -> None:
        self._f.close()

