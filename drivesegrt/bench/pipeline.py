"""End-to-end pipeline timing: ``drivesegrt run`` as users run it, in a child process whose
resident memory (with its children, e.g. the ffmpeg encoder) is sampled for the peak."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

STAGES = ("capture", "preprocess", "infer", "postprocess", "overlay", "write")


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_pipeline(source: str, model: str, backend: str, out_dir: Path,
                 max_frames: int | None = None, extra: list[str] | None = None) -> dict:
    """Run ``drivesegrt run`` and return its summary.json plus ``peak_rss_mib`` and the CPU
    time it used (``cpu_s``, ``cpu_ms_per_frame``: all threads and child processes)."""
    out_dir = Path(out_dir)
    # --overwrite: the run directory is the benchmark's own, replaced on every bench run
    cmd = [sys.executable, "-m", "drivesegrt", "run", "--source", source, "--model", str(model),
           "--backend", backend, "--output", str(out_dir), "--overwrite"]
    if max_frames:
        cmd += ["--max-frames", str(max_frames)]
    cmd += extra or []
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, _tree_rss(ps))
        except psutil.Error:
            pass
        time.sleep(0.05)
    output = proc.stdout.read()
    if proc.returncode != 0:
        tail = output.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"drivesegrt run exited {proc.returncode}: {tail[0]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads((out_dir / "summary.json").read_text())
    summary["peak_rss_mib"] = round(peak / 2**20, 1)
    # CPU time of the run and everything it waited for (the ffmpeg encoder), start-up included
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary["cpu_s"] = round(cpu_s, 3)
    summary["cpu_ms_per_frame"] = round(1000 * cpu_s / max(1, summary["frames_out"]), 2)
    summary["command"] = " ".join(cmd[1:])
    return summary


def stage_breakdown(summary: dict) -> dict:
    """Per-stage p50 ms and share of their sum, in pipeline order."""
    stages = summary.get("stages_ms", {})
    ms = {s: stages[s]["p50"] for s in STAGES if s in stages}
    ms.update({s: v["p50"] for s, v in stages.items() if s not in ms})
    total = sum(ms.values()) or 1.0
    return {s: {"ms": round(v, 3), "share": round(v / total, 4)} for s, v in ms.items()}
