"""Several cameras, one engine: a lane per camera and one batching loop.

    capture thread per camera   LatestFrame (live: newest only, drops counted per camera)
                                | Prefetch (recorded: every frame; ``pace``: at its fps)
        │ poll
    batch thread                each tick: the newest frame of every camera that has one ->
                                one ``Segmenter.submit_batch`` call (dynamic batch, 1..N) ->
                                each frame to its camera's lane; the latency budget's decisions
        │ a bounded queue per camera
    publish thread per camera   ``Pipeline.publish_loop``: postprocess back to the frame's own
                                size, overlay, the camera's sinks and frames.jsonl

A lane is a :class:`~drivesegrt.pipeline.Pipeline` (one camera's source, overlay, sinks,
counters) whose infer stage is this shared loop. A camera whose stream dies reconnects on its
own (its reader just has no frame meanwhile) while the others go on; a camera that ends leaves
the loop and finalizes its outputs; the run ends when every camera has ended, or on
stop/abort. An engine error fails the frames of that batch (counted per camera); a camera's
output error aborts the run (all outputs finalized, the error re-raised by ``run``).
"""
from __future__ import annotations

import threading
import time

from .deadline import DeadlineController
from .frame import STAGES
from .infer.segmenter import Segmenter
from .pipeline import Pipeline, run_threads
from .timing import StageStats, now, percentiles


def input_size_scaled(size: tuple[int, int], scale: float, multiple: int = 32) -> tuple[int, int]:
    """(H, W) x ``scale``, rounded to a multiple of ``multiple`` (model strides), >= it."""
    return tuple(max(multiple, int(round(v * scale / multiple)) * multiple) for v in size)


