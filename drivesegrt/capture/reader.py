"""The capture stage: a thread reading a Source ahead of the pipeline.

* recorded sources (file, images, synthetic): :class:`Prefetch` decodes ahead into a bounded
  queue: every frame, in order, back-pressure instead of drops;
* live sources (camera, stream, ``synthetic:?live=1``): :class:`LatestFrame` keeps only the
  newest frame; a frame replaced before the pipeline took it is dropped and counted, so
  latency stays bounded when inference is slower than the camera.

``read`` blocks for the next frame (one camera); ``poll`` takes one only if it is there and
``ended`` says when no more will come (several cameras, served by one batching loop).
"""
from __future__ import annotations

import queue
import threading

from ..frame import Frame
from ..timing import now
from .base import Source

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
        self.frames_skipped = 0          # paced recorded sources only (Prefetch.skip_every)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def _run(self):
        raise NotImplementedError

    def depth(self) -> int:
        """Frames captured and waiting for the infer stage."""
        raise NotImplementedError

    def poll(self) -> Frame | None:
        """The next frame if one is waiting now, else None (see ``ended``)."""
        raise NotImplementedError

    @property
    def ended(self) -> bool:
        """True once the stream is over and every frame it delivered was taken."""
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        self.source.interrupt()


class Prefetch(_CaptureStage):
    """Recorded sources: a thread decodes ahead into a bounded queue (back-pressure, no drops).
    ``read`` returns frames in order, then None once the source ends or ``stop()`` was called
    (frames already queued are still delivered: the pipeline drains). ``pace``: read at the
    source's own fps, like a replay of the drive in real time (a paced camera of a several-camera
    run); ``skip_every`` > 1 drops all but every n-th paced frame (the latency budget), counted
    in ``frames_skipped``, never in ``frames_in``."""

    def __init__(self, source: Source, depth: int = 4, max_frames: int | None = None,
                 pace: bool = False):
        super().__init__(source, max_frames)
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._done = False
        self.pace = pace
        self.skip_every = 1
        self._thread.start()

    def _paced_read(self):
        """The source's next frame at its time on the source's clock (pace), minus skips."""
        if not self.pace:
            return self.source.read()
        period = 1.0 / self.source.fps
        while True:
            delay = self._t_next - now()
            if delay > 0 and self._stop.wait(delay):
                return None
            self._t_next = max(self._t_next + period, now() - 1.0)
            frame = self.source.read()
            if frame is None or self.skip_every <= 1 or frame.index % self.skip_every == 0:
                return frame
            self.frames_skipped += 1

    def _run(self):
        self._t_next = now()
        try:
            while not self._stop.is_set() and (self._max is None or self.frames_in < self._max):
                frame = self._paced_read()
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

    def poll(self) -> Frame | None:
        if self._done:
            return None
        try:
            frame = self._q.get_nowait()
        except queue.Empty:
            return None
        self._done = frame is _END
        return frame

    @property
    def ended(self) -> bool:
        return self._done

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
            return self._take()

    def poll(self) -> Frame | None:
        with self._cond:
            return self._take()

    def _take(self) -> Frame | None:
        """The newest frame, if any and still wanted (the lock held)."""
        if self._stop.is_set() or (self._max is not None and self._delivered >= self._max):
            return None
        frame, self._latest = self._latest, None
        if frame is not None:
            self._delivered += 1
        return frame

    @property
    def ended(self) -> bool:
        with self._cond:
            return (self._stop.is_set() or (self._ended and self._latest is None)
                    or (self._max is not None and self._delivered >= self._max))

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


def open_reader(source: Source, depth: int = 4, max_frames: int | None = None,
                pace: bool = False):
    """The capture stage for ``source``: LatestFrame for live sources, Prefetch otherwise
    (``pace``: at the source's fps)."""
    if source.live:
        return LatestFrame(source, max_frames)
    return Prefetch(source, depth, max_frames, pace)
