"""Several cameras in one run: camera specs, batched == one-frame results, three replayed
streams served by real ffmpeg on 127.0.0.1 (one killed and restarted mid-run), cameras that
do not open, mixed frame sizes, and the latency budget against an engine slowed for a while."""
from __future__ import annotations

import signal
import time

import cv2
import numpy as np
import pytest
import torch
from helpers import (
    CAMVID_CLIP,
    HIGHWAY_CLIP,
    CostlyEngine,
    LiveRun,
    SlowEngine,
    needs_ffmpeg,
    read_jsonl,
    read_summary,
    run_args,
    run_cli,
    textured_frame,
    tiny_checkpoint,
    tiny_onnx,
    video_info,
)

from drivesegrt.capture import open_source
from drivesegrt.capture.reader import Prefetch
from drivesegrt.capture.replay import ReplayServer, free_port
from drivesegrt.config import camera_entries, file_entries, split_name
from drivesegrt.engines import load_engine
from drivesegrt.infer.segmenter import Segmenter
from drivesegrt.run import add_arguments, execute, load_run_config

HIGHWAY_SIZE, CAMVID_SIZE = (960, 540), (480, 360)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", input_size=(96, 128))


def clip_frames(clip, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(clip))
    frames = [cap.read()[1] for _ in range(n)]
    cap.release()
    return frames


def assert_accounted(c):
    """Every captured frame of a camera was published, dropped (stale) or failed."""
    assert c["frames_in"] == c["frames_out"] + c["frames_dropped"] + c["frames_failed"]


# --------------------------------------------------------------------------- camera specs
@pytest.mark.parametrize("text,expected", [
    ("front=rtsp://car/front", ("front", "rtsp://car/front")),
    ("rear_2=/dev/video2", ("rear_2", "/dev/video2")),
    ("synthetic:?w=64&h=48", (None, "synthetic:?w=64&h=48")),
    ("left=synthetic:?w=64&h=48", ("left", "synthetic:?w=64&h=48")),
    ("http://h:1/a.ts?x=1", (None, "http://h:1/a.ts?x=1")),
    ("clip.mp4", (None, "clip.mp4")),
])
def test_name_is_a_plain_word_before_the_first_equals(text, expected):
    assert split_name(text) == expected


def test_unnamed_cameras_are_numbered_by_position(tmp_path):
    assert camera_entries(["a.mp4", "rear=b.mp4", "c.mp4"]) == [
        {"name": "cam0", "uri": "a.mp4"}, {"name": "rear", "uri": "b.mp4"},
        {"name": "cam2", "uri": "c.mp4"}]
    assert file_entries([{"uri": "a.mp4", "pace": True}, "rear=b.mp4"], "s.yaml") == [
        {"name": "cam0", "uri": "a.mp4", "pace": True}, {"name": "rear", "uri": "b.mp4"}]
    with pytest.raises(ValueError, match=r"s.yaml: item 2 must be a mapping with a 'uri'"):
        file_entries([{"uri": "a"}, {"name": "x"}], "s.yaml")


def _config(*argv):
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    return load_run_config(p.parse_args([str(a) for a in argv]))


def test_one_source_keeps_the_one_camera_config_several_make_cameras(tmp_path):
    assert _config("--source", "front=synthetic:").source == "synthetic:"
    assert _config("--source", "front=synthetic:").cameras == ()
    cfg = _config("--source", "front=synthetic:", "--source", "synthetic:?w=64&h=48")
    assert [(c.name, c.uri) for c in cfg.cameras] == [("front", "synthetic:"),
                                                      ("cam1", "synthetic:?w=64&h=48")]
    f = tmp_path / "cams.yaml"
    f.write_text("- {name: front, uri: 'synthetic:', reconnect_timeout: 3}\n"
                 "- {name: side, uri: 'synthetic:?w=64&h=48', pace: true, required: false}\n")
    cams = _config("--sources", f).cameras
    assert [(c.name, c.reconnect_timeout, c.pace, c.required) for c in cams] == [
        ("front", 3.0, False, True), ("side", None, True, False)]


