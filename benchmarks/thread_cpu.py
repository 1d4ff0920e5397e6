"""CPU time of each thread of a real ``drivesegrt run``, per published frame.

    python benchmarks/thread_cpu.py [--source CLIP] [--backend B] [--model M] [--threads N]

Runs the pipeline in this process (``drivesegrt.run.run``, the same outputs as the CLI) while
a sampler reads ``/proc/self/task/*/stat`` every 20 ms, so threads that end before the run
does are still counted. Python threads are named as the pipeline names them (capture, infer,
publish, encode, jsonl ...); native threads by their kernel name (``av:h264:df0``: FFmpeg's
decoder threads; ``python``: the runtime's worker pool, OpenCV's pool). The encoder is the
ffmpeg child process (its CPU time from ``getrusage`` after the run). Imports happen before
the sampler's first reading and are not counted; the main thread's share is the model load,
the warm-up and the summary (it only waits while frames flow). Not a test: nothing asserts a
time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivesegrt.run import run  # noqa: E402

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / \
    "udacity_lanelines_solidWhiteRight.mp4"
TICK = os.sysconf("SC_CLK_TCK")


def _task_cpu() -> dict[int, tuple[str, float]]:
    """tid -> (kernel name, CPU seconds) of this process's threads now."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:                      # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(name="sampler", daemon=True)
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.names: dict[int, str] = {}
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            for t in threading.enumerate():
                if t.native_id is not None and t is not self:
                    self.names.setdefault(t.native_id, t.name)
            for tid, (kname, cpu) in _task_cpu().items():
                self.first.setdefault(tid, cpu)
                self.last[tid] = (kname, cpu)
            time.sleep(0.02)

    def per_name(self) -> dict[str, float]:
        own = threading.get_native_id()
        total: dict[str, float] = defaultdict(float)
        for tid, (kname, cpu) in self.last.items():
            if tid == self.native_id:
                continue
            name = "main" if tid == own else self.names.get(tid, f"native: {kname}")
            total[name] += cpu - self.first.get(tid, 0.0)
        return dict(total)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(source: str, options: dict) -> dict:
    sampler = Sampler()
    with tempfile.TemporaryDirectory() as tmp:
        children = _children_cpu()
        sampler.start()
        summary = run(source, str(Path(tmp) / "run"), **options)
        sampler.done.set()
        sampler.join()
        encoder = _children_cpu() - children
    frames = max(1, summary["frames_out"])
    threads = {k: round(1e3 * v / frames, 3) for k, v in sorted(sampler.per_name().items())}
    threads["encoder (ffmpeg process)"] = round(1e3 * encoder / frames, 3)
    return {"frames": summary["frames_out"], "fps": summary["fps"],
            "backend": summary["model"]["backend"], "model": Path(summary["model"]["path"]).name,
            "cpu_ms_per_frame": threads,
            "total_ms_per_frame": round(sum(threads.values()), 3),
            "stages_ms_p50": {k: v["p50"] for k, v in summary["stages_ms"].items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=str(CLIP))
    p.add_argument("--backend", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    options = {k: v for k, v in (("backend", a.backend), ("model", a.model),
                                  ("threads", a.threads)) if v is not None}
    res = measure(a.source, options)
    print(f"{res['frames']} frames, {res['fps']:.1f} FPS, {res['backend']} {res['model']}")
    for name, ms in sorted(res["cpu_ms_per_frame"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<28} {ms:7.2f} ms CPU/frame")
    print(f"  {'total':<28} {res['total_ms_per_frame']:7.2f} ms CPU/frame")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
