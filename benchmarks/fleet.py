"""Fleet benchmark: ``drivesegrt batch`` with 1 and 2 workers against a shell loop of
``drivesegrt run`` over the same 8 drives, and a 2-node local Ray cluster joined with
``--address``.

    python benchmarks/fleet.py [--modes loop,batch1,batch2,cluster] [--rounds N] [--work DIR]
                               [--out benchmarks/results/fleet]

The 8 drives are cut from the shared clips with ffmpeg: the highway clip (960x540, 25 fps) in
two halves and the CamVid clip (480x360, 15 fps) in two halves, each also mirrored, so no two
drives are the same file. Every mode runs the bundled model on ONNX Runtime and writes what
``drivesegrt run`` writes (overlay.mp4, frames.jsonl, summary.json):

    loop      for each drive: drivesegrt run --source DRIVE --output ...  (engine threads: the
              runtime's default, all cores)
    batch1    drivesegrt batch DRIVES --workers 1 --cpus-per-worker 2     (2 engine threads)
    batch2    drivesegrt batch DRIVES --workers 2                         (1 engine thread each)
    cluster   ray start --head --num-cpus 1 + ray start --address ... --num-cpus 1 on 127.0.0.1,
              then drivesegrt batch DRIVES --address 127.0.0.1:PORT --workers 2

Per mode: wall time of the command (start-up included: Python imports, model loading, Ray;
the cluster's own start is timed apart), drives/hour, frames/s (frames published / wall), and
CPU utilisation: the CPU seconds of the command's process tree, Ray's processes included
(sampled every 0.2 s), over wall x cores; the machine's overall busy share is given beside it,
since other work on the machine shows there. For the batch modes, "in Ray s" is the part of the
wall time from the workers' creation to the last drive (report.json's last run: Ray's own
start-up and the report excluded). ``--rounds`` repeats all modes in turn (a shared machine's
speed drifts; every round is kept). Writes results.json and results.md to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
HIGHWAY = VIDEOS / "udacity_lanelines_solidWhiteRight.mp4"     # 221 frames, 25 fps
CAMVID = VIDEOS / "camvid_0016E5_val_15fps.mp4"               # 101 frames, 15 fps
MODES = ("loop", "batch1", "batch2", "cluster")


def make_drives(folder: Path) -> list[Path]:
    """8 drives: each half of both clips, as recorded and mirrored."""
    folder.mkdir(parents=True, exist_ok=True)
    cuts = [(HIGHWAY, 0, 4.42, "highway_a"), (HIGHWAY, 4.42, 9, "highway_b"),
            (CAMVID, 0, 3.4, "camvid_a"), (CAMVID, 3.4, 7, "camvid_b")]
    drives = []
    for clip, start, end, name in cuts:
        for mirror in (False, True):
            path = folder / f"{name}{'_mirror' if mirror else ''}.mp4"
            if not path.exists():
                subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-ss",
                                str(start), "-to", str(end), "-i", str(clip), "-an",
                                *(["-vf", "hflip"] if mirror else []), "-c:v", "libx264",
                                "-preset", "veryfast", "-crf", "18", str(path)], check=True)
            drives.append(path)
    return drives


class TreeCpu:
    """CPU seconds of a process tree (and of processes whose command line names ``marker``),
    sampled in a thread; the machine's busy share over the same time."""

    def __init__(self, root_pid: int, marker: str | None = None, interval: float = 0.2):
        self.root, self.marker, self.interval = root_pid, marker, interval
        self.seen: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._cpu0 = psutil.cpu_times()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _procs(self):
        procs = []
        try:
            root = psutil.Process(self.root)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
        if self.marker:
            for p in psutil.process_iter(["cmdline"]):
                if self.marker in " ".join(p.info["cmdline"] or []):
                    try:
                        procs += [p, *p.children(recursive=True)]
                    except psutil.NoSuchProcess:
                        pass
        return procs

    def _run(self):
        while not self._stop.is_set():
            for p in self._procs():
                try:
                    t = p.cpu_times()
                    key = (p.pid, p.create_time())
                except psutil.NoSuchProcess:
                    continue
                self.seen[key] = max(self.seen.get(key, 0.0), t.user + t.system)
            self._stop.wait(self.interval)

    def stop(self) -> tuple[float, float]:
        """(CPU seconds of the tree, machine busy share 0..1)."""
        self._stop.set()
        self._thread.join()
        cpu1 = psutil.cpu_times()
        total = sum(cpu1) - sum(self._cpu0)
        idle = (cpu1.idle + cpu1.iowait) - (self._cpu0.idle + self._cpu0.iowait)
        return sum(self.seen.values()), (1 - idle / total) if total else 0.0


def timed(cmds: list[list[str]], env: dict, marker: str | None = None) -> dict:
    """Run ``cmds`` one after another (as a shell loop would), timing and sampling them."""
    t0 = time.perf_counter()
    cpu_s, busy, codes = 0.0, [], []
    for cmd in cmds:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        tree = TreeCpu(proc.pid, marker)
        codes.append(proc.wait())
        used, share = tree.stop()
        cpu_s += used
        busy.append(share)
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu_s, 2),
            "machine_busy": round(sum(busy) / len(busy), 3), "exit_codes": codes}