@pytest.mark.parametrize("argv,message", [
    (["--source", "a=synthetic:", "--source", "a=synthetic:"],
     "config key 'cameras': camera name 'a' is given twice"),
    (["--sources", "{cams}", "--source", "synthetic:"],
     "--sources FILE and --source: give the cameras one way"),
    (["--source", "synthetic:", "--source", "synthetic:", "--temporal", "ema:0.5"],
     "several cameras: --temporal ema:0.5 follows one frame sequence and cannot run on "
     "batches; use --temporal none"),
    (["--source", "synthetic:", "--source", "synthetic:", "--device", "cuda"],
     "several cameras: batched inference runs on the CPU segmenter; --device cuda takes one "
     "--source without --deadline-ms"),
    (["--source", "synthetic:", "--source", "rear=nothing/here.mp4"],
     "camera rear: source not found: nothing/here.mp4 (--allow-missing runs without it)"),
    (["--sources", "{bad}"], "{bad}: top level must be a list"),
])
def test_bad_camera_input_is_one_line_exit_2(tmp_path, model, argv, message):
    cams, bad = tmp_path / "cams.yaml", tmp_path / "bad.yaml"
    cams.write_text("- synthetic:\n")
    bad.write_text("front: clip.mp4\n")
    argv = [a.format(cams=cams, bad=bad) for a in argv]
    r = run_cli("run", "--backend", "torch", "--model", model, "--output", tmp_path / "o",
                *argv)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"drivesegrt: error: {message.format(bad=bad)}"


# --------------------------------------------------------------------------- batching
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("filter_mode,resize", [("linear", "stretch"), ("point", "letterbox")])
def test_batched_masks_equal_one_frame_masks_at_each_frames_own_size(
        tmp_path, shared_data, backend, filter_mode, resize):
    torch.set_num_threads(1)
    path = (tiny_checkpoint(tmp_path / "m.pt", input_size=(96, 128)) if backend == "torch"
            else tiny_onnx(tmp_path / "m.onnx", input_size=(96, 128)))
    engine = load_engine(backend, path)
    seg = Segmenter(engine, filter_mode, resize)
    frames = (clip_frames(CAMVID_CLIP, 2) + clip_frames(HIGHWAY_CLIP, 2)
              + [textured_frame((77, 131), seed=3)])            # three sizes in one batch
    one = [seg.segment(f).labels for f in frames]
    jobs = seg.submit_batch(frames)
    batched = [job.result() for job in jobs]
    assert len(batched) == len(frames)
    for f, a, b in zip(frames, one, batched):
        assert b.labels.shape == f.shape[:2] and b.labels.dtype == np.uint8
        np.testing.assert_array_equal(b.labels, a)
        assert set(b.stages_ms) == {"preprocess", "infer", "postprocess"}
    assert len({b.stages_ms["infer"] for b in batched}) == 1     # one engine call
    engine.close()


