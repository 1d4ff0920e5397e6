"""Postprocess cost at frame size: naive F.interpolate(all classes)+argmax vs linear/point.

    python benchmarks/bench_postprocess.py [--model CKPT] [--frame 540x960] [--iters 30]

Logits: by default smooth random logits (11 classes at 90x120, bicubic-upsampled noise, a
harsh ~30 % boundary band); with --model, a checkpoint's real logits on the highway clip
(e.g. a trained MobileSeg). Prints median/p95 ms and the share of frame pixels that needed the
full C-class interpolation ("band"). Not a test: nothing asserts a time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivesegrt.infer.postprocess import Postprocessor, _band_cells, _expand, _tables  # noqa: E402
from drivesegrt.preprocess import Geometry  # noqa: E402

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / \
    "udacity_lanelines_solidWhiteRight.mp4"


def timed(fn, iters):
    fn()                                                    # warm-up (buffers, caches)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts)), float(np.percentile(ts, 95))


def model_logits(path, frame_hw):
    import cv2

    from drivesegrt.models.checkpoint import load_model
    from drivesegrt.preprocess import preprocess

    model, meta = load_model(path)
    cap = cv2.VideoCapture(str(CLIP))
    for _ in range(60):
        ok, frame = cap.read()
    frame = cv2.resize(frame, frame_hw[::-1])
    x, _ = preprocess(frame, meta.input_size, meta.mean, meta.std)
    with torch.inference_mode():
        return model(torch.from_numpy(x))[0].numpy(), meta.input_size


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", help="checkpoint for real logits (default: smooth random logits)")
    p.add_argument("--frame", default="540x960", help="frame HxW")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--threads", type=int, default=1, help="torch threads for the naive path")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    fh, fw = (int(v) for v in a.frame.split("x"))
    if a.model:
        logits, input_hw = model_logits(a.model, (fh, fw))
    else:
        g = torch.Generator().manual_seed(0)
        logits = F.interpolate(torch.randn(1, 11, 12, 16, generator=g) * 3, size=(90, 120),
                               mode="bicubic", align_corners=False)[0].numpy().copy()
        input_hw = (360, 480)
    c, h, w = logits.shape
    geom = Geometry((fh, fw), tuple(input_hw), (0, 0, *input_hw))
    t = torch.from_numpy(logits)[None]
    ref = F.interpolate(t, size=(fh, fw), mode="bilinear", align_corners=False)[0].argmax(0).numpy()
    (y0, _, _, _), (x0, _, _, _) = _tables(geom, (h, w))
    band = float((_expand(_band_cells(logits.argmax(0).astype(np.uint8), None), y0, x0) == 255).mean())
    print(f"logits {c}x{h}x{w} -> frame {fh}x{fw}; band {band * 100:.1f} % of pixels; "
          f"torch threads {a.threads}")
    naive = timed(lambda: F.interpolate(t, size=(fh, fw), mode="bilinear",
                                        align_corners=False)[0].argmax(0).numpy(), a.iters)
    print(f"{'naive F.interpolate+argmax':<28} p50 {naive[0]:7.2f} ms  p95 {naive[1]:7.2f} ms")
    for mode in ("linear", "point"):
        post = Postprocessor(mode)
        agree = float((post(logits, geom) == ref).mean())
        p50, p95 = timed(lambda: post(logits, geom), a.iters)
        print(f"{mode:<28} p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  agrees with naive on "
              f"{agree * 100:.3f} % of pixels")


if __name__ == "__main__":
    main()
