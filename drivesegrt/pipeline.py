"""The streaming pipeline: capture -> infer -> publish on threads joined by bounded queues.

    capture thread  (capture.Prefetch | capture.LatestFrame)  decode; live: keep newest only
        │ bounded queue (recorded) / single slot (live)
    infer thread    Segmenter.submit: preprocess + engine (CUDA: queued on the device)
        │ bounded queue
    publish thread  Job.result: postprocess (upsample + argmax; CUDA: download), driving
                    figures (optional), then Overlay + sinks (video/images/masks/window
                    hand off to their writer threads) + frames.jsonl; per-frame latency;
                    progress bar

Stages overlap, so throughput approaches the slowest stage rather than the sum. An engine
error on one frame is logged and the frame counted in ``frames_failed`` (the run goes on);
``max_consecutive_failures`` in a row end the run with :class:`InferenceError`. Stopping:
end of stream, ``max_frames``, or ``stop()`` (Ctrl-C/SIGTERM, wired in run.py) stop the
capture and let the frames already queued drain through publish; ``close`` of the sinks then
finalizes the outputs. An exception in the infer stage stops the capture and lets the frames
already inferred drain through publish (none is lost); an exception in publish aborts the others
(no thread waits forever on a queue nobody serves). Either is re-raised by :meth:`Pipeline.run`
after the sinks are closed.
"""
from __future__ import annotations

import queue
import sys
import threading
from dataclasses import dataclass, field

from .capture import Source, open_reader
from .frame import STAGES, Frame
from .infer.segmenter import Segmenter
from .infer.temporal import Continuity
from .publish.driving import DrivingFigures
from .publish.overlay import Overlay
from .publish.sinks import JsonlSink, Sink
from .timing import RateMeter, StageStats, ms_since, now, percentiles

_END = object()


class InferenceError(RuntimeError):
    """The infer stage failed on too many consecutive frames (a broken engine, not a glitch)."""


