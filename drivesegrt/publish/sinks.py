"""Sinks: where published frames go. Several at once; each writes in its own way:

    VideoSink   overlay.mp4: H.264 through an ffmpeg pipe when ffmpeg exists, else OpenCV mp4v
    ImageSink   overlays/<stem>.jpg (image sources)
    MaskSink    masks/<stem>.png (image sources) or masks/<6-digit index>.png (video)
    ConfidenceSink  confidence/<same name>.png: top-class probability x 255
    WindowSink  a cv2 window when a display exists
    JsonlSink   frames.jsonl, one object per published frame (and one per run event, e.g.
                a latency-budget step: ``{"event": "deadline", ...}``)

Encoding and file writes run on a per-sink worker thread (:class:`Worker`) behind a bounded
queue, so the publish stage only hands frames over; the worker's time per frame is reported as
the ``encode`` stage in summary.json. ``close()`` drains and finalizes (a playable mp4 even
after Ctrl-C). A failed write (disk full, directory gone or read-only) raises
:class:`OutputError` naming the file and the reason; files already written stay complete (a
half-written image is removed, overlay.mp4 is cut back to its last complete fragment,
frames.jsonl to its last whole line) and the other sinks still finalize.
"""
from __future__ import annotations

import errno
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
from . import mp4

VIDEO_CODECS = ("auto", "h264", "mp4v")


class OutputError(OSError):
    """Writing an output failed mid-run (disk full, unwritable); the message names the file."""


def _output_error(path: Path, e: OSError) -> OutputError:
    return _failed_write(path, e.strerror or str(e), e.errno)


def _failed_write(path: Path, reason: str, code: int | None = None, more: str = "") -> OutputError:
    """OutputError "cannot write PATH: REASON": a full disk is called so in plain words."""
    if code == errno.ENOSPC or "No space left on device" in reason:
        code, reason = errno.ENOSPC, f"{reason} (disk full)"
    err = OutputError(f"cannot write {path}: {reason}{more}")
    err.errno = code
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
    # Fragmented MP4 (an empty moov up front, then a moof+mdat fragment every 0.25 s): every
    # complete fragment is playable, so a full disk or a killed run still leaves a video up to
    # the last fragment written (mp4.trim_to_complete cuts off a partial one). "file:" and an
    # absolute path: a run directory named like an FFmpeg protocol ("pipe:", "tcp://...")
    # stays a file name.
    # The frames arrive as planar YUV 4:2:0 (I420), converted on our side by OpenCV
    # (SIMD, BT.601 limited range like FFmpeg's default): swscale's bgr24 -> yuv420p cost the
    # encoder process more CPU than the conversion costs here, and the pipe carries half the
    # bytes (benchmarks/RESULTS.md, "CPU work per frame").
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{w}x{h}", "-r", f"{fps:.6g}", "-i", "-",
            "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
            "-pix_fmt", "yuv420p", "-movflags", "+frag_keyframe+empty_moov+default_base_moof",
            "-frag_duration", "250000", f"file:{path.absolute()}"]


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
        self.frames_kept: int | None = None     # set when a failed write cut the file back
        self._reason: str | None = None
        if codec != "mp4v" and have_ffmpeg and even:
            # Own session: a terminal Ctrl-C must not stop ffmpeg before we finalize it.
            self._proc = subprocess.Popen(_ffmpeg_cmd(self.path, size, fps, preset, crf),
                                          stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                                          start_new_session=True)
            self.encoder = f"libx264 (ffmpeg pipe, preset {preset}, crf {crf})"
        else:
            # An absolute path: OpenCV's FFmpeg backend would read "pipe:..." as a protocol.
            self._writer = cv2.VideoWriter(str(self.path.absolute()),
                                           cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
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
                yuv = cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420)      # (H * 3/2, W) uint8
                self._proc.stdin.write(memoryview(yuv).cast("B"))
            except BrokenPipeError:
                raise _failed_write(self.path, self._ffmpeg_reason()) from None
        else:
            self._writer.write(img)

    def _ffmpeg_reason(self) -> str:
        """Why ffmpeg stopped (it has, or is about to): its last error line without the file
        name it repeats, else its exit code. Read once; later calls repeat it."""
        if self._reason is None:
            try:
                self._proc.wait(timeout=30)
                err = self._proc.stderr.read().decode(errors="replace").strip()
            except (OSError, ValueError, subprocess.TimeoutExpired):
                err = ""
            last = err.splitlines()[-1] if err else ""
            self._reason = (last.rpartition(": ")[2] or last
                            or f"ffmpeg exit code {self._proc.poll()}")
        return self._reason

    def close(self) -> None:
        if self._proc is None:
            try:
                self._worker.close()
            finally:
                self._writer.release()
            return
        broke = False
        try:
            self._worker.close()
        except OutputError:
            broke = True                       # ffmpeg went away; the error was raised before
        finally:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                broke = True
            rc = self._proc.wait()
        if rc != 0 or broke:
            reason = self._ffmpeg_reason()
            self._proc.stderr.close()
            try:
                self.frames_kept = mp4.trim_to_complete(self.path)
            except OSError:                    # the file or its directory is gone
                pass
            raise _failed_write(self.path, reason)
        self._proc.stderr.close()

    def encode_ms(self) -> list[float]:
        return self._worker.job_ms

    def describe(self) -> dict:
        d = {"path": str(self.path), "encoder": self.encoder, "frames": self.frames,
             "width": self.size[0], "height": self.size[1], "fps": round(self.fps, 3)}
        if self.frames_kept is not None:
            d["frames_kept"] = self.frames_kept
        return d


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

    def __init__(self, title: str = TITLE):
        self.title = title                  # one window per camera when there are several

    def write(self, frame: Frame) -> None:
        cv2.imshow(self.title, frame.overlay)
        cv2.waitKey(1)

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


class JsonlSink(Sink):
    """frames.jsonl: ``Frame.record()`` per published frame, each line written whole with one
    unbuffered write, so a reader (a dashboard, a test) can follow the run live. A write that
    fails (disk full) is undone: the file is cut back to its last whole line."""

    name = "jsonl"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self._size = 0                          # bytes of whole lines written so far
        self._lock = threading.Lock()           # frames (publish) and events (batch loop)

    def write(self, frame: Frame) -> None:
        self.write_record(frame.record())

    def write_record(self, record: dict) -> None:
        """One JSON object as one line: a frame's, or an event of the run (``"event"`` key)."""
        with self._lock:
            self._write_line((json.dumps(record) + "\n").encode())

    def _write_line(self, line: bytes) -> None:
        try:
            done = 0
            while done < len(line):             # a short write is not an error yet
                done += os.write(self._fd, line[done:])
        except OSError as e:
            try:
                os.ftruncate(self._fd, self._size)
                os.lseek(self._fd, self._size, os.SEEK_SET)
            except OSError:
                pass                            # nothing more can be done for the file
            raise _output_error(self.path, e) from None
        self._size += len(line)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