# --------------------------------------------------------------------------- live runs
@needs_ffmpeg
@pytest.mark.timeout(300)
def test_three_replayed_streams_one_killed_and_back(shared_data, tmp_path, model,
                                                    one_thread_config):
    """front/rear: the CamVid clip (480x360), side: the highway clip (960x540), each served
    by its own ffmpeg; side dies mid-run and returns: the others go on meanwhile and side
    counts a reconnect. SIGINT ends the run: every camera's outputs are finalized."""
    ports = {"front": free_port(), "rear": free_port(), "side": free_port()}
    clips = {"front": CAMVID_CLIP, "rear": CAMVID_CLIP, "side": HIGHWAY_CLIP}
    servers = {n: ReplayServer(clips[n], ports[n]).start().wait_ready() for n in ports}
    out = tmp_path / "run"
    run = LiveRun(*run_args(model, one_thread_config, servers["front"].url, out,
                            "--source", f"rear={servers['rear'].url}",
                            "--source", f"side={servers['side'].url}",
                            "--save-masks", "--reconnect-timeout", "60"))
    # (run_args names the first --source: it is unnamed, so cam0)
    jsonl = {n: out / n / "frames.jsonl" for n in ("cam0", "rear", "side")}
    try:
        for path in jsonl.values():
            run.wait_for_frames(path, 5)
        servers["side"].stop()                                  # one camera dies ...
        run.wait_for_line(f"side: stream {servers['side'].url} lost; reconnecting")
        before = {n: run.wait_for_frames(p, 1) for n, p in jsonl.items() if n != "side"}
        for n, p in jsonl.items():                              # ... the others go on
            if n != "side":
                run.wait_for_frames(p, before[n] + 10)
        servers["side"] = ReplayServer(HIGHWAY_CLIP, ports["side"]).start().wait_ready()
        run.wait_for_line(f"side: stream {servers['side'].url} is back after")
        n_side = run.wait_for_frames(jsonl["side"], 1)
        run.wait_for_frames(jsonl["side"], n_side + 5)          # and it is published again
        rc = run.interrupt(signal.SIGINT)
    finally:
        for srv in servers.values():
            srv.stop()
        run.kill()
    assert rc == 130, run.stderr
    assert "Traceback" not in run.stderr
    s = read_summary(out)
    assert set(s["cameras"]) == {"cam0", "rear", "side"} and s["missing_cameras"] == {}
    for name, c in s["cameras"].items():
        assert c["frames_out"] >= 10, name
        assert_accounted(c)
        assert c["source"]["kind"] == "stream" and c["source"]["live"]
        assert len(read_jsonl(out / name / "frames.jsonl")) == c["frames_out"]
        size = HIGHWAY_SIZE if name == "side" else CAMVID_SIZE
        assert video_info(out / name / "overlay.mp4") == (c["frames_out"], *size)
        masks = sorted((out / name / "masks").iterdir())
        assert len(masks) == c["frames_out"]
        m = cv2.imread(str(masks[-1]), cv2.IMREAD_UNCHANGED)
        assert m.shape == size[::-1] and m.dtype == np.uint8
        assert {"p50", "p95", "p99", "max"} <= set(c["frame_age_ms"]) and c["fps"] > 0
    assert s["cameras"]["side"]["reconnects"] >= 1
    assert s["cameras"]["cam0"]["reconnects"] == 0 and s["cameras"]["rear"]["reconnects"] == 0
    for key in ("frames_in", "frames_out", "frames_dropped", "frames_failed", "reconnects"):
        assert s[key] == sum(c[key] for c in s["cameras"].values()), key
    assert 1 <= s["batch"]["mean_size"] <= 3 and s["batch"]["max_size"] >= 2
    assert {"preprocess", "infer", "postprocess", "overlay"} <= set(s["stages_ms"])
    assert not (out / "overlay.mp4").exists() and not (out / "frames.jsonl").exists()
    rows = {line.split()[0]: line.split() for line in run.stdout.splitlines() if line.strip()}
    for name in ("cam0", "rear", "side"):
        assert rows[name][1] == "stream" and int(rows[name][4]) == s["cameras"][name]["frames_out"]


@needs_ffmpeg
def test_camera_missing_at_start_is_left_out_with_allow_missing(shared_data, tmp_path, model,
                                                                one_thread_config):
    gone = f"http://127.0.0.1:{free_port()}/live.ts"            # nobody listens there
    with ReplayServer(CAMVID_CLIP, free_port()) as srv:
        r = run_cli(*run_args(model, one_thread_config, f"front={srv.url}", tmp_path / "o",
                              "--source", f"rear={gone}", "--max-frames", "8"))
        assert r.returncode == 2
        assert r.stderr.strip() == (f"drivesegrt: error: camera rear: stream {gone} does not "
                                    f"open (--allow-missing runs without it)")
        r = run_cli(*run_args(model, one_thread_config, f"front={srv.url}", tmp_path / "o2",
                              "--source", f"rear={gone}", "--max-frames", "8",
                              "--allow-missing"))
    assert r.returncode == 0, r.stderr
    assert (f"drivesegrt: warning: camera rear: stream {gone} does not open; running without "
            f"it") in r.stderr
    s = read_summary(tmp_path / "o2")
    assert list(s["cameras"]) == ["front"] and s["cameras"]["front"]["frames_out"] == 8
    assert s["missing_cameras"] == {"rear": f"stream {gone} does not open"}
    assert "missing: stream" in r.stdout


