"""Several cameras: one batched run vs separate runs, and the latency budget, on replayed drives.

    python benchmarks/multicam.py [--cameras 1 2 4] [--seconds 20] [--deadline-ms 200]
                                  [--model NAME|FILE --backend B] [--json multicam.json]

Each camera is the highway clip (960x540, 25 fps) served live by its own ``drivesegrt
replay``-style ffmpeg server on 127.0.0.1. For every camera count N: one ``drivesegrt run``
with N ``--source`` (one engine, batched calls) and, for N > 1, N separate ``drivesegrt run``
processes with one source each (N engines competing for the cores); for the largest N also the
batched run with ``--deadline-ms``. Each run lasts ``--seconds`` from the moment every camera
published its first frame (start-up is not timed) and is ended with SIGINT (the way a live run
ends); the numbers come from its summary.json: per camera the published FPS,
frame age p50/p99 (capture -> published) and the dropped share (stale frames replaced at the
camera before the engine took them / frames captured). Prints a markdown table; ``--json``
keeps every summary.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drivesegrt.capture.replay import ReplayServer, free_port  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "videos" / "udacity_lanelines_solidWhiteRight.mp4"


def run_processes(commands: list[list[str]], started: list[Path], seconds: float,
                  start_timeout: float = 300.0) -> list[int]:
    """Start every command, wait until each file of ``started`` has a line (every camera
    published its first frame: start-up is not timed), let them run ``seconds``, SIGINT them,
    wait; their exit codes."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for c in commands]
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline and any(p.poll() is None for p in procs) and not all(
            f.is_file() and f.stat().st_size > 0 for f in started):
        time.sleep(0.2)
    time.sleep(seconds)
    for p in procs:
        p.send_signal(signal.SIGINT)
    codes = []
    for p in procs:
        _, err = p.communicate(timeout=120)
        if p.returncode not in (0, 130):
            print(err, file=sys.stderr)
        codes.append(p.returncode)
    return codes


def camera_rows(summary: dict, cameras: list[str]) -> list[dict]:
    """One row per camera from a run's summary.json (several cameras or one)."""
    per = summary["cameras"] if "cameras" in summary else {cameras[0]: summary}
    rows = []
    for name in cameras:
        c = per[name]
        rows.append({"camera": name, "fps": c["fps"], "age_p50": c["frame_age_ms"]["p50"],
                     "age_p99": c["frame_age_ms"]["p99"],
                     "dropped_share": c["frames_dropped"] / max(1, c["frames_in"]),
                     "frames_out": c["frames_out"]})
    return rows


def scenario(name: str, urls: list[str], separate: bool, base: list[str], out: Path,
             seconds: float, extra: list[str] = ()) -> dict:
    names = [f"cam{i}" for i in range(len(urls))]
    if separate:
        commands = [[*base, "--source", u, "--output", str(out / n), *extra]
                    for n, u in zip(names, urls)]
        started = [out / n / "frames.jsonl" for n in names]
    else:
        commands = [[*base, *(a for u, n in zip(urls, names) for a in ("--source", f"{n}={u}")),
                     "--output", str(out / "batched"), *extra]]
        started = [out / "batched" / (n if len(urls) > 1 else "") / "frames.jsonl"
                   for n in names]
    codes = run_processes(commands, started, seconds)
    summaries = ([json.loads((out / n / "summary.json").read_text()) for n in names]
                 if separate else [json.loads((out / "batched" / "summary.json").read_text())])
    rows = ([r for n, s in zip(names, summaries) for r in camera_rows(s, [n])] if separate
            else camera_rows(summaries[0], names))
    extra_info = {}
    if not separate and "deadline" in summaries[0]:
        d = summaries[0]["deadline"]
        extra_info = {"degrades": d["degrades"], "restores": d["restores"],
                      "in_force_end": d["steps_in_force_end"]}
    return {"scenario": name, "cameras": len(urls), "exit_codes": codes, "rows": rows,
            **extra_info, "summaries": summaries}


def table(results: list[dict]) -> str:
    lines = ["| cameras | run | FPS per camera (mean) | total FPS | frame age p50 ms | "
             "frame age p99 ms | dropped share |", "|---|---|---|---|---|---|---|"]
    for r in results:
        rows = r["rows"]
        fps = [x["fps"] for x in rows]
        note = r["scenario"]
        if "degrades" in r:
            note += (f" ({r['degrades']} degrade / {r['restores']} restore steps; at the end: "
                     f"{', '.join(r['in_force_end']) or 'none'})")
        lines.append(f"| {r['cameras']} | {note} | {sum(fps) / len(fps):.1f} | {sum(fps):.1f} | "
                     f"{max(x['age_p50'] for x in rows):.0f} | "
                     f"{max(x['age_p99'] for x in rows):.0f} | "
                     f"{sum(x['dropped_share'] for x in rows) / len(rows):.0%} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--deadline-ms", type=float, default=200.0)
    p.add_argument("--model", help="default: the bundled model")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    base = [sys.executable, "-m", "drivesegrt", "run", "--backend", args.backend]
    if args.model:
        base += ["--model", args.model]
    most = max(args.cameras)
    servers = [ReplayServer(CLIP, free_port()).start().wait_ready() for _ in range(most)]
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.cameras:
                urls = [s.url for s in servers[:n]]
                results.append(scenario("batched (one run)", urls, False, base,
                                        Path(tmp) / f"b{n}", args.seconds))
                if n > 1:
                    results.append(scenario(f"{n} separate runs", urls, True, base,
                                            Path(tmp) / f"s{n}", args.seconds))
                if n == most:
                    results.append(scenario(f"batched, --deadline-ms {args.deadline_ms:g}",
                                            urls, False, base, Path(tmp) / f"d{n}",
                                            args.seconds,
                                            ["--deadline-ms", f"{args.deadline_ms:g}"]))
    finally:
        for s in servers:
            s.stop()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if all(c in (0, 130) for r in results for c in r["exit_codes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
