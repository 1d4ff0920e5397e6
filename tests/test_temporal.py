"""Temporal metrics (TC, flicker), temporal smoothing (EMA, flow, restarts) and confidence maps."""
from __future__ import annotations

import dataclasses
import json
import signal
import time

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    CAMVID,
    HIGHWAY_CLIP,
    LiveRun,
    SlowEngine,
    logits_onnx,
    needs_ffmpeg,
    read_jsonl,
    read_summary,
    run_cli,
    textured_frame,
    tiny_onnx,
)

from drivesegrt.capture import open_source
from drivesegrt.capture.replay import ReplayServer, free_port
from drivesegrt.engines import load_engine
from drivesegrt.infer import build
from drivesegrt.infer.postprocess import upsample_plane
from drivesegrt.infer.segmenter import Segmenter
from drivesegrt.infer.temporal import (
    Continuity,
    TemporalFilter,
    TemporalSpec,
    parse_temporal,
    softmax,
)
from drivesegrt.pipeline import Pipeline
from drivesegrt.preprocess import Geometry
from drivesegrt.publish.overlay import Overlay
from drivesegrt.publish.sinks import JsonlSink
from drivesegrt.train.temporal import (
    FlowWarp,
    TemporalScores,
    flicker_counts,
    sequence_key,
    temporal_consistency,
    warp_from_flow,
    warp_labels,
)

# ------------------------------------------------------------------ metrics, by hand


