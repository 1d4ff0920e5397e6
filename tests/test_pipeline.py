"""The threaded pipeline in-process: recorded vs live semantics, faults, draining."""
from __future__ import annotations

import threading
import time

import pytest
from helpers import SlowEngine, read_jsonl, video_info

from drivesegrt.capture import open_source
from drivesegrt.infer.segmenter import Segmenter
from drivesegrt.pipeline import InferenceError, Pipeline
from drivesegrt.publish.overlay import Overlay
from drivesegrt.publish.sinks import JsonlSink, Sink, VideoSink


def build(engine, spec, sinks=(), jsonl=None, **kw):
    seg = Segmenter(engine)
    return Pipeline(open_source(spec), seg, Overlay(seg.class_names, seg.palette), list(sinks),
                    jsonl, **kw)


def test_recorded_every_frame_in_order(tiny_engine, tmp_path):
    p = build(tiny_engine, "synthetic:?w=160&h=120&frames=25", jsonl=JsonlSink(tmp_path / "f.jsonl"),
              queue_size=2)
    stats = p.run()
    assert (stats.frames_in, stats.frames_out, stats.frames_dropped) == (25, 25, 0)
    recs = read_jsonl(tmp_path / "f.jsonl")
    assert [r["index"] for r in recs] == list(range(25))
    assert set(recs[0]["stages_ms"]) == {"capture", "preprocess", "infer", "postprocess",
                                         "overlay", "write"}
    s = p.summary()
    assert set(s["stages_ms"]["infer"]) == {"p50", "p95", "p99"} and s["fps"] > 0


def test_live_source_drops_stale_frames_and_bounds_age(tiny_engine):
    """Camera at 100 fps, engine at ~12 fps: frames are dropped at the source, not queued,
    so a published frame is never much older than one inference."""
    delay = 0.08
    p = build(SlowEngine(tiny_engine, delay), "synthetic:?w=160&h=120&fps=100&frames=0&live=1",
              max_frames=12)
    stats = p.run()
    assert stats.frames_out == 12
    assert stats.frames_dropped > 20
    assert stats.frames_in == stats.frames_out + stats.frames_dropped
    # Without dropping, age would grow by ~(delay - 10 ms) per frame: 0.4-0.8 s over frames
    # 6..12. With dropping it stays near one inference; the slack covers a loaded 2-core box.
    late = sorted(stats.latency_ms[-6:])
    assert late[len(late) // 2] < 3 * delay * 1000 and late[-1] < 5 * delay * 1000


def test_engine_error_on_one_frame_is_counted_and_the_run_goes_on(tiny_engine, tmp_path, capsys):
    video = VideoSink(tmp_path / "o.mp4", (160, 120), 10.0)
    p = build(SlowEngine(tiny_engine, fail_at=6), "synthetic:?w=160&h=120&frames=20", [video],
              JsonlSink(tmp_path / "f.jsonl"), queue_size=2)
    stats = p.run()
    assert (stats.frames_in, stats.frames_out, stats.frames_failed) == (20, 19, 1)
    assert p.summary()["frames_failed"] == 1
    assert [r["index"] for r in read_jsonl(tmp_path / "f.jsonl")] == [i for i in range(20) if i != 5]
    assert video_info(tmp_path / "o.mp4") == (19, 160, 120)
    err = capsys.readouterr().err
    assert "frame 5: inference failed (RuntimeError: engine exploded); frame skipped" in err


def test_engine_failing_every_frame_aborts_and_finalizes_video(tiny_engine, tmp_path):
    video = VideoSink(tmp_path / "o.mp4", (160, 120), 10.0)
    p = build(SlowEngine(tiny_engine, fail_from=6), "synthetic:?w=160&h=120&frames=40", [video],
              queue_size=2, max_consecutive_failures=3)
    with pytest.raises(InferenceError, match="engine exploded.*3 frames in a row failed"):
        p.run()
    assert (p.stats.frames_out, p.stats.frames_failed) == (5, 3)
    assert video_info(tmp_path / "o.mp4") == (5, 160, 120)
    assert not [t for t in threading.enumerate() if t.name in ("infer", "publish", "capture")
                and t.is_alive()]


def test_engine_abort_still_publishes_frames_already_inferred(tiny_engine, tmp_path):
    """A slow sink leaves inferred frames queued when the engine gives up: they are kept."""
    class SlowSink(Sink):
        name = "slow"

        def __init__(self):
            self.indices = []

        def write(self, frame):
            time.sleep(0.05)
            self.indices.append(frame.index)

    sink = SlowSink()
    p = build(SlowEngine(tiny_engine, fail_from=9), "synthetic:?w=160&h=120&frames=40", [sink],
              queue_size=6, max_consecutive_failures=2)
    with pytest.raises(InferenceError, match="2 frames in a row failed"):
        p.run()
    assert sink.indices == list(range(8))
    assert (p.stats.frames_out, p.stats.frames_failed) == (8, 2)


def test_sink_error_aborts_cleanly(tiny_engine):
    class BrokenSink(Sink):
        name = "broken"

        def write(self, frame):
            if frame.index == 3:
                raise OSError("No space left on device")

    p = build(tiny_engine, "synthetic:?w=160&h=120&frames=0", [BrokenSink()], queue_size=2)
    t0 = time.monotonic()
    with pytest.raises(OSError, match="No space left"):
        p.run()
    assert time.monotonic() - t0 < 30
    assert p.stats.frames_out == 3


def test_stop_drains_and_counts(tiny_engine):
    p = build(tiny_engine, "synthetic:?w=160&h=120&frames=0", queue_size=3)
    threading.Timer(0.5, p.stop).start()
    stats = p.run()
    assert stats.interrupted and stats.frames_out > 0
    assert stats.frames_in == stats.frames_out          # queued frames were published

