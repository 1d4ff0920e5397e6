"""``drivesegrt bench``: engine-only and end-to-end timing in one run, beside the naive loop.

main(args): probe the machine -> engine-only table (runtimes x resolutions x batches) ->
end-to-end ``drivesegrt run`` per pipeline backend -> the naive sequential loop on the same
video -> ratios -> results.json, results.md, PNG plots in ``--out``.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from ..files import write_json
from ..infer.build import model_path
from ..infer.pick import AUTO_BACKEND
from ..models.checkpoint import load_model
from .engines import RUNTIMES, Artifacts, bench_engines
from .naive import naive_loop
from .pipeline import run_pipeline, stage_breakdown
from .probe import machine_info, matmul_peak_gflops, model_gflops
from .report import markdown, plots, slim


def _resolution(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"bad resolution {text!r}; expected HxW, e.g. 360x480") from None
    return h, w


def bundled_onnx() -> Path:
    return model_path(None, "onnxruntime")


def pick_table(video: str) -> dict:
    """``--pick``: every candidate engine of the bundled ONNX model, timed and checked on the
    video's first frames (generated ones for a synthetic source), and the choice."""
    from ..infer.pick import pick, sample_frames

    choice, tried = pick(bundled_onnx(), sample_frames(video))
    print("engine pick (as run --backend auto):")
    for c in tried:
        print(f"  {c.describe()}")
    print(f"  chose {choice.backend} {choice.path.name}")
    return {"candidates": [c.record() for c in tried], "chosen": choice.record()}


def add_arguments(p):
    p.add_argument("--model", default=str(model_path(None, "torch")),
                   help="torch checkpoint (default: the bundled default model's)")
    p.add_argument("--video", default="synthetic:?w=960&h=540&frames=300",
                   help="source for the end-to-end and naive runs")
    p.add_argument("--runtimes", default="torch,onnxruntime,onnxruntime-int8,onnxruntime-uint8,"
                                         "openvino,openvino-int8,openvino-uint8,opencv-dnn,"
                                         "tensorrt",
                   help=f"engine-only runtimes, comma-separated, from {','.join(RUNTIMES)}")
    p.add_argument("--resolutions", default="360x480,512x1024,720x1280")
    p.add_argument("--batches", default="1,4")
    p.add_argument("--pipeline-backends", default="onnxruntime,torch",
                   help="backends for the end-to-end runs ('' for none)")
    p.add_argument("--frames", type=int, default=None, help="frames per end-to-end run")
    p.add_argument("--no-naive", action="store_true", help="skip the naive baseline loop")
    p.add_argument("--calib-data", default=None,
                   help="CamVid root for the int8 model's calibration (e.g. ../shared/data/camvid)")
    p.add_argument("--threads", type=int, default=0, help="runtime threads (0 = all cores)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per config")
    p.add_argument("--out", default=None, help="output folder (default runs/bench/<time>)")
    p.add_argument("--json", default=None, help="also write the JSON here")
    p.add_argument("--pick", action="store_true",
                   help="also choose the engine by measurement as `run --backend auto` does "
                        "(installed CPU runtimes x the bundled ONNX model and int8 files next "
                        "to it, checked against ONNX Runtime) and run the pipeline with it")
    p.add_argument("--run-arg", action="append", default=[],
                   help="extra argument passed to every `drivesegrt run` (repeatable)")


def main(args) -> int:
    import os

    runtimes = [r for r in args.runtimes.split(",") if r]
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad:
        raise ValueError(f"unknown runtime {bad[0]!r}; allowed: {', '.join(RUNTIMES)}")
    resolutions = [_resolution(r) for r in args.resolutions.split(",") if r]
    batches = [int(b) for b in args.batches.split(",") if b]
    threads = args.threads or os.cpu_count() or 1
    out = Path(args.out or f"runs/bench/{_dt.datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)

    model, meta = load_model(args.model)
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, GPU {info['gpu']}")
    peak = matmul_peak_gflops()
    print(f"matmul peak: {peak:.1f} GFLOP/s (fp32)")
    gflops = {}

    def gflops_fn(hw):
        if hw not in gflops:
            gflops[hw] = model_gflops(model, hw)
        return gflops[hw]

    results = {"machine": info, "peak_gflops": peak, "model": str(args.model),
               "arch": meta.arch, "input_size": list(meta.input_size), "engines": [],
               "pipelines": [], "naive": None, "ratios": {}}
    art = Artifacts(args.model, out / "artifacts", args.calib_data)
    print("engine only:")
    results["engines"] = bench_engines(art, runtimes, resolutions, batches, threads, gflops_fn,
                                       peak, args.min_seconds)

    pipeline_backends = [b for b in args.pipeline_backends.split(",") if b]
    if args.pick:
        results["pick"] = pick_table(args.video)
        pipeline_backends.append(AUTO_BACKEND)
    for backend in pipeline_backends:
        model_path = (str(art.onnx(uint8_input=True)) if backend in ("onnxruntime", "openvino")
                      else str(bundled_onnx()) if backend == AUTO_BACKEND else args.model)
        print(f"end to end ({backend}) on {args.video} ...")
        summary = run_pipeline(args.video, model_path, backend, out / f"run_{backend}",
                               args.frames, args.run_arg)
        stages = summary.get("stages_ms", {})
        summary["backend"] = backend
        summary["source_name"] = Path(args.video).name if "://" not in args.video else args.video
        summary["breakdown"] = stage_breakdown(summary)
        summary["non_engine_ms"] = sum(v["p50"] for s, v in stages.items() if s != "infer")
        frames_file = out / f"run_{backend}" / "frames.jsonl"
        if frames_file.is_file():
            recs = [json.loads(line) for line in frames_file.read_text().splitlines() if line]
            summary["latencies"] = [r.get("latency_ms") for r in recs if r.get("latency_ms")]
        results["pipelines"].append(summary)
        print(f"  {summary['fps']:.1f} FPS, {summary['frames_out']} frames, "
              f"non-engine {summary['non_engine_ms']:.2f} ms/frame, "
              f"peak RSS {summary['peak_rss_mib']:.0f} MiB")

    if not args.no_naive:
        print(f"naive loop on {args.video} ...")
        src = args.video
        if src.startswith("synthetic:"):
            print("  skipped: the naive loop reads a video file (pass --video FILE)")
        else:
            results["naive"] = naive_loop(args.model, src, str(out / "naive.mp4"), args.frames)
            print(f"  {results['naive']['fps']:.1f} FPS")

    native = f"{meta.input_size[0]}x{meta.input_size[1]}"
    for p in results["pipelines"]:
        runtime = p["backend"]
        eng = next((r for r in results["engines"] if r["runtime"] == runtime and
                    r["resolution"] == native and r["batch"] == 1 and "fps" in r), None)
        if runtime == AUTO_BACKEND and results.get("pick"):
            eng = {"fps": 1000.0 / results["pick"]["chosen"]["ms"]}
        if eng:
            results["ratios"][f"{runtime} pipeline/engine-only"] = p["fps"] / eng["fps"]
        if results["naive"]:
            results["ratios"][f"{runtime} pipeline/naive"] = p["fps"] / results["naive"]["fps"]

    write_json(out / "results.json", slim(results))
    if args.json:
        write_json(Path(args.json), slim(results))
    md = markdown(results)
    (out / "results.md").write_text(md)
    written = plots(results, out)
    print()
    print(md)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {', '.join(written)}")
    return 0