def test_recorded_cameras_of_different_lengths_lose_nothing(tmp_path, model, one_thread_config):
    """Recorded sources: every frame of each, in order, even when one ends long before the
    other; each camera's video has its own size."""
    out = tmp_path / "o"
    r = run_cli(*run_args(model, one_thread_config, "a=synthetic:?w=160&h=120&frames=12", out,
                          "--source", "b=synthetic:?w=96&h=64&frames=30"))
    assert r.returncode == 0, r.stderr
    s = read_summary(out)
    for name, n, size in (("a", 12, (160, 120)), ("b", 30, (96, 64))):
        c = s["cameras"][name]
        assert (c["frames_in"], c["frames_out"], c["frames_dropped"]) == (n, n, 0)
        assert [rec["index"] for rec in read_jsonl(out / name / "frames.jsonl")] == list(range(n))
        assert video_info(out / name / "overlay.mp4") == (n, *size)
    # one engine call per tick with the frames ready then: at least one per frame of the longer
    # camera, at most one per frame, and every frame in exactly one call
    b = s["batch"]
    assert 30 <= b["calls"] <= 42 and b["max_size"] <= 2
    assert abs(b["calls"] * b["mean_size"] - 42) < 0.5
    # Overwrite: the cameras' directories are cleared like the run directory itself.
    r = run_cli(*run_args(model, one_thread_config, "a=synthetic:?w=160&h=120&frames=3", out,
                          "--source", "b=synthetic:?w=96&h=64&frames=2", "--overwrite"))
    assert r.returncode == 0, r.stderr
    assert len(read_jsonl(out / "b" / "frames.jsonl")) == 2


# --------------------------------------------------------------------------- latency budget
@pytest.mark.timeout(300)
def test_deadline_degrades_under_a_slow_engine_and_restores_after(tmp_path, model):
    """Two live cameras at 15 fps; for the first 9 s the engine costs 9.5 s per megapixel
    more (two 96x128 inputs: ~230 ms a batch, a frame age far over the 250 ms budget; the
    64x96 input of the last step: ~120 ms), then only its own time. The budget degrades step
    by step, the smaller input brings the frame age under the budget while the engine is still
    slow, and every step is restored once it is fast again (restore below 0.5 x budget: not
    while the engine is slow)."""
    torch.set_num_threads(1)
    slow_s = 9.0
    engine = CostlyEngine(load_engine("torch", model), s_per_mpixel=9.5,
                          slow_until=time.perf_counter() + slow_s)
    seg = Segmenter(engine)
    out = tmp_path / "o"
    cfg = _config("--source", "a=synthetic:?w=160&h=120&fps=15&frames=300&live=1",
                  "--source", "b=synthetic:?w=128&h=96&fps=15&frames=300&live=1",
                  "--output", out, "--deadline-ms", "250", "--backend", "torch",
                  "--model", model, "--figures", "none")
    import dataclasses

    cfg = dataclasses.replace(cfg, deadline=dataclasses.replace(
        cfg.deadline, hold_s=0.7, restore_hold_s=1.0, restore_below=0.5))
    t_start = time.time()
    summary, rc = execute(cfg, progress=False, segmenter=seg)
    assert rc == 0, summary["error"]
    d = summary["deadline"]
    assert d["steps"] == ["point_filter", "overlay_half", "input_small"]
    events = [r for r in read_jsonl(out / "a" / "frames.jsonl") if "event" in r]
    assert events == [r for r in read_jsonl(out / "b" / "frames.jsonl") if "event" in r]
    assert events == d["events"]
    steps = [(e["action"], e["step"]) for e in events]
    assert steps[:3] == [("degrade", "point_filter"), ("degrade", "overlay_half"),
                         ("degrade", "input_small")]
    assert steps[-3:] == [("restore", "input_small"), ("restore", "overlay_half"),
                          ("restore", "point_filter")]
    assert d["level_end"] == 0 and d["degrades"] == d["restores"] >= 3
    # The smaller input was really used, and the original one again at the end.
    assert (2, 3, 64, 96) in engine.shapes and engine.shapes[-1][-2:] == (96, 128)
    # Still slow, but degraded: frames captured from 1.5 s after the input step (the window
    # has forgotten the slower ones) until the slowdown ended are published within budget.
    t_small = next(e["time"] for e in events if e["step"] == "input_small")
    frames = [r for r in read_jsonl(out / "a" / "frames.jsonl") if "event" not in r]
    degraded = [r["latency_ms"] for r in frames
                if t_small + 1.5 <= r["capture_time"] <= t_start + slow_s - 0.5]
    assert len(degraded) >= 5
    assert np.percentile(degraded, 95) < 250
    # Masks and frames.jsonl stay per frame while the overlay step is in force.
    c = summary["cameras"]["a"]
    assert len(frames) == c["frames_out"] and c["frames_in"] == c["frames_out"] + c[
        "frames_dropped"] + c["frames_failed"]


