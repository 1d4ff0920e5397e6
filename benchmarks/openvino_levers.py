"""Two OpenVINO speed levers for ESPNetv2, timed interleaved on one model (not shipped):

- bf16 inference precision (``INFERENCE_PRECISION_HINT``) on a CPU with AVX512-BF16 or AMX,
  against the f32 the OpenVINO engine pins;
- an export with native PRelu nodes (which OpenVINO fuses into the preceding convolution),
  against our export's Relu/Sub/Mul/Add (chosen because ONNX Runtime's PRelu is slow).

    python benchmarks/openvino_levers.py [--model drivesegrt/weights/espnetv2_camvid.pt] [--rounds 6]

Prints p50 ms per variant (bursts of 10 calls, variants in turn) (batch 1, the model's input size, 2 threads, a real highway frame)
and each variant's argmax agreement with f32 + our export.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import drivesegrt.models.espnetv2 as espnetv2  # noqa: E402
from drivesegrt.deploy.export import export_onnx  # noqa: E402
from drivesegrt.models.checkpoint import load_model  # noqa: E402

VIDEO = ROOT.parent / "shared" / "data" / "videos" / "udacity_lanelines_solidWhiteRight.mp4"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "drivesegrt/weights/espnetv2_camvid.pt"))
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import openvino as ov

    model, meta = load_model(args.model)
    tmp = Path(tempfile.mkdtemp())
    ours, native = tmp / "ours.onnx", tmp / "native_prelu.onnx"
    export_onnx(model, meta, ours, uint8_input=True)
    decomposed = espnetv2.PReLU.forward
    espnetv2.PReLU.forward = lambda self, x: F.prelu(x, self.weight)
    try:
        export_onnx(model, meta, native, uint8_input=True)
    finally:
        espnetv2.PReLU.forward = decomposed

    core = ov.Core()
    variants = {}
    for name, path in (("ours", ours), ("native PRelu", native)):
        for precision in ("f32", "bf16"):
            variants[f"{name}, {precision}"] = core.compile_model(
                core.read_model(str(path)), "CPU",
                {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                 "INFERENCE_NUM_THREADS": args.threads})
    ok, frame = cv2.VideoCapture(str(VIDEO)).read()
    if not ok:
        raise SystemExit(f"cannot read {VIDEO}")
    h, w = meta.input_size
    x = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)[None]
    ref = variants["ours, f32"](x)[0].argmax(1)
    # bursts of 10 calls per variant in turn: one call right after another model's leaves
    # that model's worker threads still spinning, which slows the next one
    times = {k: [] for k in variants}
    for _ in range(args.rounds):
        for k, compiled in variants.items():
            compiled(x)
            for _ in range(10):
                t = time.perf_counter()
                compiled(x)
                times[k].append((time.perf_counter() - t) * 1e3)
    base = np.median(times["ours, f32"])
    print(f"{Path(args.model).name} at {h}x{w}, OpenVINO {ov.get_version().split('-')[0]}, "
          f"{args.threads} threads, {args.rounds} rounds of 10-call bursts in turn")
    for k, compiled in variants.items():
        agree = (compiled(x)[0].argmax(1) == ref).mean() * 100
        p50 = np.median(times[k])
        print(f"  {k:20s} p50 {p50:7.2f} ms  x{base / p50:4.2f}  argmax agreement {agree:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
