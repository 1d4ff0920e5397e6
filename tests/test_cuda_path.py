"""The CUDA path: device preprocess, postprocess, overlay, engines on the GPU, CudaSegmenter.

The device code is torch ops, so its numerics are tested here on CPU tensors against the
numpy/cv2 path (always run). Tests marked ``cuda`` need a GPU (pinned upload, streams, CUDA
graphs, ONNX Runtime IO binding, CUDA events, ``drivesegrt run --device cuda``) and are skipped
with the reason "no CUDA device" elsewhere.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    HIGHWAY_CLIP,
    MEAN,
    STD,
    ffmpeg,
    needs_ffmpeg,
    read_jsonl,
    read_summary,
    run_cli,
    smooth_logits,
    textured_frame,
    tiny_checkpoint,
    tiny_onnx,
)

from drivesegrt.capture import open_source
from drivesegrt.engines import load_engine
from drivesegrt.infer.build import make_segmenter
from drivesegrt.infer.cuda.postprocess import DeviceOverlay, DevicePostprocessor
from drivesegrt.infer.cuda.preprocess import DevicePreprocessor, FrameUploader
from drivesegrt.infer.cuda.segmenter import CudaSegmenter
from drivesegrt.infer.postprocess import Postprocessor
from drivesegrt.infer.segmenter import Segmenter
from drivesegrt.labels import CAMVID11, remap_table
from drivesegrt.pipeline import Pipeline
from drivesegrt.preprocess import Geometry, letterbox_box, preprocess
from drivesegrt.publish.overlay import Overlay
from drivesegrt.publish.sinks import JsonlSink
from drivesegrt.timing import StageTimer

HAVE_CUDA = torch.cuda.is_available()
needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA device")]


def cuda_test(fn):
    for mark in needs_cuda:
        fn = mark(fn)
    return fn


def geometry(frame_hw, input_hw, mode) -> Geometry:
    box = (0, 0, *input_hw) if mode == "stretch" else letterbox_box(frame_hw, input_hw)
    return Geometry(frame_hw, input_hw, box)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_checkpoint(tmp_path_factory.mktemp("cuda") / "tiny.pt", input_size=(96, 128))


@pytest.fixture(scope="module")
def cpu_engine(tiny_ckpt):
    eng = load_engine("torch", tiny_ckpt)
    yield eng
    eng.close()


# ---------------------------------------------------------------- preprocess (CPU tensors)
PRE_CASES = [((1080, 1920), (360, 480), "stretch"), ((1080, 1920), (360, 480), "letterbox"),
             ((270, 500), (360, 480), "stretch"), ((540, 960), (512, 1024), "letterbox"),
             ((101, 77), (64, 96), "letterbox"), ((64, 96), (128, 192), "stretch"),
             ((1080, 1920), (540, 960), "stretch"), ((96, 128), (96, 128), "stretch"),
             ((721, 1283), (360, 480), "letterbox")]


def device_preprocess(frame, input_hw, mode, fmt="float_nchw", device="cpu", **batch_kw):
    pre = DevicePreprocessor(input_hw, MEAN, STD, mode, fmt)
    batch = pre.new_batch(device, **batch_kw)
    geom = pre(torch.from_numpy(frame).to(device), batch)
    return batch, geom


@pytest.mark.parametrize("frame_hw, input_hw, mode", PRE_CASES)
def test_preprocess_matches_cv2_path_bit_for_bit(frame_hw, input_hw, mode):
    """Integer emulation of cv2.resize INTER_LINEAR: the resized uint8 frame is identical to
    cv2's (shrink, enlarge, 2x, identity, letterbox, odd sizes); normalized values agree to
    float rounding; the geometry (letterbox box) is the same."""
    frame = textured_frame(frame_hw)
    u8, geom = device_preprocess(frame, input_hw, mode, "uint8_nhwc_bgr")
    ref_u8, ref_geom = preprocess(frame, input_hw, MEAN, STD, mode, "uint8_nhwc_bgr")
    assert geom == ref_geom and u8.dtype == torch.uint8
    assert np.array_equal(u8.numpy(), ref_u8)
    batch, _ = device_preprocess(frame, input_hw, mode)
    ref, _ = preprocess(frame, input_hw, MEAN, STD, mode)
    np.testing.assert_allclose(batch.numpy(), ref, rtol=0, atol=1e-5)


def test_preprocess_fp16_channels_last_buffer():
    frame = textured_frame((540, 960), seed=1)
    b32, _ = device_preprocess(frame, (360, 480), "letterbox")
    b16, _ = device_preprocess(frame, (360, 480), "letterbox", dtype=torch.float16,
                               channels_last=True)
    assert b16.dtype == torch.float16 and b16.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(b16.float().numpy(), b32.numpy(), atol=3e-3)


def test_preprocess_reuses_its_buffers_per_frame_size():
    pre = DevicePreprocessor((96, 128), MEAN, STD, "letterbox")
    batch = pre.new_batch("cpu")
    ptr = batch.data_ptr()
    pre(torch.from_numpy(textured_frame((200, 300))), batch)
    scratch = [t.data_ptr() for t in pre._plan["h"]]
    pre(torch.from_numpy(textured_frame((200, 300), seed=2)), batch)
    assert [t.data_ptr() for t in pre._plan["h"]] == scratch and batch.data_ptr() == ptr
    pre(torch.from_numpy(textured_frame((100, 300))), batch)        # new size: new plan
    assert pre._plan["geom"].frame_hw == (100, 300)
    with pytest.raises(ValueError, match=r"frames must be \(H, W, 3\) uint8"):
        pre(torch.zeros((10, 10, 3), dtype=torch.float32), batch)


# ---------------------------------------------------------------- postprocess (CPU tensors)
POST_CASES = [((1080, 1920), (360, 480), "stretch"), ((1080, 1920), (360, 480), "letterbox"),
              ((270, 500), (360, 480), "letterbox"), ((540, 960), (512, 1024), "stretch")]


@pytest.mark.parametrize("frame_hw, input_hw, mode", POST_CASES)
@pytest.mark.parametrize("filter_mode", ["linear", "point"])
@pytest.mark.parametrize("remap", [None, "driving5"])
def test_postprocess_matches_cpu_postprocessor(frame_hw, input_hw, mode, filter_mode, remap):
    """Same class map as the CPU Postprocessor except at float ties (linear); point is exact."""
    lut = None if remap is None else remap_table(CAMVID11, remap)[0]
    geom = geometry(frame_hw, input_hw, mode)
    logits = smooth_logits(11, input_hw[0] // 4, input_hw[1] // 4)
    ref = Postprocessor(filter_mode, lut)(logits, geom)
    out = torch.empty(frame_hw, dtype=torch.uint8)
    DevicePostprocessor(filter_mode, lut, chunk_bytes=16 << 20)(torch.from_numpy(logits), geom,
                                                                 out)
    agree = float((out.numpy() == ref).mean())
    assert agree >= (0.999 if filter_mode == "linear" else 1.0), f"agreement {agree:.5f}"


def test_postprocess_linear_matches_naive_interpolate_argmax():
    logits = torch.from_numpy(smooth_logits(11, 90, 120, seed=4))
    geom = geometry((540, 960), (360, 480), "stretch")
    naive = F.interpolate(logits[None], size=(540, 960), mode="bilinear",
                          align_corners=False)[0].argmax(0).numpy()
    out = torch.empty((540, 960), dtype=torch.uint8)
    DevicePostprocessor("linear")(logits, geom, out)
    assert (out.numpy() == naive).mean() >= 0.999
    DevicePostprocessor("linear")(logits.half(), geom, out)       # fp16 engines' logits
    assert (out.numpy() == naive).mean() >= 0.999


def test_postprocess_chunks_and_label_input():
    logits = torch.from_numpy(smooth_logits(11, 24, 32, seed=5))
    geom = geometry((300, 500), (96, 128), "letterbox")
    whole, chunked = (torch.empty((300, 500), dtype=torch.uint8) for _ in range(2))
    DevicePostprocessor("linear")(logits, geom, whole)
    DevicePostprocessor("linear", chunk_bytes=1)(logits, geom, chunked)    # one row per chunk
    assert torch.equal(whole, chunked)
    labels = logits.argmax(0).int()                                # argmax-in-graph engines
    ref = Postprocessor("linear")(labels.numpy(), geom)
    DevicePostprocessor("linear")(labels, geom, whole)
    assert np.array_equal(whole.numpy(), ref)
    with pytest.raises(ValueError, match="does not match the frame"):
        DevicePostprocessor("point")(logits, geom, torch.empty((10, 10), dtype=torch.uint8))


@pytest.mark.parametrize("alpha", [0.5, 0.3, 0.0, 1.0])
def test_overlay_blend_matches_visualize(alpha):
    rng = np.random.default_rng(6)
    frame = rng.integers(0, 256, (270, 480, 3), dtype=np.uint8)
    labels = rng.integers(0, 11, (270, 480), dtype=np.uint8)
    ref = Overlay(CAMVID11.class_names, CAMVID11.palette, alpha, legend=False, hud=False)(
        frame, labels)
    out = torch.empty((270, 480, 3), dtype=torch.uint8)
    DeviceOverlay(CAMVID11.palette, alpha)(torch.from_numpy(frame), torch.from_numpy(labels), out)
    assert np.abs(out.numpy().astype(int) - ref).max() <= 1


# ---------------------------------------------------------------- CudaSegmenter on CPU tensors
@pytest.mark.parametrize("filter_mode, resize", [("linear", "stretch"), ("point", "letterbox")])
def test_cuda_segmenter_on_cpu_agrees_with_segmenter(cpu_engine, filter_mode, resize):
    """Same engine, device pre/post vs CPU pre/post: class maps agree except at float ties."""
    cpu = Segmenter(cpu_engine, filter_mode, resize, remap="driving5")
    dev = CudaSegmenter(cpu_engine, filter_mode, resize, remap="driving5", overlay_alpha=0.5)
    overlay = Overlay(dev.class_names, dev.palette, 0.5, legend=False, hud=False)
    for seed in range(3):
        frame = textured_frame((270, 480), seed)
        ref = cpu(frame)
        result = dev.segment(frame)
        labels, times = result.labels, result.stages_ms
        assert labels.shape == (270, 480) and labels.dtype == np.uint8
        assert (labels == ref).mean() >= 0.999
        assert set(times) == {"preprocess", "infer", "postprocess"}
        blend = overlay(frame, labels)
        assert np.abs(result.overlay.astype(int) - blend).max() <= 1
    dev.close()


def test_cuda_segmenter_ring_blocks_until_another_thread_collects(cpu_engine):
    import queue
    import threading

    seg = CudaSegmenter(cpu_engine, overlay_alpha=None, slots=2)
    frames = [textured_frame((120, 160), s) for s in range(5)]
    jobs = [seg.submit(frames[0]), seg.submit(frames[1])]
    with pytest.raises(RuntimeError, match="2 frames already in flight"):
        seg.submit(frames[2], block=False)
    results = [j.result() for j in jobs]
    with pytest.raises(RuntimeError, match="already collected"):
        jobs[0].result()
    assert results[0].overlay is None                              # no device overlay asked
    assert np.array_equal(results[1].labels, seg(frames[1]))
    # The pipeline's shape: one thread submits all frames (waiting for free slots), another
    # collects them in order.
    q: queue.Queue = queue.Queue()
    submitter = threading.Thread(target=lambda: [q.put(seg.submit(f)) for f in frames])
    submitter.start()
    collected = [q.get(timeout=30).result() for _ in frames]
    submitter.join(timeout=30)
    assert not submitter.is_alive()
    assert all(np.array_equal(r.labels, seg(f)) for r, f in zip(collected, frames))
    assert all("infer" in r.stages_ms for r in collected)
    seg.close()
    with pytest.raises(RuntimeError, match="closed"):
        seg(frames[0])
    with pytest.raises(ValueError, match="uint8 numpy"):
        CudaSegmenter(cpu_engine).submit(frames[0].astype(np.float32))


def test_pipeline_publishes_device_overlay(cpu_engine, tmp_path):
    """CudaSegmenter in the real pipeline (on CPU tensors): every frame, in order, its blend
    published with legend and HUD drawn over it."""
    seg = CudaSegmenter(cpu_engine, overlay_alpha=0.5)
    published = []
    p = Pipeline(open_source("synthetic:?w=160&h=120&frames=12"), seg,
                 Overlay(seg.class_names, seg.palette, 0.5), [],
                 JsonlSink(tmp_path / "f.jsonl"), queue_size=2,
                 on_frame=lambda f: published.append(f.index))
    stats = p.run()
    assert stats.frames_out == 12 and published == list(range(12))
    recs = read_jsonl(tmp_path / "f.jsonl")
    assert {"preprocess", "infer", "postprocess", "overlay"} <= set(recs[0]["stages_ms"])


def test_make_segmenter_and_timer_on_cpu(cpu_engine):
    seg = make_segmenter(cpu_engine, overlay_alpha=0.5)
    assert type(seg) is Segmenter
    t = StageTimer("cpu")
    with t.stage("preprocess"):
        pass
    t.add_host_ms("preprocess", 2.0)
    with t.stage("infer"):
        pass
    ms = t.read()
    assert list(ms) == ["preprocess", "infer"] and ms["preprocess"] >= 2.0


def test_engines_on_cpu_take_tensors_and_refuse_gpu_options(tiny_ckpt, tmp_path):
    with pytest.raises(ValueError, match="fp16 and cuda_graphs need a CUDA device"):
        load_engine("torch", tiny_ckpt, fp16=True)
    eng = load_engine("torch", tiny_ckpt, channels_last=True)
    x, _ = preprocess(textured_frame((96, 128)), (96, 128), MEAN, STD)
    ref = eng.infer(x)
    out = eng.infer(torch.from_numpy(x))
    assert isinstance(out, torch.Tensor) and np.allclose(out.numpy(), ref, atol=1e-4)
    ort = load_engine("onnxruntime", tiny_onnx(tmp_path / "tiny.onnx"))
    y = ort.infer(torch.from_numpy(np.ascontiguousarray(x[:, :, :64, :96])))
    assert isinstance(y, torch.Tensor) and y.shape[1] == 11
    assert ort.input_dtype == "float32"


# ---------------------------------------------------------------- on a CUDA device
@pytest.fixture(scope="module")
def cuda_engine(tiny_ckpt):
    if not HAVE_CUDA:
        pytest.skip("no CUDA device")
    eng = load_engine("torch", tiny_ckpt, device="cuda")
    yield eng
    eng.close()


@cuda_test
@pytest.mark.parametrize("frame_hw, input_hw, mode", PRE_CASES)
def test_cuda_preprocess_matches_cv2(frame_hw, input_hw, mode):
    frame = textured_frame(frame_hw)
    u8, geom = device_preprocess(frame, input_hw, mode, "uint8_nhwc_bgr", device="cuda")
    ref_u8, ref_geom = preprocess(frame, input_hw, MEAN, STD, mode, "uint8_nhwc_bgr")
    assert geom == ref_geom and np.array_equal(u8.cpu().numpy(), ref_u8)
    gpu, _ = device_preprocess(frame, input_hw, mode, device="cuda", dtype=torch.float16,
                               channels_last=True)
    ref, _ = preprocess(frame, input_hw, MEAN, STD, mode)
    np.testing.assert_allclose(gpu.float().cpu().numpy(), ref, rtol=0, atol=3e-3)


@cuda_test
@pytest.mark.parametrize("frame_hw, input_hw, mode", POST_CASES)
@pytest.mark.parametrize("filter_mode", ["linear", "point"])
def test_cuda_postprocess_and_overlay_match_cpu(frame_hw, input_hw, mode, filter_mode):
    geom = geometry(frame_hw, input_hw, mode)
    logits = smooth_logits(11, input_hw[0] // 4, input_hw[1] // 4)
    ref = Postprocessor(filter_mode)(logits, geom)
    out = torch.empty(frame_hw, dtype=torch.uint8, device="cuda")
    DevicePostprocessor(filter_mode)(torch.from_numpy(logits).cuda(), geom, out)
    agree = float((out.cpu().numpy() == ref).mean())
    assert agree >= (0.999 if filter_mode == "linear" else 1.0), f"agreement {agree:.5f}"
    frame = textured_frame(frame_hw)
    blend = torch.empty((*frame_hw, 3), dtype=torch.uint8, device="cuda")
    DeviceOverlay(CAMVID11.palette, 0.5)(torch.from_numpy(frame).cuda(), out, blend)
    want = Overlay(CAMVID11.class_names, CAMVID11.palette, 0.5, legend=False, hud=False)(
        frame, out.cpu().numpy())
    assert np.abs(blend.cpu().numpy().astype(int) - want).max() <= 1


@cuda_test
def test_pinned_upload_reuses_buffers():
    up = FrameUploader("cuda", slots=2)
    stream = torch.cuda.Stream()
    ptrs = set()
    for i in range(4):
        frame = textured_frame((1080, 1920), seed=i)
        up.stage(frame, i % 2)
        assert up._host[i % 2].is_pinned()
        with torch.cuda.stream(stream):
            dev = up.copy(i % 2)
        stream.synchronize()
        assert dev.is_cuda and np.array_equal(dev.cpu().numpy(), frame)
        ptrs.add(dev.data_ptr())
    assert len(ptrs) == 2
    up.close()


@cuda_test
def test_cuda_pre_and_post_allocate_nothing_in_steady_state():
    pre = DevicePreprocessor((360, 480), MEAN, STD, "letterbox")
    batch = pre.new_batch("cuda", torch.float16, channels_last=True)
    post = DevicePostprocessor("linear")
    frame = torch.from_numpy(textured_frame((1080, 1920))).cuda()
    logits = torch.from_numpy(smooth_logits(11, 90, 120)).cuda().half()
    labels = torch.empty((1080, 1920), dtype=torch.uint8, device="cuda")
    geom = pre(frame, batch)
    post(logits, geom, labels)
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    for _ in range(5):
        geom = pre(frame, batch)
        post(logits, geom, labels)
    torch.cuda.synchronize()
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == before


@cuda_test
def test_cuda_graphs_equal_eager_and_fp16_close(tiny_ckpt):
    x = torch.from_numpy(preprocess(textured_frame((360, 480)), (96, 128), MEAN, STD)[0]).cuda()
    eager = load_engine("torch", tiny_ckpt, device="cuda")
    graphs = load_engine("torch", tiny_ckpt, device="cuda", cuda_graphs=True)
    ref = eager.infer(x).clone()
    for _ in range(3):                                   # capture, then replays
        out = graphs.infer(x)
    torch.cuda.synchronize()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    half = load_engine("torch", tiny_ckpt, device="cuda", fp16=True, channels_last=True,
                       cuda_graphs=True)
    assert half.spec.precision == "fp16" and half.input_dtype == "float16"
    out16 = half.infer(x).float()
    assert (out16.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.99
    for eng in (eager, graphs, half):
        eng.close()


@cuda_test
def test_ort_cuda_io_binding(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime CUDA execution provider not installed")

    eng = load_engine("onnxruntime", tiny_onnx(tmp_path / "tiny.onnx"), device="cuda")
    assert "CUDAExecutionProvider" in eng.spec.providers
    x = preprocess(textured_frame((64, 96)), (64, 96), MEAN, STD)[0]
    ref = eng.infer(x)                                             # numpy path
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        xt = torch.from_numpy(x).cuda()
        out = eng.infer(xt)
        ptr = out.data_ptr()
        out2 = eng.infer(xt)
    stream.synchronize()
    assert out.is_cuda and out2.data_ptr() == ptr
    got = out2.cpu().numpy()                             # TF32 convolutions: loose values
    np.testing.assert_allclose(got, ref, rtol=2e-2, atol=2e-2)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.99
    eng.close()


@cuda_test
def test_cuda_event_timer_measures_device_time():
    t = StageTimer(torch.device("cuda"))
    s = torch.cuda.Stream()
    with torch.cuda.stream(s), t.stage("infer"):
        torch.cuda._sleep(50_000_000)                                # ~tens of ms of GPU time
    ms = t.read()
    assert list(ms) == ["infer"] and ms["infer"] > 1.0


@cuda_test
def test_cuda_segmenter_overlaps_upload_with_inference(tiny_ckpt):
    """With a slow engine, frame N+1's preprocess starts on the upload stream before frame N's
    inference ends on the compute stream (events on one GPU timeline)."""
    eng = load_engine("torch", tiny_ckpt, device="cuda", fp16=True, channels_last=True)

    class Slow:
        spec, input_dtype, channels_last = eng.spec, eng.input_dtype, True

        @staticmethod
        def infer(x):
            torch.cuda._sleep(20_000_000)
            return eng.infer(x)

    seg = CudaSegmenter(Slow(), overlay_alpha=0.5)
    frame = textured_frame((1080, 1920))
    seg(frame)                                                       # allocate
    a, b = seg.submit(frame), seg.submit(frame)
    a.result(), b.result()
    infer_stop = a._slot.timer._events["infer"][1]
    pre_start = b._slot.timer._events["preprocess"][0]
    assert pre_start.elapsed_time(infer_stop) > 0                  # start(N+1) < stop(N)
    seg.close()
    eng.close()


@cuda_test
@pytest.mark.parametrize("filter_mode", ["linear", "point"])
def test_cuda_segmenter_matches_cpu_segmenter(tiny_ckpt, cpu_engine, filter_mode):
    gpu_engine = load_engine("torch", tiny_ckpt, device="cuda")      # fp32, like the CPU one
    gpu = make_segmenter(gpu_engine, filter_mode, overlay_alpha=0.5)
    assert isinstance(gpu, CudaSegmenter)
    gpu.warmup()
    cpu = Segmenter(cpu_engine, filter_mode)
    for seed in range(3):
        frame = textured_frame((1080, 1920), seed)
        result = gpu.segment(frame)
        labels, times = result.labels, result.stages_ms
        ref = cpu(frame)
        assert (labels == ref).mean() >= 0.99
        assert result.overlay.shape == (1080, 1920, 3)
        assert set(times) == {"preprocess", "infer", "postprocess"}
    gpu.close()
    gpu_engine.close()


@cuda_test
@needs_ffmpeg
@pytest.mark.slow
def test_run_cli_cuda_on_1080p_clip(shared_data, tmp_path, tiny_ckpt):
    clip = tmp_path / "highway_1080p.mp4"
    ffmpeg("-i", HIGHWAY_CLIP, "-t", 2, "-vf", "scale=1920:1080", "-c:v", "libx264",
           "-preset", "ultrafast", clip)
    out = tmp_path / "run"
    r = run_cli("run", "--backend", "torch", "--source", str(clip), "--model", str(tiny_ckpt), "--device", "cuda",
                "--output", str(out), "--save-masks", "--max-frames", "30")
    assert r.returncode == 0, r.stderr
    s = read_summary(out)
    assert s["model"]["device"].startswith("cuda") and s["frames_out"] == s["frames_in"] == 30
    for stage in ("preprocess", "infer", "postprocess", "overlay"):
        assert s["stages_ms"][stage]["p50"] > 0
    mask = cv2.imread(str(sorted((out / "masks").iterdir())[0]), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (1080, 1920) and mask.max() < 11
