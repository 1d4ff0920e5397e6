"""Where an ONNX model's time goes in ONNX Runtime (CPU): per op type and per node.

    python benchmarks/profile_onnx.py MODEL.onnx [MODEL2.onnx ...] [--hw 360x480] [--threads 0]
        [--runs 100] [--top 15]

Runs each model on random input (float NCHW or uint8 NHWC, as its input asks) with ORT's
profiler on, after warm-up, and prints the mean kernel time per run of each op type and of the
``--top`` slowest nodes (names as ORT reports them after its graph optimizations, e.g. a
QDQ ``Conv`` becomes ``QLinearConv``). Threads do not spin, as in the pipeline.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter

import numpy as np
import onnxruntime as ort


def profile(path: str, hw: tuple[int, int], threads: int, runs: int) -> tuple[Counter, Counter]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    h, w = hw
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8) if "uint8" in inp.type
         else rng.standard_normal((1, 3, h, w)).astype(np.float32))
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
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = all cores)")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    hw = tuple(int(v) for v in args.hw.split("x"))
    for path in args.models:
        by_op, by_node = profile(path, hw, args.threads, args.runs)
        print(f"{path}: kernel time {sum(by_op.values()):.2f} ms per run "
              f"({args.hw}, threads {args.threads or 'all'})")
        for op, ms in by_op.most_common():
            print(f"  {op:<26} {ms:6.3f} ms")
        print(f"  slowest {args.top} nodes:")
        for (op, name), ms in by_node.most_common(args.top):
            print(f"    {ms:6.3f} ms  {op:<18} {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