def frames_of(folders: list[Path]) -> int:
    return sum(json.loads((f / "summary.json").read_text())["frames_out"] for f in folders)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(env: dict, temp: Path) -> tuple[str, float]:
    """Head and second node on 127.0.0.1 (1 CPU each); (address, seconds it took)."""
    ray = [sys.executable, "-m", "ray.scripts.scripts", "start"]
    head = free_port()
    t0 = time.perf_counter()
    subprocess.run([*ray, "--head", "--port", str(head), "--node-ip-address", "127.0.0.1",
                    "--num-cpus", "1", "--temp-dir", str(temp), "--include-dashboard", "false",
                    "--disable-usage-stats"], env=env, check=True, capture_output=True)
    subprocess.run([*ray, "--address", f"127.0.0.1:{head}", "--node-ip-address", "127.0.0.1",
                    "--num-cpus", "1"], env=env, check=True, capture_output=True)
    return f"127.0.0.1:{head}", time.perf_counter() - t0


def stop_cluster(temp: Path) -> None:
    """Every process of the cluster (command line names its temp dir, and their children)."""
    procs = {}
    for p in psutil.process_iter(["cmdline"]):
        if p.pid != os.getpid() and str(temp) in " ".join(p.info["cmdline"] or []):
            procs[p.pid] = p
            try:
                procs.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
    for p in procs.values():
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(procs.values()), timeout=20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--rounds", type=int, default=1, help="repeat every mode, in turn")
    ap.add_argument("--work", help="drives and outputs (default: a temporary folder)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fleet"))
    args = ap.parse_args()
    modes = args.modes.split(",")
    work = Path(args.work or tempfile.mkdtemp(prefix="fleet-bench-"))
    drives = make_drives(work / "drives")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    cli = [sys.executable, "-m", "drivesegrt"]
    cores = psutil.cpu_count()
    rows = []
    for round_, mode in ((r, m) for r in range(1, args.rounds + 1) for m in modes):
        out = work / mode
        shutil.rmtree(out, ignore_errors=True)
        extra: dict = {}
        if mode == "loop":
            cmds = [[*cli, "run", "--source", str(d), "--output", str(out / d.stem)]
                    for d in drives]
            result = timed(cmds, env)
            command = "for d in DRIVES; do drivesegrt run --source $d --output OUT/$d; done"
        elif mode in ("batch1", "batch2"):
            flags = ["--workers", "1", "--cpus-per-worker", "2"] if mode == "batch1" \
                else ["--workers", "2"]
            result = timed([[*cli, "batch", str(work / "drives"), "--output", str(out),
                             *flags]], env)
            command = f"drivesegrt batch DRIVES/ --output OUT {' '.join(flags)}"
        else:
            temp = Path(tempfile.mkdtemp(prefix="dsrt-bc-"))
            cenv = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
            try:
                address, startup = start_cluster(cenv, temp)
                result = timed([[*cli, "batch", str(work / "drives"), "--output", str(out),
                                 "--address", address, "--workers", "2"]], cenv, str(temp))
            finally:
                stop_cluster(temp)
                shutil.rmtree(temp, ignore_errors=True)
            extra = {"cluster_start_s": round(startup, 2)}
            command = ("ray start --head --num-cpus 1 ...; ray start --address ... --num-cpus 1; "
                       "drivesegrt batch DRIVES/ --output OUT --address 127.0.0.1:PORT "
                       "--workers 2")
        folders = [out / d.stem for d in drives]
        ok = sum((f / "summary.json").is_file() for f in folders)
        frames = frames_of([f for f in folders if (f / "summary.json").is_file()])
        wall = result["wall_s"]
        if mode != "loop":
            extra["in_ray_s"] = json.loads((out / "report.json").read_text())["last_run"]["wall_s"]
        rows.append({"round": round_, "mode": mode, "command": command, "drives": ok,
                     "frames": frames, **result, **extra,
                     "drives_per_hour": round(ok * 3600 / wall, 1),
                     "frames_per_s": round(frames / wall, 1),
                     "cpu_utilisation": round(result["cpu_s"] / (wall * cores), 3)})
        r = rows[-1]
        print(f"{mode:8} {r['drives']}/{len(drives)} drives {r['frames']} frames in {wall:6.1f} s"
              f"  {r['drives_per_hour']:7.1f} drives/h  {r['frames_per_s']:5.1f} frames/s"
              f"  CPU {r['cpu_utilisation']:.0%} (machine busy {r['machine_busy']:.0%})"
              + (f"  in Ray {extra['in_ray_s']:.1f} s" if "in_ray_s" in extra else "")
              + (f"  cluster start {extra['cluster_start_s']} s" if "cluster_start_s" in extra
                 else ""), flush=True)
    meta = {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cores": cores,
            "cpu": _cpu_name(), "drives": [d.name for d in drives]}
    target = Path(args.out)
    target.mkdir(parents=True, exist_ok=True)
    (target / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (target / "results.md").write_text(markdown(meta, rows))
    print(f"wrote {target / 'results.json'} and results.md")
    return 0 if all(r["drives"] == len(drives) for r in rows) else 1


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"Fleet benchmark, {meta['time']}, {meta['cores']} cores ({meta['cpu']}), "
             f"{len(meta['drives'])} drives, bundled model on ONNX Runtime, overlay.mp4 written.",
             "", "| round | mode | drives | frames | wall s | in Ray s | drives/hour | frames/s "
             "| CPU utilisation | machine busy |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        in_ray = f"{r['in_ray_s']:.1f}" if "in_ray_s" in r else ""
        lines.append(f"| {r['round']} | {r['mode']} | {r['drives']} | {r['frames']} "
                     f"| {r['wall_s']:.1f} | {in_ray} | {r['drives_per_hour']:.0f} "
                     f"| {r['frames_per_s']:.1f} | {r['cpu_utilisation']:.0%} "
                     f"| {r['machine_busy']:.0%} |")
    commands = {r["mode"]: r["command"] for r in rows}
    lines += ["", *(f"- {mode}: `{cmd}`" for mode, cmd in commands.items()), ""]
    return "\n".join(lines)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
