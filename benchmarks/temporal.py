"""Cost per frame of the temporal and driving outputs, and the flow preset of the smoothing.

    python benchmarks/temporal.py [--iters 100] [--json OUT]

Part 1, cost: the bundled model's real logits on 100 frames of the 960x540 highway clip; each
option's own work per frame (what it adds to the infer, publish or writer thread), timed
interleaved over the same frames (the machine is shared, so read the numbers as rough):
thumbnail (infer thread), softmax, EMA, EMA + flow, confidence map, figures (publish thread),
confidence PNG (writer thread), against the plain ``linear`` postprocess.

Part 2, flow preset: ``ema:0.5:flow`` over the CamVid 0016E5 sequence (val, 101 labelled
frames) with each DIS preset: mIoU, TC, flicker and the flow's ms per frame. The bundled
model was chosen on val: stability figures, not accuracy claims. Not a test: nothing asserts.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drivesegrt.capture import open_source  # noqa: E402
from drivesegrt.data.camvid import read_image  # noqa: E402
from drivesegrt.data.splits import open_split  # noqa: E402
from drivesegrt.infer.build import load_segmenter  # noqa: E402
from drivesegrt.infer.postprocess import Postprocessor, upsample_plane  # noqa: E402
from drivesegrt.infer.temporal import (  # noqa: E402
    TemporalFilter,
    TemporalSpec,
    low_res_gray,
    softmax,
)
from drivesegrt.preprocess import preprocess  # noqa: E402
from drivesegrt.publish.driving import DrivingFigures  # noqa: E402
from drivesegrt.publish.sinks import ConfidenceSink  # noqa: E402
from drivesegrt.train.metrics import confusion_matrix, scores  # noqa: E402
from drivesegrt.train.temporal import FlowWarp, TemporalScores, warp_labels  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CLIP = SHARED / "videos" / "udacity_lanelines_solidWhiteRight.mp4"
PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
           "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST, "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


def engine_outputs(seg, frames):
    """(logits (C, h, w), Geometry) of each frame, through the run's own preprocessing."""
    out = []
    for f in frames:
        batch, geom = preprocess(f, seg.input_size, seg.meta.mean, seg.meta.std, seg.resize,
                                 seg.meta.input_format)
        out.append((seg.engine.infer(batch)[0], geom))
    return out


def read_clip(n):
    """The first ``n`` frames of the highway clip, decoded as ``run`` decodes them."""
    source = open_source(str(CLIP))
    frames = [f.image for f in itertools.islice(iter(source.read, None), n)]
    source.close()
    return frames


def cost(seg, iters):
    """ms per frame of each option's own work, interleaved frame by frame."""
    frames = read_clip(iters)
    outs = engine_outputs(seg, frames)
    post = Postprocessor("linear")
    ema, flow = TemporalFilter(TemporalSpec(0.5)), TemporalFilter(TemporalSpec(0.5, True))
    figures = {
        "coverage": DrivingFigures(seg.class_names, drivable=False),
        "drivable": DrivingFigures(seg.class_names, coverage=False),
        "roi (1 region)": DrivingFigures(seg.class_names, coverage=False, drivable=False,
                                         rois={"ego": (0.35, 0.55, 0.65, 1.0)}),
    }
    conf_stats = DrivingFigures(seg.class_names, coverage=False, drivable=False)
    times: dict[str, list[float]] = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        r = fn(*args)
        times.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
        return r

    for frame, (logits, geom) in zip(frames, outs):
        labels = timed("postprocess linear (baseline, every run)", post, logits, geom)
        gray = timed("thumbnail (infer thread, smoothing)", low_res_gray, frame, geom,
                     logits.shape[1:])
        probs = timed("softmax (smoothing or confidence)", softmax, logits)
        timed("EMA, ema:A", ema, probs, gray)
        smoothed, _ = timed("EMA + flow, ema:A:flow", flow, probs, gray)
        timed("postprocess linear on probabilities", post, smoothed, geom)
        conf = timed("confidence map (max, upsample, uint8)",
                     lambda p: cv2.convertScaleAbs(upsample_plane(p.max(0), geom), alpha=255.0),
                     smoothed)
        for name, fig in figures.items():
            timed(f"figures: {name}", fig.measure, labels)
        timed("figures: confidence mean, low_share", conf_stats.measure, labels, conf)
        timed("confidence PNG encode (writer thread)", cv2.imencode, ".png", conf,
              list(ConfidenceSink.params))
    skip = 5                                               # warm-up frames
    return {k: {"p50": round(float(np.median(v[skip:])), 3),
                "p95": round(float(np.percentile(v[skip:], 95)), 3)} for k, v in times.items()}


def presets(seg):
    """ema:0.5:flow over CamVid 0016E5 with each DIS preset: mIoU, TC, flicker, flow ms."""
    split = open_split(SHARED / "camvid", "val")
    images = [read_image(p) for p, _ in split.pairs]
    labels = [split.read_label(p, im.shape) for (_, p), im in zip(split.pairs, images)]
    outs = engine_outputs(seg, images)
    warper = FlowWarp()
    warps = [warper(a, b) for a, b in zip(images, images[1:])]
    c = split.labels.num_classes
    post = Postprocessor("linear")
    rows = {}
    for name, preset in [("none", None), *PRESETS.items()]:
        smooth = None if preset is None else TemporalFilter(TemporalSpec(0.5, True), preset)
        preds, ms = [], []
        for image, (logits, geom) in zip(images, outs):
            scores_ = logits
            if smooth is not None:
                gray = low_res_gray(image, geom, logits.shape[1:])
                t0 = time.perf_counter()
                scores_, _ = smooth(softmax(logits), gray)
                ms.append((time.perf_counter() - t0) * 1e3)
            preds.append(post(scores_, geom))
        cm = sum(confusion_matrix(p, g, c) for p, g in zip(preds, labels))
        stab = TemporalScores(c)
        for t, w in enumerate(warps):
            stab.add_pair(preds[t], preds[t + 1], labels[t], warp_labels(labels[t + 1], w), w)
        s = stab.summary()
        rows[name] = {"miou": round(100 * scores(cm)["miou"], 2), "tc": round(100 * s["tc"], 2),
                      "flicker": round(100 * s["flicker"], 3),
                      "smoothing_ms_p50": round(float(np.median(ms[1:])), 3) if ms else None}
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=100, help="highway frames timed")
    p.add_argument("--json", help="write the results as JSON")
    args = p.parse_args()
    seg = load_segmenter(threads=1)
    c = cost(seg, args.iters)
    print(f"cost per 960x540 frame (bundled model, logits 11x90x120; {args.iters} frames, "
          f"interleaved; ms)")
    for k, v in c.items():
        print(f"  {k:<44} p50 {v['p50']:7.3f}  p95 {v['p95']:7.3f}")
    r = presets(seg)
    print("ema:0.5:flow on CamVid 0016E5 (val: stability figures, not accuracy claims)")
    for k, v in r.items():
        ms = "" if v["smoothing_ms_p50"] is None else f"  smoothing {v['smoothing_ms_p50']:.2f} ms"
        print(f"  DIS {k:<10} mIoU {v['miou']:6.2f}  TC {v['tc']:6.2f}  flicker "
              f"{v['flicker']:6.3f} %{ms}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cost_ms": c, "flow_presets": r}, indent=2) + "\n")


if __name__ == "__main__":
    main()