def _two_halves(h=10, w=20) -> np.ndarray:
    lab = np.zeros((h, w), np.uint8)
    lab[:, w // 2:] = 1
    return lab


def test_tc_and_flicker_by_hand_on_a_known_shift():
    """Frame t: class 0 left, class 1 right (10x20). Frame t+1: the scene moved 2 px right
    (flow +2), its prediction has a 5x4 block of 1 on the 0 side (flicker) and its ground
    truth and prediction turn a 5x4 block of the 1 side into 0 (a real change).
    Valid after the warp: columns 0..17 = 180 px. Stable ground truth: 180 - 20 = 160 px, of
    which the 20 px flicker block changed: flicker 20/160. TC: class 0 IoU 80/120, class 1
    IoU 60/100."""
    gt_t = pred_t = _two_halves()
    gt_t1 = np.roll(gt_t, 2, axis=1)
    gt_t1[:, :2] = 0
    gt_t1[5:10, 12:16] = 0                  # a real change (t coordinates: cols 10..13)
    pred_t1 = gt_t1.copy()
    pred_t1[0:5, 4:8] = 1                   # flicker (t coordinates: cols 2..5)
    flow = np.zeros((10, 20, 2), np.float32)
    flow[..., 0] = 2.0
    warp = warp_from_flow(flow)
    assert int(warp.valid.sum()) == 180 and warp.valid[:, :18].all()
    warped_pred, warped_gt = warp_labels(pred_t1, warp), warp_labels(gt_t1, warp)
    assert (warped_pred[:, 18:] == 255).all()
    assert flicker_counts(pred_t, warped_pred, gt_t, warped_gt, warp.valid, 2) == (160, 20)
    tc = temporal_consistency(pred_t, warped_pred, warp.valid, 2)
    assert tc == pytest.approx((80 / 120 + 60 / 100) / 2)
    scores = TemporalScores(2)
    scores.add_pair(pred_t, pred_t1, gt_t, warped_gt, warp)
    assert scores.summary() == {"tc": pytest.approx(tc), "flicker": 20 / 160, "pairs": 1,
                                "stable_pixels": 160}


def test_void_ground_truth_is_never_stable():
    gt = np.full((4, 4), 11, np.uint8)
    warp = warp_from_flow(np.zeros((4, 4, 2), np.float32))
    assert flicker_counts(gt, gt, gt, gt, warp.valid, 11) == (0, 0)


def test_dis_flow_recovers_a_shifted_pattern():
    """A textured frame shifted 3 px right and 2 px down: DIS finds the shift, a prediction
    that moves with the image has TC ~1 and no flicker."""
    big = textured_frame((140, 190), seed=3)
    frame_t, frame_t1 = big[10:130, 10:170], big[8:128, 7:167]     # content moves (+3, +2)
    warp = FlowWarp()(frame_t, frame_t1)
    ys, xs = np.mgrid[0:120, 0:160]
    inner = (slice(10, -10), slice(10, -10))
    assert np.median((warp.map_x - xs)[inner]) == pytest.approx(3, abs=0.25)
    assert np.median((warp.map_y - ys)[inner]) == pytest.approx(2, abs=0.25)
    labels = (cv2.cvtColor(big, cv2.COLOR_BGR2GRAY) // 64).astype(np.uint8)   # 4 classes
    lab_t, lab_t1 = labels[10:130, 10:170], labels[8:128, 7:167]
    scores = TemporalScores(4)
    scores.add_pair(lab_t, lab_t1, lab_t, warp_labels(lab_t1, warp), warp)
    s = scores.summary()
    assert s["tc"] > 0.97 and s["flicker"] < 0.01 and s["stable_pixels"] > 0.9 * 120 * 150


def test_sequence_key():
    assert sequence_key("0016E5_07959") == sequence_key("0016E5_08159") == "0016E5_"
    assert sequence_key("Seq05VD_f00000") != sequence_key("0001TP_006690")


# ------------------------------------------------------------------ smoothing

def test_parse_temporal():
    assert parse_temporal("none") is None
    assert parse_temporal("ema:0.5") == TemporalSpec(0.5, False)
    assert parse_temporal("EMA:1:flow", cut=12) == TemporalSpec(1.0, True, 12.0)
    assert str(parse_temporal("ema:0.25:flow")) == "ema:0.25:flow"
    for bad in ("ema", "ema:0", "ema:1.5", "ema:x", "ema:0.5:warp", "median:3"):
        with pytest.raises(ValueError) as e:
            parse_temporal(bad)
        assert str(e.value) == (f"temporal smoothing {bad!r}; expected none | ema:ALPHA | "
                                f"ema:ALPHA:flow (0 < ALPHA <= 1)")


def _probs(seed, c=11, h=12, w=16):
    return softmax(np.random.default_rng(seed).standard_normal((c, h, w)).astype(np.float32) * 3)


@pytest.mark.parametrize("flow", [False, True])
def test_ema_of_a_constant_scene_is_the_unsmoothed_result(flow):
    smooth = TemporalFilter(TemporalSpec(0.3, flow))
    probs, gray = _probs(0), textured_frame((12, 16))[..., 0]
    for i in range(5):
        out, status = smooth(probs.copy(), gray.copy())
        assert status == ("start" if i == 0 else "smoothed")
        np.testing.assert_allclose(out, probs, rtol=0, atol=1e-6)


def test_ema_blends_and_restarts_on_a_gap_and_a_cut():
    a, b = _probs(1), _probs(2)
    gray = np.full((12, 16), 100, np.uint8)
    smooth = TemporalFilter(TemporalSpec(0.25, cut=40))
    smooth(a, gray)
    out, status = smooth(b, gray)
    assert status == "smoothed"
    np.testing.assert_allclose(out, 0.25 * b + 0.75 * a, atol=1e-6)
    out, status = smooth(a, gray, restart=True)                    # a gap: no history
    assert status == "start" and np.array_equal(out, a)
    out, status = smooth(b, gray + 41)                             # 41 grey levels: a cut
    assert status == "cut" and np.array_equal(out, b)
    out, status = smooth(a, gray + 41 + 39)                        # 39: not a cut
    assert status == "smoothed"
    out, status = smooth(_probs(3, h=6), np.zeros((6, 16), np.uint8))   # new size
    assert status == "start"


def test_flow_moves_the_state_with_the_scene():
    """A class-1 square moves 4 px right between frames (its texture with it): the
    motion-compensated EMA keeps it one square at the new place, plain EMA smears it."""
    h, w = 48, 64
    tex = textured_frame((h, w + 8), seed=5)[..., 1]
    frames = [tex[:, 4:4 + w], tex[:, 0:w]]                         # content moves +4 px
    probs = []
    for x0 in (20, 24):
        p = np.full((2, h, w), 0.1, np.float32)
        p[0] = 0.9
        p[0, 16:32, x0:x0 + 16], p[1, 16:32, x0:x0 + 16] = 0.1, 0.9
        probs.append(p)
    results = {}
    for flow in (False, True):
        smooth = TemporalFilter(TemporalSpec(0.4, flow))
        smooth(probs[0], frames[0])
        out, _ = smooth(probs[1], frames[1])
        results[flow] = out.argmax(0)
    truth = probs[1].argmax(0)
    assert np.count_nonzero(results[True] != truth) <= 0.02 * truth.size
    # plain EMA (0.6 of the past): the square stays where it was, a 16x4 trail on its left,
    # and its newly covered 16x4 strip on the right is missed
    assert np.count_nonzero(results[False] != truth) == 2 * 16 * 4


def test_continuity_breaks_on_a_jump_or_a_reconnect():
    c = Continuity(fps=30, max_gap_s=0.2)              # more than 6 frames is a gap
    assert c.max_frames == 6
    seen = [c.breaks(i, r) for i, r in [(0, 0), (1, 0), (7, 0), (14, 0), (15, 1), (16, 1)]]
    assert seen == [False, False, False, True, True, False]


@pytest.fixture(scope="module")
def tiny_ort(tmp_path_factory):
    engine = load_engine("onnxruntime", tiny_onnx(tmp_path_factory.mktemp("m") / "t.onnx",
                                                  input_size=(64, 96), uint8_input=True),
                         intra_op_threads=1)
    yield engine
    engine.close()


@pytest.mark.parametrize("spec", ["ema:0.4", "ema:0.4:flow"])
def test_segmenter_smoothing_of_a_repeated_frame_equals_unsmoothed(tiny_ort, spec):
    frames = [textured_frame((120, 160), seed=s) for s in (0, 1)]
    plain = Segmenter(tiny_ort)
    smooth = Segmenter(tiny_ort, temporal=parse_temporal(spec))
    want = plain(frames[0])
    statuses = []
    for _ in range(4):
        r = smooth.segment(frames[0])
        statuses.append(r.temporal)
        assert np.array_equal(r.labels, want)
    assert statuses == ["start", "smoothed", "smoothed", "smoothed"]
    smooth.reset()                                             # a gap: starts afresh
    r = smooth.segment(frames[1])
    assert r.temporal == "start" and np.array_equal(r.labels, plain(frames[1]))


@pytest.mark.parametrize("max_gap_s, status", [(0.05, "start"), (10.0, "smoothed")])
def test_pipeline_restarts_smoothing_after_dropped_runs(tiny_ort, tmp_path, max_gap_s, status):
    """A live 100 fps source and an engine slower than 80 ms: about 8 frames are dropped
    before each one inferred. With a 0.05 s (5 frame) max gap every frame starts afresh; with
    10 s none but the first does."""
    seg = Segmenter(SlowEngine(tiny_ort, 0.08), temporal=parse_temporal("ema:0.5"))
    source = open_source("synthetic:?w=160&h=120&fps=100&frames=0&live=1")
    p = Pipeline(source, seg, Overlay(seg.class_names, seg.palette), [],
                 JsonlSink(tmp_path / "f.jsonl"), max_frames=6,
                 continuity=Continuity(source.fps, max_gap_s))
    p.run()
    recs = read_jsonl(tmp_path / "f.jsonl")
    gaps = [b["index"] - a["index"] for a, b in zip(recs, recs[1:])]
    # A loaded machine draws fewer frames while the engine sleeps: the rule decides per gap.
    expected = [status if gap / source.fps > max_gap_s else "smoothed" for gap in gaps]
    assert [r["temporal"] for r in recs] == ["start"] + expected
    assert sum(gap > 5 for gap in gaps) >= 2            # the case under test did occur


def test_models_with_argmax_in_the_graph_cannot_be_smoothed(tmp_path):
    engine = load_engine("onnxruntime", tiny_onnx(tmp_path / "a.onnx", argmax=True))
    for kw, what in (({"temporal": TemporalSpec(0.5)}, "temporal smoothing"),
                     ({"confidence": True}, "confidence maps")):
        with pytest.raises(ValueError) as e:
            Segmenter(engine, **kw)
        assert str(e.value) == (f"{what} needs class scores, but this model ends in an argmax "
                                f"(labels out); export it without --argmax")


class _OnCuda(SlowEngine):
    """The engine as the CUDA segmenter would see it (no GPU here): its spec says cuda:0."""

    @property
    def spec(self):
        return dataclasses.replace(self.inner.spec, device="cuda:0")


def test_the_cuda_path_refuses_smoothing_and_confidence(tiny_ort, monkeypatch):
    monkeypatch.setattr(build, "_torch_has_cuda", lambda: True)
    with pytest.raises(ValueError) as e:
        build.make_segmenter(_OnCuda(tiny_ort), temporal=TemporalSpec(0.5))
    assert str(e.value) == ("temporal smoothing is not available on the CUDA path (device "
                            "cuda:0); use --device cpu")
    with pytest.raises(ValueError, match="^confidence maps is not available on the CUDA"):
        build.make_segmenter(_OnCuda(tiny_ort), confidence=True)


# ------------------------------------------------------------------ confidence

def test_confidence_map_is_the_softmax_of_known_logits(tmp_path):
    """Fixed logits (11 classes at 2x3) from a real ONNX engine: the map is the top softmax
    probability x 255, bilinearly upsampled like the labels (torch's align_corners=False)."""
    logits = np.random.default_rng(4).standard_normal((1, 11, 2, 3)).astype(np.float32) * 2
    engine = load_engine("onnxruntime", logits_onnx(tmp_path / "k.onnx", logits, (8, 12)))
    seg = Segmenter(engine, confidence=True)
    r = seg.segment(np.zeros((8, 12, 3), np.uint8))
    top = torch.softmax(torch.from_numpy(logits), 1).max(1, keepdim=True).values
    want = F.interpolate(top, (8, 12), mode="bilinear", align_corners=False)[0, 0].numpy()
    assert r.confidence.dtype == np.uint8 and r.confidence.shape == (8, 12)
    assert np.abs(r.confidence.astype(int) - np.round(want * 255)).max() <= 1
    assert Segmenter(engine).segment(np.zeros((8, 12, 3), np.uint8)).confidence is None
    # the same scores at every cell: every pixel is exactly the rounded top probability
    flat = np.broadcast_to(logits[:, :, :1, :1], logits.shape)
    engine = load_engine("onnxruntime", logits_onnx(tmp_path / "f.onnx", flat, (8, 12)))
    r = Segmenter(engine, confidence=True).segment(np.zeros((16, 24, 3), np.uint8))
    p = float(torch.softmax(torch.from_numpy(logits[0, :, 0, 0]), 0).max())
    assert r.confidence.shape == (16, 24) and (r.confidence == round(p * 255)).all()


def test_upsample_plane_letterbox_matches_the_pixel_centre_mapping():
    plane = np.random.default_rng(5).random((6, 8)).astype(np.float32)
    geom = Geometry((30, 80), (24, 32), (3, 0, 12, 32))          # letterboxed frame
    out = upsample_plane(plane, geom)
    (fh, fw), (ih, iw), (top, left, ch, cw) = geom.frame_hw, geom.input_hw, geom.content
    want = np.empty((fh, fw), np.float32)
    for i in range(fh):
        y = np.clip((top + (i + 0.5) * ch / fh) * 6 / ih - 0.5, 0, 5)
        for j in range(fw):
            x = np.clip((left + (j + 0.5) * cw / fw) * 8 / iw - 0.5, 0, 7)
            y0, x0 = int(y), int(x)
            y1, x1 = min(y0 + 1, 5), min(x0 + 1, 7)
            dy, dx = y - y0, x - x0
            want[i, j] = ((plane[y0, x0] * (1 - dx) + plane[y0, x1] * dx) * (1 - dy)
                          + (plane[y1, x0] * (1 - dx) + plane[y1, x1] * dx) * dy)
    np.testing.assert_allclose(out, want, atol=1e-5)


# ------------------------------------------------------------------ eval --video

def _sequence(root, stems, shift=3):
    """A labelled sequence: a textured scene panning ``shift`` px per frame, labels from it."""
    big = textured_frame((64, 96 + shift * len(stems)), seed=7)
    for folder in ("val", "valannot"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i, stem in enumerate(stems):
        x = shift * (len(stems) - 1 - i)
        frame = big[:, x:x + 96]
        cv2.imwrite(str(root / "val" / f"{stem}.png"), frame)
        cv2.imwrite(str(root / "valannot" / f"{stem}.png"),
                    (cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) // 24).astype(np.uint8))
    return root


def test_eval_video_reports_tc_flicker_and_per_frame_miou(tmp_path):
    data = _sequence(tmp_path / "d", ["a_001", "a_002", "a_003", "b_001", "b_002"])
    model = tiny_onnx(tmp_path / "m.onnx", input_size=(64, 96))
    r = run_cli("eval", "--video", "--data", data, "--split", "val", "--model", model,
                "--temporal", "none", "--temporal", "ema:0.5:flow", "--json", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "e.json").read_text())
    assert out["reference"] == str(model) and len(out["results"]) == 2
    plain, smooth = out["results"]
    assert (plain["temporal"], smooth["temporal"]) == ("none", "ema:0.5:flow")
    for res in (plain, smooth):
        assert res["pairs"] == 3                          # a_1-a_2, a_2-a_3, b_1-b_2
        assert len(res["per_pair"]["tc"]) == 3 and 0 <= res["flicker"] <= 1
        assert [f["stem"] for f in res["per_frame"]] == ["a_001", "a_002", "a_003", "b_001",
                                                         "b_002"]
        assert res["miou_frame_mean"] == pytest.approx(
            np.mean([f["miou"] for f in res["per_frame"]]))
    for row in ("TC", "flicker %", "mIoU frame mean"):
        assert row in r.stdout
    assert "note:" not in r.stdout                         # not a bundled model


def test_eval_video_notes_that_the_bundled_model_was_chosen_on_val(shared_data):
    r = run_cli("eval", "--video", "--data", CAMVID, "--split", "val", "--max-images", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == ("note: the bundled camvid model was chosen on camvid "
                                         "val: these are stability figures, not accuracy "
                                         "claims")


def test_eval_video_on_any_labelled_folder(tmp_path):
    data = _sequence(tmp_path / "d", ["f1", "f2", "f3"])
    r = run_cli("eval", "--video", "--data", data / "val", "--labels", data / "valannot",
                "--model", tiny_onnx(tmp_path / "m.onnx", input_size=(64, 96)),
                "--json", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "e.json").read_text())
    assert (res["dataset"], res["split"], res["pairs"], res["images"]) == ("folder", "val", 2, 3)


def test_eval_temporal_needs_video(tmp_path):
    r = run_cli("eval", "--data", CAMVID, "--split", "val", "--temporal", "ema:0.5")
    assert r.returncode == 2
    assert r.stderr.strip() == ("drivesegrt: error: --temporal needs --video (smoothing runs "
                                "over an ordered sequence)")


def test_python_api_smoothing_and_confidence(tmp_path):
    import drivesegrt as ds

    model = tiny_onnx(tmp_path / "m.onnx", input_size=(64, 96), uint8_input=True)
    seg = ds.load_segmenter(model, temporal="ema:0.5:flow", confidence=True, threads=1)
    frame = textured_frame((90, 120))
    first, second = seg.segment(frame), seg.segment(frame)
    assert (first.temporal, second.temporal) == ("start", "smoothed")
    assert second.confidence.shape == (90, 120) and second.confidence.dtype == np.uint8
    assert np.array_equal(first.labels, second.labels)
    seg.engine.close()
    with pytest.raises(ValueError, match="^temporal smoothing 'ema'; expected none"):
        ds.load_segmenter(model, temporal="ema")


@needs_ffmpeg
@pytest.mark.timeout(240)
def test_smoothing_restarts_after_a_stream_reconnect(shared_data, tmp_path, one_thread_config):
    """ffmpeg serves the highway clip live; it stops and comes back. The first frame after the
    outage (the largest gap in capture times) starts smoothing afresh."""
    model = tiny_onnx(tmp_path / "m.onnx", input_size=(96, 128), uint8_input=True)
    port, out = free_port(), tmp_path / "run"
    jsonl = out / "frames.jsonl"
    srv = ReplayServer(HIGHWAY_CLIP, port).start().wait_ready()
    run = LiveRun("run", "--source", srv.url, "--model", model, "--config", one_thread_config,
                  "--output", out, "--reconnect-timeout", "60", "--no-video",
                  "--temporal", "ema:0.5")
    try:
        run.wait_for_frames(jsonl, 10)
        srv.stop()
        run.wait_for_line("lost; reconnecting")
        time.sleep(1.0)
        srv = ReplayServer(HIGHWAY_CLIP, port).start().wait_ready()
        run.wait_for_line("is back after")
        n = run.wait_for_frames(jsonl, 1)
        run.wait_for_frames(jsonl, n + 5)
        run.proc.send_signal(signal.SIGINT)
        assert run.finish() == 130, run.stderr
    finally:
        srv.stop()
        run.kill()
    recs = read_jsonl(jsonl)
    gaps = [b["capture_time"] - a["capture_time"] for a, b in zip(recs, recs[1:])]
    after = int(np.argmax(gaps)) + 1
    assert gaps[after - 1] >= 1.0 and recs[after]["temporal"] == "start"
    assert recs[0]["temporal"] == "start"
    assert {r["temporal"] for r in recs} <= {"start", "cut", "smoothed"}
    assert read_summary(out)["reconnects"] >= 1
