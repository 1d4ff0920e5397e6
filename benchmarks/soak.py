"""Soak: a long live run from a looped network stream; memory, threads and queues must stay flat.

    python benchmarks/soak.py --frames 10000 [--model FILE --backend B] [--speed 2] [--json soak.json]

``drivesegrt replay``'s server (ffmpeg, 127.0.0.1) loops the highway clip ``--speed`` times
faster than real time (``-readrate``, no transcode), and the run's own building blocks
(config, engine, sinks, Pipeline; as ``drivesegrt run`` wires them) segment it live until
``--frames`` frames were captured. Every ``--interval`` seconds a sampler records the
resident memory of this process (the pipeline; ffmpeg runs apart), OS and Python thread
counts, open files and the depth of every queue (capture slot, publish queue, each sink's
writer queue).

Pass criteria, judged after a warm-up (``--warmup`` of the frames, default 10 %):
  rss      growth of the median of the last 5 samples over the first 5 < 5 %
  threads  OS and Python thread counts constant
  fds      open file descriptors constant
  queues   no queue growing: median depth over the last quarter <= first quarter's + 1
           (medians: one busy moment of a loaded machine is not growth)
Writes a JSON (samples, summary.json of the run, verdict) and prints a table. Exit code 1
when a criterion fails. Not a unit test: it runs for minutes (10,000 frames at speed 2 is
~3.5 min of stream).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivesegrt.assemble import load_segmenter, make_sinks  # noqa: E402
from drivesegrt.capture import open_source  # noqa: E402
from drivesegrt.capture.replay import ReplayServer, free_port  # noqa: E402
from drivesegrt.config import RunConfig, load_dataclass  # noqa: E402
from drivesegrt.pipeline import Pipeline  # noqa: E402
from drivesegrt.publish.overlay import Overlay  # noqa: E402

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / \
    "udacity_lanelines_solidWhiteRight.mp4"
RSS_GROWTH_LIMIT = 0.05


def sample(pipeline: Pipeline, me: psutil.Process, t0: float) -> dict:
    """One snapshot of the run's resources and counters."""
    return {"t": round(time.perf_counter() - t0, 2), **pipeline.counters(),
            "frames_out": pipeline.stats.frames_out,
            "rss_mib": round(me.memory_info().rss / 2**20, 2),
            "os_threads": me.num_threads(), "py_threads": threading.active_count(),
            "fds": me.num_fds(), "queues": pipeline.queue_depths()}


def sample_until(pipeline: Pipeline, frames: int, interval: float, done: threading.Event,
                 samples: list) -> None:
    """Sampler thread: snapshot every ``interval`` s; stop the pipeline at ``frames`` captured."""
    me, t0 = psutil.Process(), time.perf_counter()
    while not done.wait(interval):
        s = sample(pipeline, me, t0)
        samples.append(s)
        if len(samples) % 10 == 1:
            print(f"{s['t']:7.0f} s {s['frames_in']:>7} frames {s['rss_mib']:8.1f} MiB "
                  f"{s['os_threads']} threads  queues {s['queues']}", file=sys.stderr, flush=True)
        if s["frames_in"] >= frames:
            pipeline.stop()
            break