@dataclass
class RunStats:
    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    frames_failed: int = 0              # inference errors
    stages: StageStats = field(default_factory=StageStats)
    latency_ms: list[float] = field(default_factory=list)
    t_start: float = 0.0
    t_end: float = 0.0
    interrupted: bool = False

    @property
    def wall_s(self) -> float:
        return max(0.0, self.t_end - self.t_start)

    @property
    def fps(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0


def run_threads(threads: list[threading.Thread], abort, poll_s: float = 0.1,
                on_poll=None) -> None:
    """Start ``threads`` and wait for them all. The main thread only waits (and calls
    ``on_poll`` every ``poll_s``), so it stays free to run signal handlers; an exception here
    (KeyboardInterrupt) calls ``abort`` and is re-raised after the threads were joined."""
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            threads[-1].join(timeout=poll_s)
            if on_poll is not None:
                on_poll()
    except BaseException:
        abort()
        raise
    finally:
        for t in threads:
            t.join(timeout=10)


class Pipeline:
    """Wire one source, one Segmenter, one Overlay and sinks; ``run()`` blocks until done.

    queue_size: depth of the capture and publish queues. max_frames: stop after this many
    frames entered the pipeline (None = until the source ends). on_frame: called in the
    publish thread after each published frame (e.g. a progress bar's update).
    max_consecutive_failures: inference errors in a row that abort the run. figures: driving
    figures measured per frame (frames.jsonl) and drawn on the overlay. continuity: tells the
    segmenter where the source has a gap (its temporal smoothing restarts there). pace: read a
    recorded source at its own fps. name: the camera's, in messages (one of several).

    One camera of several (multicam.py) uses the same object as a *lane*: ``open_capture``,
    ``publish_loop`` on its own thread fed by the shared batching loop, ``close_capture``.
    """

    def __init__(self, source: Source, segmenter: Segmenter, overlay: Overlay,
                 sinks: list[Sink], jsonl: JsonlSink | None = None, queue_size: int = 4,
                 max_frames: int | None = None, on_frame=None,
                 max_consecutive_failures: int = 10, figures: DrivingFigures | None = None,
                 continuity: Continuity | None = None, pace: bool = False,
                 name: str | None = None):
        self.source = source
        self.segmenter = segmenter
        self.overlay = overlay
        self.sinks = list(sinks)
        self.jsonl = jsonl
        self.queue_size = max(1, queue_size)
        self.max_frames = max_frames
        self.on_frame = on_frame
        self.max_consecutive_failures = max(1, max_consecutive_failures)
        self.figures = figures
        self.continuity = continuity
        self.pace = pace                     # recorded source read at its fps (a replay)
        self.name = name                     # the camera's name when one of several
        # Draw a fresh overlay every n-th frame, reuse the last one in between (the latency
        # budget's overlay step; masks and frames.jsonl stay per frame).
        self.overlay_every = 1
        self._last_overlay = None
        self.stats = RunStats()
        self._stop = threading.Event()       # drain: stop capturing, publish what is queued
        self._abort = threading.Event()      # error: everyone leaves now
        self._errors: list[BaseException] = []
        self._reader = None
        self._pub_q: queue.Queue | None = None

    # -- control -------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop capturing; frames already in the pipeline are still published (drain)."""
        self.stats.interrupted = True
        self._stop_capture()

    def abort(self) -> None:
        """Everyone leaves now (an error); sinks are still closed by ``run``."""
        self._abort.set()
        self._stop_capture()

    def _stop_capture(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.stop()

    # -- stages --------------------------------------------------------------------------
    def _put(self, q: queue.Queue, item) -> bool:
        while not self._abort.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not self._abort.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END

    def _fail(self, e: BaseException) -> None:
        self._errors.append(e)
        self.abort()

    def _infer_loop(self, out_q: queue.Queue) -> None:
        failed_in_a_row = 0
        try:
            # Only submit here: the job's result (postprocess; CUDA: the download) is collected
            # on the publish thread, so the engine never waits for the upsample.
            for frame in iter(self._reader.read, None):
                if self._abort.is_set():
                    break
                if self.continuity is not None and self.continuity.breaks(
                        frame.index, self.source.reconnects):
                    self.segmenter.reset()
                try:
                    frame.job = self.segmenter.submit(frame.image)
                except Exception as e:  # one bad frame must not end the stream
                    failed_in_a_row += 1
                    self.frame_failed(frame, e, failed_in_a_row)
                    continue
                failed_in_a_row = 0
                if not self._put(out_q, frame):
                    break
        except BaseException as e:
            # Frames already inferred are still published (drain), then the error is raised.
            self._errors.append(e)
            self._stop_capture()
        finally:
            self._put(out_q, _END)

    def frame_failed(self, frame: Frame, error: Exception, in_a_row: int) -> None:
        """Log and count one frame the engine failed on; too many in a row abort the run."""
        self.stats.frames_failed += 1
        first = (str(error).splitlines() or [""])[0]
        camera = f"{self.name}: " if self.name else ""
        msg = f"{camera}frame {frame.index}: inference failed ({type(error).__name__}: {first})"
        if in_a_row >= self.max_consecutive_failures:
            raise InferenceError(f"{msg}; {in_a_row} frames in a row failed, stopping") from error
        print(f"drivesegrt: warning: {msg}; frame skipped", file=sys.stderr, flush=True)

    def _draw(self, frame: Frame, hud: dict):
        """The frame's overlay: drawn fresh, or the last one again every other frame while the
        overlay step of the latency budget is in force (same size only)."""
        last = self._last_overlay
        if (self.overlay_every > 1 and last is not None and frame.index % self.overlay_every
                and last.shape[:2] == frame.image.shape[:2]):
            return last
        overlay = self.overlay(frame.image, frame.labels, hud, frame.overlay)
        if self.figures is not None:
            self.figures.draw(overlay, frame.figures)
        self._last_overlay = overlay
        return overlay

    def publish_loop(self, in_q: queue.Queue) -> None:
        """The publish stage: frames from ``in_q`` (their jobs submitted) until _END."""
        rate = RateMeter()
        hud = {"fps": 0.0, "stages_ms": {}}
        stats = self.stats
        failed_in_a_row = 0
        try:
            while True:
                frame = self._get(in_q)
                if frame is _END:
                    break
                job, frame.job = frame.job, None
                try:
                    result = job.result()
                except Exception as e:
                    failed_in_a_row += 1
                    try:
                        self.frame_failed(frame, e, failed_in_a_row)
                    except InferenceError as stop:      # publish what is queued, then raise
                        self._errors.append(stop)
                        self._stop_capture()
                    continue
                failed_in_a_row = 0
                frame.labels, frame.overlay = result.labels, result.overlay
                frame.confidence, frame.temporal = result.confidence, result.temporal
                frame.stages_ms.update(result.stages_ms)
                if self.figures is not None:
                    t0 = now()
                    frame.figures = self.figures.measure(frame.labels, frame.confidence)
                    frame.stages_ms["figures"] = ms_since(t0)
                t0 = now()
                frame.overlay = self._draw(frame, hud)
                t1 = now()
                frame.stages_ms["overlay"] = (t1 - t0) * 1e3
                for sink in self.sinks:
                    sink.write(frame)
                frame.stages_ms["write"] = ms_since(t1)
                t_pub = now()
                frame.latency_ms = (t_pub - frame.t_capture) * 1e3
                stats.frames_out += 1
                stats.stages.add_all(frame.stages_ms)
                stats.latency_ms.append(frame.latency_ms)
                if self.jsonl is not None:
                    self.jsonl.write(frame)
                hud = {"fps": rate.tick(t_pub),
                       "stages_ms": {k: frame.stages_ms[k] for k in STAGES if k in frame.stages_ms}}
                # Free early; sinks hold their own references.
                frame.image = frame.labels = frame.overlay = frame.confidence = None
                if self.on_frame is not None:
                    self.on_frame(frame)
        except BaseException as e:
            self._fail(e)

    # -- run -----------------------------------------------------------------------------
    def run(self, poll_s: float = 0.1) -> RunStats:
        """Run to the end (or stop/abort); returns RunStats. Sinks are closed (finalized) even
        when a stage failed; the first error is re-raised afterwards."""
        self.open_capture()
        pub_q = self.publish_queue()
        threads = [threading.Thread(target=self._infer_loop, args=(pub_q,), name="infer",
                                    daemon=True),
                   threading.Thread(target=self.publish_loop, args=(pub_q,), name="publish",
                                    daemon=True)]
        try:
            run_threads(threads, self.abort, poll_s)
        finally:
            self.close_capture()
        if self._errors:
            raise self._errors[0]
        return self.stats

    def open_capture(self):
        """Start the capture thread; returns its reader (``read``/``poll``)."""
        self.stats.t_start = now()
        self._reader = open_reader(self.source, self.queue_size, self.max_frames, self.pace)
        if self._stop.is_set():
            self._reader.stop()
        return self._reader

    def publish_queue(self) -> queue.Queue:
        """A new queue for ``publish_loop`` to serve (``put``/``end_input`` feed it)."""
        self._pub_q = queue.Queue(maxsize=self.queue_size)
        return self._pub_q

    def put(self, frame) -> bool:
        """Hand a submitted frame to ``publish_loop``; False once aborted."""
        return self._put(self._pub_q, frame)

    def end_input(self) -> None:
        """No more frames for ``publish_loop``: it ends once the queued ones are published."""
        self._put(self._pub_q, _END)

    def close_capture(self) -> None:
        """Stop and close the capture, take its counts, finalize the sinks (errors kept for
        ``error``)."""
        self._reader.close()
        self.stats.t_end = now()
        self.stats.frames_in = self._reader.frames_in
        self.stats.frames_dropped = self._reader.frames_dropped
        self._close_sinks()
        if self._reader.error is not None:
            self._errors.append(self._reader.error)

    @property
    def error(self) -> BaseException | None:
        """The first error of this pipeline's stages, sinks or capture (None: none)."""
        return self._errors[0] if self._errors else None

    def _close_sinks(self) -> None:
        for sink in [*self.sinks, *([self.jsonl] if self.jsonl else [])]:
            try:
                sink.close()
            except BaseException as e:
                self._errors.append(e)

    # -- live state (the browser view, the soak benchmark) -------------------------------
    def counters(self) -> dict:
        """Counts so far, readable from any thread while the pipeline runs."""
        r, s = self._reader, self.stats
        return {"frames_in": r.frames_in if r else s.frames_in,
                "frames_dropped": r.frames_dropped if r else s.frames_dropped,
                "frames_failed": s.frames_failed,
                "frames_corrupt": self.source.frames_corrupt,
                "reconnects": self.source.reconnects,
                "outage_s": round(self.source.outage_s, 3)}

    def queue_depths(self) -> dict[str, int]:
        """Frames waiting in each queue now: capture, publish and every sink's writer."""
        depths = {"capture": self._reader.depth() if self._reader else 0,
                  "publish": self._pub_q.qsize() if self._pub_q else 0}
        for sink in self.sinks:
            depths[sink.name] = sink.backlog()
        return depths

    # -- summary -------------------------------------------------------------------------
    def summary(self) -> dict:
        """The summary.json core: counts, fps, per-stage and latency percentiles."""
        s = self.stats
        stages = {k: percentiles(s.stages.values(k)) for k in STAGES if s.stages.values(k)}
        for sink in self.sinks:
            if sink.encode_ms():
                stages["encode"] = percentiles(sink.encode_ms())
        return {
            "frames_in": s.frames_in,
            "frames_out": s.frames_out,
            "frames_dropped": s.frames_dropped,
            "frames_failed": s.frames_failed,
            "frames_corrupt": self.source.frames_corrupt,
            "fps": round(s.fps, 3),
            "wall_s": round(s.wall_s, 3),
            "reconnects": self.source.reconnects,
            "outage_s": round(self.source.outage_s, 3),
            "end_reason": self.source.end_reason,
            "interrupted": s.interrupted,
            "stages_ms": stages,
            "stages_mean_ms": {k: round(s.stages.mean(k), 3) for k in STAGES
                               if s.stages.values(k)},
            "latency_ms": percentiles(s.latency_ms),
            # Age of each frame when published (capture -> sinks): the live-mode bound.
            "frame_age_ms": {**percentiles(s.latency_ms),
                             "max": round(max(s.latency_ms, default=0.0), 3)},
        }

