"""drivesegrt bench on a tiny configuration: it runs and writes well-formed JSON, markdown and plots.
(No timing is asserted: speed targets live in benchmarks/RESULTS.md, not in tests.)"""
from __future__ import annotations

import importlib.util
import json

import torch
from helpers import CAMVID_CLIP, run_cli, tiny_checkpoint

from drivesegrt.bench.engines import time_interleaved


def test_bench_tiny_writes_json_markdown_and_plots(tmp_path, shared_data):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt", input_size=(64, 96))
    out = tmp_path / "bench"
    r = run_cli("bench", "--model", str(ckpt), "--video", str(CAMVID_CLIP),
                "--runtimes", "torch,onnxruntime,openvino,openvino-uint8,tensorrt",
                "--calib-data", str(shared_data / "camvid"), "--resolutions", "64x96",
                "--batches", "1,2", "--pipeline-backends", "onnxruntime", "--frames", "6",
                "--min-seconds", "0.05", "--out", str(out), "--json", str(tmp_path / "b.json"),
                "--run-arg=--max-frames=6", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((tmp_path / "b.json").read_text())
    assert results["machine"]["cores"] >= 1 and results["peak_gflops"] > 0
    rows = {(e["runtime"], e["batch"]): e for e in results["engines"]}
    for runtime in ("torch", "onnxruntime", "openvino", "openvino-uint8"):
        for batch in (1, 2):
            row = rows[(runtime, batch)]
            assert row["ms"]["p50"] > 0 and row["fps"] > 0
            assert row["ms"]["p50"] <= row["ms"]["p95"] <= row["ms"]["p99"]
            assert row["gflops_per_image"] > 0 and 0 < row["efficiency"]
            # speed-up over ORT fp32 timed alongside: p50 ratio, 1.0 for ORT itself
            assert abs(row["vs_onnxruntime"] * row["ms"]["p50"]
                       - rows[("onnxruntime", batch)]["ms"]["p50"]) < 1e-6
        # an int8 row is also compared with its own runtime's fp32, timed alongside
        assert abs(rows[("openvino-uint8", batch)]["vs_own_fp32"] * rows[("openvino-uint8", batch)]
                   ["ms"]["p50"] - rows[("openvino", batch)]["ms"]["p50"]) < 1e-6
        assert "vs_own_fp32" not in rows[("openvino", batch)]
    # TensorRT is timed where it can run, else recorded as skipped with the reason (not dropped)
    for batch in (1, 2):
        trt = rows[("tensorrt", batch)]
        if importlib.util.find_spec("tensorrt") is None:
            assert trt["skipped"] == "tensorrt is not installed" and "fps" not in trt
        elif not torch.cuda.is_available():
            assert trt["skipped"] == "no CUDA device" and "fps" not in trt
        else:
            assert "skipped" not in trt and trt["fps"] > 0
    (pipe,) = results["pipelines"]
    assert pipe["frames_in"] == pipe["frames_out"] == 6
    assert pipe["peak_rss_mib"] > 10 and pipe["cpu_ms_per_frame"] > 0
    assert set(pipe["breakdown"]) >= {"capture", "preprocess", "infer", "postprocess", "overlay"}
    assert abs(sum(v["share"] for v in pipe["breakdown"].values()) - 1) < 0.01
    assert results["naive"]["frames"] == 6 and results["naive"]["fps"] > 0
    assert "onnxruntime pipeline/naive" in results["ratios"]
    md = (out / "results.md").read_text()
    assert "| onnxruntime | 64x96 | 1 |" in md and "Naive sequential loop" in md
    assert "x ORT fp32 | x own fp32" in md and "| 1.00 |" in md
    for png in ("throughput.png", "stages.png", "latency_hist.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_bench_bad_runtime_is_one_line_exit_2(tmp_path):
    r = run_cli("bench", "--runtimes", "tpu", "--out", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr == ("drivesegrt: error: unknown runtime 'tpu'; allowed: torch, "
                        "torch-compile, onnxruntime, onnxruntime-int8, onnxruntime-uint8, "
                        "openvino, openvino-int8, openvino-uint8, opencv-dnn, tensorrt\n")


def test_runtimes_are_timed_interleaved():
    """Round robin in bursts: every runtime sees the same stretch of a drifting machine."""
    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    stats = time_interleaved(fns, min_seconds=0.0, burst=2, warmup=1, min_bursts=3)
    assert calls[:3] == ["a", "b", "c"]                       # warm-up, one each
    assert calls[3:] == ["a", "a", "b", "b", "c", "c"] * 3   # then bursts in turn
    assert {s["iters"] for s in stats.values()} == {6}
    assert all(s["p50"] <= s["p95"] <= s["p99"] for s in stats.values())