class MultiPipeline:
    """Lanes (one Pipeline per camera, by name) served by one batching loop over ``segmenter``.

    deadline: a DeadlineController whose steps this pipeline applies (None: no budget).
    input_scale: the smaller-input step's share of each side. poll_s: the loop's wait when no
    camera has a frame.
    """

    def __init__(self, lanes: dict[str, Pipeline], segmenter: Segmenter,
                 deadline: DeadlineController | None = None, input_scale: float = 0.75,
                 poll_s: float = 0.002):
        if not lanes:
            raise ValueError("no cameras to run")
        self.lanes = dict(lanes)
        self.segmenter = segmenter
        self.deadline = deadline
        self.poll_s = poll_s
        self._filter0 = segmenter.filter_mode
        self._size0 = tuple(segmenter.input_size)
        self._size_small = input_size_scaled(self._size0, input_scale)
        self._abort = threading.Event()
        self._errors: list[BaseException] = []
        self._readers: dict[str, object] = {}
        self.batches: list[int] = []             # batch size of every engine call
        self.events: list[dict] = []             # the deadline changes, as in frames.jsonl
        self._t_start = 0.0
        if deadline is not None:
            for lane in self.lanes.values():
                lane.on_frame = self._observe

    # -- what the latency budget may change in this run --------------------------------------
    @staticmethod
    def applicable_steps(segmenter: Segmenter, paced: bool) -> tuple[str, ...]:
        """The deadline steps that change something here, in their documented order."""
        steps = []
        if segmenter.filter_mode == "linear" and segmenter.meta.output == "logits":
            steps.append("point_filter")
        steps.append("overlay_half")
        if paced:
            steps.append("skip_paced")
        if segmenter.engine.spec.fixed_input_size is None:
            steps.append("input_small")
        return tuple(steps)

    def _apply(self, step: str, on: bool) -> None:
        if step == "point_filter":
            self.segmenter.set_filter("point" if on else self._filter0)
        elif step == "overlay_half":
            for lane in self.lanes.values():
                lane.overlay_every = 2 if on else 1
        elif step == "skip_paced":
            for name, lane in self.lanes.items():
                if lane.pace:
                    self._readers[name].skip_every = 2 if on else 1
        elif step == "input_small":
            self.segmenter.set_input_size(self._size_small if on else self._size0)

    def _observe(self, frame) -> None:
        self.deadline.observe(frame.latency_ms, now())

    def _budget_tick(self) -> None:
        change = self.deadline.update(now())
        if change is None:
            return
        self._apply(change.step, change.action == "degrade")
        rec = {**change.record(self.deadline.deadline_ms), "time": round(time.time(), 6),
               "t_s": round(now() - self._t_start, 3)}
        self.events.append(rec)
        for lane in self.lanes.values():
            if lane.jsonl is not None:
                lane.jsonl.write_record(rec)

    # -- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop capturing on every camera; what is queued is still published."""
        for lane in self.lanes.values():
            lane.stop()

    def abort(self) -> None:
        self._abort.set()
        for lane in self.lanes.values():
            lane.abort()

    # -- the batching loop -----------------------------------------------------------------------
    def _batch_loop(self) -> None:
        active = dict(self.lanes)
        in_a_row = dict.fromkeys(self.lanes, 0)
        try:
            while active and not self._abort.is_set():
                batch = []
                for name, lane in list(active.items()):
                    reader = self._readers[name]
                    frame = reader.poll()
                    if frame is not None:
                        batch.append((name, lane, frame))
                    elif reader.ended:
                        del active[name]
                        lane.end_input()
                if not batch:
                    self._abort.wait(self.poll_s)
                    continue
                if self.deadline is not None:
                    self._budget_tick()
                try:
                    jobs = self.segmenter.submit_batch([f.image for _, _, f in batch])
                except Exception as e:  # one bad batch must not end the streams
                    for name, lane, frame in batch:
                        in_a_row[name] += 1
                        lane.frame_failed(frame, e, in_a_row[name])   # InferenceError: too many
                    continue
                self.batches.append(len(batch))
                for (name, lane, frame), job in zip(batch, jobs):
                    in_a_row[name] = 0
                    frame.job = job
                    lane.put(frame)
        except BaseException as e:
            # Frames already submitted are still published (drain), then the error is raised.
            self._errors.append(e)
            self.stop()
        finally:
            for lane in active.values():
                lane.end_input()

    # -- run -------------------------------------------------------------------------------------
    def run(self, poll_s: float = 0.1) -> None:
        """Run every camera to its end (or stop/abort). All sinks are finalized even when a
        stage failed; the first error is re-raised afterwards."""
        self._t_start = now()
        threads = [threading.Thread(target=self._batch_loop, name="batch", daemon=True)]
        for name, lane in self.lanes.items():
            self._readers[name] = lane.open_capture()
            threads.append(threading.Thread(target=lane.publish_loop, name=f"publish-{name}",
                                            args=(lane.publish_queue(),), daemon=True))
        try:
            # A lane that failed has broken outputs: the run ends for all.
            run_threads(threads, self.abort, poll_s, self._abort_on_lane_error)
        finally:
            for lane in self.lanes.values():
                lane.close_capture()
        errors = self._errors + [lane.error for lane in self.lanes.values() if lane.error]
        if errors:
            raise errors[0]

    def _abort_on_lane_error(self) -> None:
        if any(lane.error is not None for lane in self.lanes.values()):
            self.abort()

    # -- summary ---------------------------------------------------------------------------------
    def summary(self) -> dict:
        """summary.json's core for several cameras: totals, global stage times, batch sizes,
        per camera its own counts, fps, frame age and outputs (and the deadline's record)."""
        cameras = {}
        stages, ages = StageStats(), []
        for name, lane in self.lanes.items():
            s = lane.summary()
            s["frames_skipped"] = self._readers[name].frames_skipped
            cameras[name] = {**s, "source": lane.source.describe(),
                             "outputs": {k.name: k.describe() for k in lane.sinks}}
            for k in STAGES:
                for v in lane.stats.stages.values(k):
                    stages.add(k, v)
            ages.extend(lane.stats.latency_ms)
        totals = {k: sum(c[k] for c in cameras.values())
                  for k in ("frames_in", "frames_out", "frames_dropped", "frames_failed",
                            "frames_corrupt", "frames_skipped", "reconnects")}
        wall = max((c["wall_s"] for c in cameras.values()), default=0.0)
        out = {**totals,
               "fps": round(totals["frames_out"] / wall, 3) if wall > 0 else 0.0,
               "wall_s": wall,
               "interrupted": any(c["interrupted"] for c in cameras.values()),
               "stages_ms": {k: percentiles(stages.values(k)) for k in STAGES
                             if stages.values(k)},
               "latency_ms": percentiles(ages),
               "frame_age_ms": {**percentiles(ages), "max": round(max(ages, default=0.0), 3)},
               "batch": {"calls": len(self.batches),
                         "mean_size": round(sum(self.batches) / len(self.batches), 3)
                         if self.batches else 0.0,
                         "max_size": max(self.batches, default=0)},
               "cameras": cameras}
        if self.deadline is not None:
            out["deadline"] = {**self.deadline.summary(), "events": self.events}
        return out
