"""GPU pipeline benchmark: 1080p driving video -> model at 360x480 and 512x1024.

    python benchmarks/gpu_pipeline.py [--model CKPT] [--frames 300] [--cuda-graphs]
                                      [--sizes 360x480,512x1024] [--json OUT] [--markdown OUT]

For each model input size, on the CUDA device:

- engine only: ``engine.infer`` on a device batch, back to back (the ceiling);
- segmenter: ``CudaSegmenter`` over in-memory 1080p frames, one frame submitted ahead (upload,
  preprocess, inference, upsample+argmax, overlay blend, uint8 labels+overlay to the host):
  FPS and its ratio to engine-only (the issue's target: >= 0.9);
- pipeline: the threaded ``Pipeline`` on the 1080p video file (decode, segment, overlay with
  legend/HUD, frames.jsonl; no video encode), FPS;
- pre/post ms per frame: GPU (CUDA-event stage times of CudaSegmenter, as in frames.jsonl) vs
  CPU (numpy/cv2 Segmenter on the same frames).

The 1080p video is the shared highway clip scaled up with ffmpeg. Model: ``--model`` (a
checkpoint), else the bundled one, else a random-weight full-width MobileSeg (speed does not
depend on the weights). Without a CUDA device it says so and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIP = ROOT.parent / "shared" / "data" / "videos" / "udacity_lanelines_solidWhiteRight.mp4"
BUNDLED = ROOT / "drivesegrt" / "weights" / "mobileseg_camvid.pt"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint (default: bundled, else random MobileSeg)")
    p.add_argument("--clip", default=str(CLIP), help="source clip, scaled to 1920x1080")
    p.add_argument("--sizes", default="360x480,512x1024", help="model input sizes HxW")
    p.add_argument("--frames", type=int, default=300, help="frames per measurement")
    p.add_argument("--cpu-frames", type=int, default=20, help="frames for the CPU pre/post")
    p.add_argument("--fp32", action="store_true", help="fp32 instead of fp16 + channels_last")
    p.add_argument("--cuda-graphs", action="store_true", help="replay a captured CUDA graph")
    p.add_argument("--json", help="write the results as JSON")
    p.add_argument("--markdown", help="write the results table (markdown) to this file")
    return p.parse_args(argv)


def model_path(arg: str | None, workdir: Path) -> Path:
    if arg:
        return Path(arg)
    if BUNDLED.is_file():
        return BUNDLED
    import torch

    from drivesegrt.labels import CAMVID11
    from drivesegrt.meta import ModelMeta
    from drivesegrt.models import build_model
    from drivesegrt.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = workdir / "mobileseg_random.pt"
    save_checkpoint(path, build_model("mobileseg", CAMVID11.num_classes),
                    ModelMeta.for_label_set("mobileseg", CAMVID11))
    return path


def make_1080p(clip: Path, out: Path, frames: int) -> Path:
    if shutil.which("ffmpeg") is None:
        raise SystemExit("gpu_pipeline: ffmpeg is needed to scale the clip to 1080p")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-frames:v", str(frames),
                    "-vf", "scale=1920:1080", "-c:v", "libx264", "-preset", "veryfast",
                    "-crf", "18", str(out)], check=True)
    return out


def read_frames(video: Path, n: int) -> list[np.ndarray]:
    from drivesegrt.infer.pick import first_frames

    frames = first_frames(video, n)
    if not frames:
        raise SystemExit(f"gpu_pipeline: could not decode {video}")
    return frames


def engine_only_fps(engine, batch, iters: int) -> float:
    import torch

    for _ in range(10):
        engine.infer(batch)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        engine.infer(batch)
    torch.cuda.synchronize()
    return iters / (time.perf_counter() - t0)


def segmenter_run(seg, frames: list[np.ndarray], iters: int):
    """FPS of CudaSegmenter with one frame in flight ahead, and its per-stage ms."""
    from drivesegrt.timing import StageStats

    stats = StageStats()
    for f in frames[:5]:
        seg(f)
    t0 = time.perf_counter()
    pending = seg.submit(frames[0])
    for i in range(1, iters + 1):
        nxt = seg.submit(frames[i % len(frames)]) if i < iters else None
        stats.add_all(pending.result().stages_ms)
        pending = nxt
    return iters / (time.perf_counter() - t0), stats


def pipeline_fps(seg, video: Path, workdir: Path, frames: int) -> float:
    from drivesegrt.capture import open_source
    from drivesegrt.pipeline import Pipeline
    from drivesegrt.publish.overlay import Overlay
    from drivesegrt.publish.sinks import JsonlSink

    source = open_source(str(video))
    try:
        p = Pipeline(source, seg, Overlay(seg.class_names, seg.palette, 0.5), [],
                     JsonlSink(workdir / "frames.jsonl"), max_frames=frames)
        return p.run().fps
    finally:
        source.close()


def cpu_pre_post_ms(path: Path, size, frames: list[np.ndarray]):
    from drivesegrt.engines import load_engine
    from drivesegrt.infer.segmenter import Segmenter
    from drivesegrt.timing import StageStats

    engine = load_engine("torch", str(path), device="cpu")
    seg = Segmenter(engine, "linear", input_size=size)
    stats = StageStats()
    for f in frames:
        stats.add_all(seg.segment(f).stages_ms)
    engine.close()
    return {k: float(np.median(stats.values(k))) for k in ("preprocess", "postprocess")}


def bench_size(args, path: Path, size, frames, video: Path, workdir: Path) -> dict:
    import torch

    from drivesegrt.engines import load_engine
    from drivesegrt.infer.build import engine_options, make_segmenter

    opts = engine_options("torch", "cuda", fp16=not args.fp32, cuda_graphs=args.cuda_graphs)
    engine = load_engine("torch", str(path), device="cuda", **opts)
    seg = make_segmenter(engine, "linear", input_size=size, overlay_alpha=0.5)
    seg.warmup()
    batch = seg._pre.new_batch(seg.device, getattr(torch, engine.input_dtype),
                               engine.channels_last)
    eng_fps = engine_only_fps(engine, batch, args.frames)
    seg_fps, stats = segmenter_run(seg, frames, args.frames)
    pipe_fps = pipeline_fps(seg, video, workdir, min(args.frames, len(frames)))
    gpu = {k: float(np.median(stats.values(k))) for k in ("preprocess", "infer", "postprocess")}
    cpu = cpu_pre_post_ms(path, size, frames[: args.cpu_frames])
    seg.close()
    engine.close()
    torch.cuda.empty_cache()
    return {"input": f"{size[0]}x{size[1]}", "engine_fps": eng_fps, "segmenter_fps": seg_fps,
            "ratio": seg_fps / eng_fps, "pipeline_fps": pipe_fps, "gpu_ms": gpu, "cpu_ms": cpu}


def table(results: list[dict], device: str, args) -> str:
    prec = "fp32" if args.fp32 else "fp16 + channels_last"
    lines = [f"GPU pipeline, {device}, {prec}{' + CUDA graphs' if args.cuda_graphs else ''}, "
             f"1920x1080 frames, {time.strftime('%Y-%m-%d')}", "",
             "| model input | engine FPS | segmenter FPS (ratio) | pipeline FPS | "
             "pre ms GPU / CPU | post ms GPU / CPU | infer ms (events) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        g, c = r["gpu_ms"], r["cpu_ms"]
        lines.append(f"| {r['input']} | {r['engine_fps']:.1f} | {r['segmenter_fps']:.1f} "
                     f"({r['ratio']:.2f}x) | {r['pipeline_fps']:.1f} | "
                     f"{g['preprocess']:.2f} / {c['preprocess']:.2f} | "
                     f"{g['postprocess']:.2f} / {c['postprocess']:.2f} | {g['infer']:.2f} |")
    return "\n".join(lines) + "\n"


def main(args) -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu_pipeline: no CUDA device here (torch.cuda.is_available() is False); run this "
              "benchmark on a machine with an NVIDIA GPU and a CUDA build of torch",
              file=sys.stderr)
        return 2
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    device = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path = model_path(args.model, workdir)
        video = make_1080p(Path(args.clip), workdir / "clip_1080p.mp4", args.frames)
        frames = read_frames(video, min(args.frames, 120))
        results = [bench_size(args, path, size, frames, video, workdir) for size in sizes]
    md = table(results, device, args)
    print(md)
    if args.markdown:
        Path(args.markdown).write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "model": str(path),
                                               "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