def judge(samples: list[dict], warmup_frames: int) -> dict:
    """The pass criteria (module docstring) over the samples after warm-up."""
    steady = [s for s in samples if s["frames_in"] >= warmup_frames]
    if len(steady) < 8:
        raise ValueError(f"only {len(steady)} samples after warm-up: run longer or sample "
                         f"more often (--frames/--interval)")
    rss = [s["rss_mib"] for s in steady]
    base, final = float(np.median(rss[:5])), float(np.median(rss[-5:]))
    quarter = max(1, len(steady) // 4)
    checks = {"rss": {"warm_mib": base, "final_mib": final, "growth_pct":
                      round(100 * (final - base) / base, 2),
                      "ok": (final - base) / base < RSS_GROWTH_LIMIT}}
    for key in ("os_threads", "py_threads", "fds"):
        values = sorted({s[key] for s in steady})
        checks[key] = {"values": values, "ok": len(values) == 1}
    for name in steady[0]["queues"]:
        depth = [s["queues"][name] for s in steady]
        first, last = float(np.median(depth[:quarter])), float(np.median(depth[-quarter:]))
        checks[f"queue {name}"] = {"first_median": first, "last_median": last,
                                   "max": max(depth), "ok": last <= first + 1}
    return checks


def print_table(checks: dict, summary: dict, wall_s: float) -> None:
    print(f"soak: {summary['frames_in']} frames captured, {summary['frames_out']} published, "
          f"{summary['frames_dropped']} dropped, {summary['frames_failed']} failed, "
          f"{summary['reconnects']} reconnects in {wall_s:.0f} s "
          f"({summary['fps']:.1f} FPS published)")
    print(f"{'check':<22}{'warm-up':>12}{'final':>12}  result")
    for name, c in checks.items():
        if name == "rss":
            a, b = f"{c['warm_mib']:.1f} MiB", f"{c['final_mib']:.1f} MiB"
            note = f"{c['growth_pct']:+.2f} % (limit +{RSS_GROWTH_LIMIT:.0%})"
        elif "values" in c:
            a, b = str(c["values"][0]), str(c["values"][-1])
            note = "constant" if c["ok"] else f"varies: {c['values']}"
        else:
            a, b = f"{c['first_median']:g}", f"{c['last_median']:g}"
            note = f"median depth, max {c['max']}"
        print(f"{name:<22}{a:>12}{b:>12}  {'PASS' if c['ok'] else 'FAIL'}  {note}")


def main(args) -> int:
    overrides = {"model.path": args.model, "model.backend": args.backend,
                 "model.threads": args.threads,
                 "sinks.masks": args.save_masks, "sinks.view": args.view,
                 "stream.reconnect_timeout": 30.0}
    cfg = load_dataclass(RunConfig, None, overrides)
    out = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="soak-"))
    out.mkdir(parents=True, exist_ok=True)
    seg, _ = load_segmenter(cfg)
    samples: list[dict] = []
    with ReplayServer(args.clip, free_port(), speed=args.speed) as server:
        source = open_source(server.url, cfg.stream.reconnect_timeout)
        try:
            sinks, jsonl = make_sinks(cfg, out, source)
            pipeline = Pipeline(source, seg, Overlay(seg.class_names, seg.palette), sinks, jsonl,
                                cfg.pipeline.queue_size)
            done = threading.Event()
            sampler = threading.Thread(target=sample_until, name="soak-sampler",
                                       args=(pipeline, args.frames, args.interval, done, samples))
            sampler.start()
            try:
                stats = pipeline.run()
            finally:
                done.set()
                sampler.join()
        finally:
            source.close()
    seg.engine.close()
    summary = pipeline.summary()
    checks = judge(samples, int(args.frames * args.warmup))
    passed = all(c["ok"] for c in checks.values())
    print_table(checks, summary, stats.wall_s)
    result = {"frames": args.frames, "speed": args.speed, "model": args.model,
              "passed": passed, "checks": checks, "summary": summary, "samples": samples,
              "machine": {"cpus": psutil.cpu_count(), "python": sys.version.split()[0]},
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    json_path = Path(args.json) if args.json else out / "soak.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"soak: {'PASS' if passed else 'FAIL'}; samples and verdict in {json_path}")
    return 0 if passed else 1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=10000, help="frames to capture (default 10000)")
    p.add_argument("--model", default="", help="checkpoint or ONNX (default: bundled model)")
    p.add_argument("--backend", default="onnxruntime", help="torch | onnxruntime | tensorrt")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--clip", default=str(CLIP), help="video to loop (default: highway clip)")
    p.add_argument("--speed", type=float, default=2.0,
                   help="stream at this many times real time (default 2: 50 fps)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=0.1, help="share of frames ignored first")
    p.add_argument("--save-masks", action="store_true", help="also write masks/*.png")
    p.add_argument("--view", help="also serve the live view (e.g. http://127.0.0.1:0)")
    p.add_argument("--output", help="run directory (default: a new temp dir)")
    p.add_argument("--json", help="where to write the result (default: OUTPUT/soak.json)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