def test_one_source_with_a_deadline_keeps_the_one_camera_layout(tmp_path, model,
                                                                 one_thread_config):
    out = tmp_path / "o"
    r = run_cli(*run_args(model, one_thread_config, "synthetic:?w=160&h=120&frames=10", out,
                          "--deadline-ms", "5000"))
    assert r.returncode == 0, r.stderr
    s = read_summary(out)
    assert s["frames_out"] == 10 and s["source"]["kind"] == "synthetic" and "cameras" not in s
    assert s["deadline"]["ms"] == 5000 and s["deadline"]["degrades"] == 0
    assert video_info(out / "overlay.mp4") == (10, 160, 120)
    assert len(read_jsonl(out / "frames.jsonl")) == 10
    assert "deadline 5000 ms: 0 degrade, 0 restore step(s)" in r.stdout


def test_an_engine_error_fails_that_batch_on_every_camera_and_the_run_goes_on(tmp_path, model):
    torch.set_num_threads(1)
    seg = Segmenter(SlowEngine(load_engine("torch", model), fail_at=4))
    out = tmp_path / "o"
    cfg = _config("--source", "a=synthetic:?w=96&h=64&frames=8",
                  "--source", "b=synthetic:?w=64&h=48&frames=8", "--output", out)
    summary, rc = execute(cfg, progress=False, segmenter=seg)
    assert rc == 0
    # Call 4 held the frame of each camera that had one ready then (recorded cameras are
    # decoded ahead on their own threads, so usually both, at times only one).
    assert 1 <= summary["frames_failed"] <= 2
    for name in ("a", "b"):
        c = summary["cameras"][name]
        assert c["frames_in"] == 8 and c["frames_out"] + c["frames_failed"] == 8
        idx = [r["index"] for r in read_jsonl(out / name / "frames.jsonl")]
        assert len(idx) == c["frames_out"] and set(idx) <= set(range(8))
    assert summary["frames_out"] == sum(summary["cameras"][n]["frames_out"] for n in "ab")


def test_paced_recorded_source_arrives_at_its_fps_and_skips_when_asked():
    """A recorded source with ``pace``: every frame, at the source's rate (a replay); with
    skip_every=2 (the budget's skip_paced step) every other frame is skipped and counted."""
    reader = Prefetch(open_source("synthetic:?w=64&h=48&fps=50&frames=20"), pace=True)
    t0 = time.perf_counter()
    got = [f.index for f in iter(reader.read, None)]
    took = time.perf_counter() - t0
    reader.close()
    assert got == list(range(20)) and took >= 19 / 50 * 0.95
    reader = Prefetch(open_source("synthetic:?w=64&h=48&fps=200&frames=20"), pace=True)
    reader.skip_every = 2
    got = [f.index for f in iter(reader.read, None)]
    reader.close()
    assert got[1:] == list(range(2, 20, 2)) and reader.frames_skipped == 20 - len(got)


def test_python_api_runs_several_cameras(tmp_path, model):
    import drivesegrt as ds

    summary = ds.run(source=["a=synthetic:?w=96&h=64&frames=3", "synthetic:?w=64&h=48&frames=2"],
                     output=str(tmp_path / "o"), backend="torch", model=str(model), threads=1)
    assert {n: c["frames_out"] for n, c in summary["cameras"].items()} == {"a": 3, "cam1": 2}
    assert (tmp_path / "o" / "cam1" / "overlay.mp4").is_file()
