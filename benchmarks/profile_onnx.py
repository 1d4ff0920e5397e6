"""Where an ONNX model's time goes in ONNX Runtime or OpenVINO (CPU): per op type and per node.

    python benchmarks/profile_onnx.py MODEL.onnx [MODEL2.onnx ...] [--hw 360x480] [--threads 0]
        [--runs 100] [--top 15] [--runtime onnxruntime|openvino]

Runs each model on random input (float NCHW or uint8 NHWC, as its input asks) with the runtime's
profiler on, after warm-up, and prints the mean kernel time per run of each op type and of the
``--top`` slowest nodes (names as the runtime reports them after its graph optimizations: ORT
turns a QDQ ``Conv`` into ``QLinearConv``; OpenVINO's op types carry the kernel, e.g.
``Convolution/brgconv_avx512_1x1_I8``). ORT threads do not spin, as in the pipeline.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter

import numpy as np
import onnxruntime as ort


def random_input(float_input: bool, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    rng = np.random.default_rng(0)
    return (rng.standard_normal((1, 3, h, w)).astype(np.float32) if float_input
            else rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8))


def profile_openvino(path: str, hw: tuple[int, int], threads: int,
                     runs: int) -> tuple[Counter, Counter]:
    """OpenVINO's per-node PERF_COUNT times (executed nodes), as drivesegrt's engine compiles."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    float_input = model.input(0).get_element_type() == ov.Type.f32
    x = random_input(float_input, hw)
    model.reshape(list(x.shape))
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = core.compile_model(model, "CPU", config).create_infer_request()
    for _ in range(10):
        request.infer({0: x})
    by_op, by_node = Counter(), Counter()
    for _ in range(runs):
        request.infer({0: x})
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                ms = info.real_time.total_seconds() * 1e3 / runs
                by_op[f"{info.node_type}/{info.exec_type}"] += ms
                by_node[(info.node_type, info.node_name)] += ms
    return by_op, by_node


def profile(path: str, hw: tuple[int, int], threads: int, runs: int) -> tuple[Counter, Counter]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = random_input("uint8" not in inp.type, hw)
    warmup = 10
    for _ in range(warmup + runs):
        sess.run(None, {inp.name: x})
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    by_op, by_node = Counter(), Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            us = e["dur"] / (warmup + runs) / 1000.0
            by_op[e["args"]["op_name"]] += us
            by_node[(e["args"]["op_name"], e["name"][:-len("_kernel_time")])] += us
    return by_op, by_node


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--hw", default="360x480", help="input HxW for dynamic-size models")
    p.add_argument("--threads", type=int, default=0, help="runtime threads (0 = all cores)")
    p.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "openvino"])
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    hw = tuple(int(v) for v in args.hw.split("x"))
    for path in args.models:
        run = profile_openvino if args.runtime == "openvino" else profile
        by_op, by_node = run(path, hw, args.threads, args.runs)
        print(f"{path}: {args.runtime} kernel time {sum(by_op.values()):.2f} ms per run "
              f"({args.hw}, threads {args.threads or 'all'})")
        for op, ms in by_op.most_common():
            print(f"  {op:<40} {ms:6.3f} ms")
        print(f"  slowest {args.top} nodes:")
        for (op, name), ms in by_node.most_common(args.top):
            print(f"    {ms:6.3f} ms  {op:<18} {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
