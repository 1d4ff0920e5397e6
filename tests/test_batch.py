"""``drivesegrt batch`` on real Ray, on this machine only: six drives cut from the shared clips
(a folder of videos, an image folder, a corrupt file, a CSV manifest), a worker SIGKILLed
mid-drive, re-runs that skip, redo and refuse, and a two-node cluster that loses a node
mid-job. Ray start-up costs seconds, so one embedded batch (module fixture) serves several
tests; every Ray process a test starts is stopped by it."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import psutil
import pytest
from helpers import (
    CAMVID,
    CAMVID_CLIP,
    HIGHWAY_CLIP,
    ROOT,
    LiveRun,
    cli_main,
    ffmpeg,
    needs_ffmpeg,
    read_jsonl,
    run_cli,
    video_info,
)

from drivesegrt.batch.drives import find_drives
from drivesegrt.capture import open_source

pytestmark = needs_ffmpeg

GOOD = ("car1-front", "car2-front", "car2-rear", "day1_images", "extra")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def fleet(tmp_path_factory, shared_data):
    """Six drives and a tiny model: expected frames per drive, the corrupt file's error."""
    pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("fleet")
    videos = root / "fleet"
    for sub in ("car1", "car2", "day1_images", "bad"):
        (videos / sub).mkdir(parents=True)
    # car1-front is the long one (5 s): the worker running it is killed mid-drive.
    ffmpeg("-i", HIGHWAY_CLIP, "-t", "5", "-vf", "scale=320:180", "-an",
           videos / "car1" / "front.mp4")
    ffmpeg("-i", CAMVID_CLIP, "-t", "2", "-vf", "scale=240:180", "-an",
           videos / "car2" / "front.mp4")
    ffmpeg("-ss", "2", "-i", HIGHWAY_CLIP, "-t", "1.2", "-vf", "scale=320:180", "-an",
           videos / "car2" / "rear.mp4")
    stems = sorted(p.stem for p in (CAMVID / "test").glob("*.png"))[:4]
    for stem in stems:
        shutil.copy(CAMVID / "test" / f"{stem}.png", videos / "day1_images" / f"{stem}.png")
    corrupt = videos / "bad" / "corrupt.mp4"
    corrupt.write_bytes(secrets.token_bytes(4000))
    (root / "clips").mkdir()
    ffmpeg("-ss", "3", "-i", CAMVID_CLIP, "-t", "1.5", "-vf", "scale=240:180", "-an",
           root / "clips" / "other.mp4")
    manifest = root / "more.csv"
    manifest.write_text("path,drive_id\nclips/other.mp4,extra\n")
    with pytest.raises(ValueError) as err:
        open_source(str(corrupt))
    frames = {"car1-front": video_info(videos / "car1" / "front.mp4")[0],
              "car2-front": video_info(videos / "car2" / "front.mp4")[0],
              "car2-rear": video_info(videos / "car2" / "rear.mp4")[0],
              "extra": video_info(root / "clips" / "other.mp4")[0],
              "day1_images": len(stems)}
    return SimpleNamespace(root=root, sources=[videos, manifest],
                           model=small_camvid_onnx(root / "small.onnx"), frames=frames,
                           stems=stems, corrupt=corrupt, corrupt_reason=str(err.value))


def small_camvid_onnx(path: Path) -> Path:
    """The bundled CamVid model exported for 96x128 inputs: real segmentations (roads, cars,
    sky: a meaningful coverage report and masks worth comparing) at a few ms per frame."""
    from drivesegrt.deploy.export import export_onnx
    from drivesegrt.infer.build import BUNDLED
    from drivesegrt.models.checkpoint import load_model

    model, meta = load_model(BUNDLED["camvid"]["torch"])
    export_onnx(model, dataclasses.replace(meta, input_size=(96, 128)), path, uint8_input=True)
    return path


def batch_args(fleet, out, *extra):
    # --temporal: a worker's engine carries smoothing state from drive to drive unless the
    # run resets it (test_a_drive_gets_what_drivesegrt_run_makes_of_it)
    return ("batch", *fleet.sources, "--output", out, "--model", fleet.model, "--save-masks",
            "--temporal", "ema:0.5", *extra)


def ray_processes(marker: str) -> list[psutil.Process]:
    """Processes whose command line names ``marker`` (a Ray temp dir), with their
    descendants (workers rename themselves ray::..., but stay children of their raylet)."""
    found = {}
    for p in psutil.process_iter(["cmdline"]):
        if p.pid != os.getpid() and marker in " ".join(p.info["cmdline"] or []):
            found[p.pid] = p
    for p in list(found.values()):
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    return list(found.values())


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def stop_processes(procs: list[psutil.Process], sig=signal.SIGKILL) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=20)


def wait_for_attempt(out: Path, drive_id: str | None, min_frames: int, pids=None,
                     run: LiveRun | None = None, timeout: float = 90) -> tuple[int, Path]:
    """(worker pid, attempt folder) of a drive being written with >= min_frames frames;
    ``pids``: only attempts of these worker processes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for jsonl in (out / ".partial").glob(f"{drive_id or '*'}/*/frames.jsonl"):
            pid = int(jsonl.parent.name.split("-")[0])
            if (pids is None or pid in pids()) and jsonl.read_text().count("\n") >= min_frames:
                return pid, jsonl.parent
        if run is not None and run.proc.poll() is not None:
            break
        time.sleep(0.02)
    raise TimeoutError(f"no attempt of {drive_id} with {min_frames} frames: "
                       f"{run.stderr if run else ''}")


@pytest.fixture(scope="module")
def first_run(fleet, tmp_path_factory):
    """The six drives on embedded Ray with two workers; the worker running car1-front is
    SIGKILLed once it has published a few frames."""
    out = tmp_path_factory.mktemp("batch") / "out"
    run = LiveRun(*batch_args(fleet, out, "--workers", "2"))
    try:
        pid, attempt = wait_for_attempt(out, "car1-front", 5, run=run)
        ray_dir = str((out / ".ray").resolve())
        tracked = ray_processes(ray_dir)
        worker = psutil.Process(pid)
        assert worker.name().startswith("ray::")      # a Ray worker, nothing else
        worker.kill()
        rc = run.finish(timeout=240)
    finally:
        run.kill()
    yield SimpleNamespace(out=out, rc=rc, stdout=run.stdout, stderr=run.stderr, killed=pid,
                          attempt=attempt, tracked=tracked)
    target = (out / ".ray").resolve()
    if target.parent == Path(tempfile.gettempdir()):     # the short stand-in for DIR/.ray
        shutil.rmtree(target, ignore_errors=True)


def drive_records(out: Path) -> list[dict]:
    return [r for r in read_jsonl(out / "batch.jsonl") if "drive" in r]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(fleet):
    """A two-node Ray cluster started with `ray start` on 127.0.0.1: the head (2 CPUs) and a
    second node (1 CPU); every process of it is stopped at the end."""
    temp = Path(tempfile.mkdtemp(prefix="dsrt-tc-"))       # short: AF_UNIX socket paths
    env = {"PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0",
           # Token authentication with a token of this test's own (no file in ~/.ray)
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    ray_start = [sys.executable, "-m", "ray.scripts.scripts", "start"]
    head, node_port = free_port(), free_port()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():       # the batch processes join with the same token
            mp.setenv(key, value)
        try:
            subprocess.run([*ray_start, "--head", "--port", str(head), "--node-ip-address",
                            "127.0.0.1", "--num-cpus", "2", "--temp-dir", str(temp),
                            "--include-dashboard", "false", "--disable-usage-stats"],
                           check=True, capture_output=True, timeout=120)
            before = {p.pid for p in ray_processes(str(temp))}
            subprocess.run([*ray_start, "--address", f"127.0.0.1:{head}", "--node-ip-address",
                            "127.0.0.1", "--num-cpus", "1", "--node-manager-port",
                            str(node_port)], check=True, capture_output=True, timeout=120)
            second = [p for p in ray_processes(str(temp)) if p.pid not in before]
            raylet = next(p for p in second
                          if f"--node_manager_port={node_port}" in p.cmdline())
            yield SimpleNamespace(address=f"127.0.0.1:{head}", temp=temp, raylet=raylet,
                                  second=second)
        finally:
            stop_processes(ray_processes(str(temp)))
            leftover = ray_processes(str(temp))
            shutil.rmtree(temp, ignore_errors=True)
            assert leftover == []



# --------------------------------------------------------------------------- embedded
def test_every_drive_is_done_exactly_once_although_a_worker_was_killed(first_run, fleet):
    out = first_run.out
    assert first_run.rc == 1, first_run.stderr            # one drive failed
    lines = first_run.stdout.splitlines()
    assert lines[0] == "drives   6 found: 6 to do, 0 done earlier, 0 failed earlier"
    reason = f"failed   bad-corrupt: {fleet.corrupt_reason}"
    assert lines.count(reason) == 2                     # when it failed, and at the end
    assert (f"done     car1-front: {fleet.frames['car1-front']} frames" in first_run.stdout
            and "(its worker died 1 time(s) mid-drive; redone from the start)"
            in first_run.stdout)
    assert "drives   6: 5 done (5 now), 1 failed, 0 not done" in lines
    # The ledger: every good drive queued once and done once, the corrupt one failed once.
    records = drive_records(out)
    for drive_id in GOOD:
        states = [r["state"] for r in records if r["drive"] == drive_id]
        assert states == ["queued", "done"], drive_id
    bad = [r for r in records if r["drive"] == "bad-corrupt"]
    assert [r["state"] for r in bad] == ["queued", "failed"]
    assert bad[1]["reason"] == fleet.corrupt_reason
    done = {r["drive"]: r for r in records if r["state"] == "done"}
    assert {k: r["lost_attempts"] for k, r in done.items()} == {
        "car1-front": 1, "car2-front": 0, "car2-rear": 0, "day1_images": 0, "extra": 0}
    assert done["car1-front"]["pid"] != first_run.killed
    # Outputs: frames in == frames out == expected, in order, in the drive's own folder.
    for drive_id, n in fleet.frames.items():
        folder = out / drive_id
        summary = json.loads((folder / "summary.json").read_text())
        assert (summary["frames_in"], summary["frames_out"], summary["frames_failed"]) \
            == (n, n, 0), drive_id
        assert summary["output_dir"] == str(folder)
        assert [r["index"] for r in read_jsonl(folder / "frames.jsonl")] == list(range(n))
        if drive_id == "day1_images":
            assert sorted(p.stem for p in (folder / "overlays").glob("*.jpg")) == fleet.stems
        else:
            assert video_info(folder / "overlay.mp4")[0] == n
            assert summary["outputs"]["video"]["path"] == str(folder / "overlay.mp4")
    assert not (out / "bad-corrupt").exists()
    assert not (out / ".partial").exists()               # the killed attempt is gone too
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        == sorted([*GOOD, "frames"])


def test_the_fleet_report_and_the_parquet_dataset(first_run, fleet):
    import pyarrow.parquet as pq

    out = first_run.out
    report = json.loads((out / "report.json").read_text())
    totals = report["totals"]
    assert (totals["drives"], totals["done"], totals["failed"], totals["not_done"]) == (6, 5, 1, 0)
    assert totals["frames"] == sum(fleet.frames.values())
    assert sum(totals["class_shares"].values()) == pytest.approx(1.0, abs=1e-4)
    rows = {r["id"]: r for r in report["drives"]}
    assert rows["bad-corrupt"] == {"id": "bad-corrupt", "source": str(fleet.corrupt),
                                   "state": "failed", "reason": fleet.corrupt_reason,
                                   "node": rows["bad-corrupt"]["node"]}
    car = rows["car1-front"]
    assert car["frames_out"] == fleet.frames["car1-front"] and car["fps"] > 0
    assert car["duration_s"] == pytest.approx(fleet.frames["car1-front"] / 25, abs=0.05)
    assert set(car["road_share"]) == {"mean", "min", "p5", "p50", "p95", "max", "series"}
    assert report["last_run"]["drives_processed"] == 5
    md = (out / "report.md").read_text()
    assert "| drive | state | frames in | frames out | failed | video s | processing FPS " in md
    assert f"- `bad-corrupt` ({fleet.corrupt}): {fleet.corrupt_reason}" in md
    png = cv2.imread(str(out / "report.png"))
    assert png is not None and png.shape[1] == 1500
    # One Parquet file per drive, read as one dataset: a row per published frame.
    table = pq.read_table(out / "frames")
    assert sorted(p.stem for p in (out / "frames").glob("*.parquet")) == sorted(GOOD)
    per_drive = {}
    for row in table.select(["drive", "index"]).to_pylist():
        per_drive.setdefault(row["drive"], []).append(row["index"])
    assert {k: sorted(v) for k, v in per_drive.items()} == {
        k: list(range(n)) for k, n in fleet.frames.items()}
    shares = [c for c in table.column_names if c.startswith("coverage_")]
    assert len(shares) == 11 and "coverage_Road" in shares
    assert {"stages_ms_infer", "drivable_share", "drivable_polygon"} <= set(table.column_names)
    first = table.slice(0, 1).to_pylist()[0]
    assert sum(first[c] for c in shares) == pytest.approx(1.0, abs=1e-4)


def test_a_drive_gets_what_drivesegrt_run_makes_of_it(first_run, fleet, tmp_path):
    """The same recorded pipeline: identical masks, frame records and summary keys. With
    temporal smoothing, so the worker's engine (it ran another drive before) starts clean."""
    source = fleet.root / "fleet" / "car2" / "front.mp4"
    r = run_cli("run", "--source", source, "--output", tmp_path / "run", "--model", fleet.model,
                "--save-masks", "--threads", "1", "--temporal", "ema:0.5")
    assert r.returncode == 0, r.stderr
    ours, theirs = first_run.out / "car2-front", tmp_path / "run"
    masks = sorted(p.name for p in (theirs / "masks").iterdir())
    assert len(masks) == fleet.frames["car2-front"]
    assert sorted(p.name for p in (ours / "masks").iterdir()) == masks
    for name in masks:
        assert (ours / "masks" / name).read_bytes() == (theirs / "masks" / name).read_bytes()
    assert [set(r) for r in read_jsonl(ours / "frames.jsonl")] == \
        [set(r) for r in read_jsonl(theirs / "frames.jsonl")]
    batch_summary = json.loads((ours / "summary.json").read_text())
    run_summary = json.loads((theirs / "summary.json").read_text())
    assert set(batch_summary) == set(run_summary)
    assert set(batch_summary["outputs"]) == set(run_summary["outputs"])
    assert video_info(ours / "overlay.mp4") == video_info(theirs / "overlay.mp4")


def test_ray_runs_inside_the_batch_folder_and_stops_with_it(first_run):
    ray_dir = first_run.out / ".ray"
    assert (ray_dir / "session_latest" / "logs" / "raylet.out").is_file()
    driver_log = "\n".join(p.read_text() for p in ray_dir.glob("driver-*.log"))
    assert "A worker died or was killed while executing a task" in driver_log
    assert "(raylet)" not in first_run.stdout + first_run.stderr
    assert len(first_run.tracked) >= 4                   # gcs, raylet, workers, ...
    assert alive(first_run.tracked) == []
    assert ray_processes(str(ray_dir.resolve())) == []


def test_a_rerun_skips_every_drive_without_starting_ray(first_run, fleet):
    out = first_run.out
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()
              and ".ray" not in p.parts
              and p.suffix not in (".jsonl", ".json", ".md", ".png", ".lock")}
    sessions = sorted((out / ".ray").glob("session_2*"))
    r = run_cli(*batch_args(fleet, out))
    assert r.returncode == 1, r.stderr
    assert r.stdout.splitlines()[0] == ("drives   6 found: 0 to do, 5 done earlier, 1 failed "
                                        "earlier (--retry-failed runs them again)")
    assert "ray " not in r.stdout and r.stderr == ""
    assert sorted((out / ".ray").glob("session_2*")) == sessions
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert [r["event"] for r in read_jsonl(out / "batch.jsonl")[-2:]] == ["start", "end"]


def test_only_a_drive_whose_output_was_deleted_is_redone(first_run, fleet, cluster):
    """(On the local cluster: the same batch folder, joined by address.)"""
    out = first_run.out
    shutil.rmtree(out / "car2-rear")
    kept = {d: (out / d / "summary.json").stat().st_mtime_ns for d in GOOD if d != "car2-rear"}
    n_before = len(read_jsonl(out / "batch.jsonl"))
    r = run_cli(*batch_args(fleet, out, "--retry-failed", "--workers", "1", "--address",
                            cluster.address))
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["drives   6 found: 2 to do, 4 done earlier, 0 failed earlier",
                         f"redo     car2-rear: {out / 'car2-rear'} is missing"]
    new = [rec for rec in read_jsonl(out / "batch.jsonl")[n_before:] if "drive" in rec]
    assert sorted((rec["drive"], rec["state"]) for rec in new) == [
        ("bad-corrupt", "failed"), ("bad-corrupt", "queued"),
        ("car2-rear", "done"), ("car2-rear", "queued")]
    assert {d: (out / d / "summary.json").stat().st_mtime_ns for d in kept} == kept
    summary = json.loads((out / "car2-rear" / "summary.json").read_text())
    assert summary["frames_out"] == fleet.frames["car2-rear"]


def test_a_changed_config_is_refused_without_force(first_run, fleet):
    out = first_run.out
    r = run_cli(*batch_args(fleet, out, "--alpha", "0.3"))
    assert r.returncode == 2
    assert r.stderr == (f"drivesegrt: error: {out / 'batch.jsonl'}: its drives were made with "
                        f"another model or config (overlay.alpha: 0.5 -> 0.3); pass --force to "
                        f"redo them, or choose another --output\n")
    # Engine threads do not change what a drive's outputs contain: not a change.
    r = run_cli(*batch_args(fleet, out, "--threads", "2"))
    assert r.returncode == 1 and "0 to do, 5 done earlier" in r.stdout


# --------------------------------------------------------------------------- cluster
def test_ctrl_c_once_lets_the_running_drives_finish(first_run, fleet, cluster):
    """--force with a changed config, one worker, on the cluster; SIGINT while car1-front
    runs: it finishes, no other drive starts, exit 130, the ledger says what is done."""
    out = first_run.out
    n_before = len(read_jsonl(out / "batch.jsonl"))
    run = LiveRun(*batch_args(fleet, out, "--alpha", "0.3", "--force", "--workers", "1",
                              "--address", cluster.address))
    try:
        wait_for_attempt(out, "car1-front", 3, run=run)
        started = {p.name for p in (out / ".partial").iterdir()}
        run.proc.send_signal(signal.SIGINT)
        rc = run.finish(timeout=120)
    finally:
        run.kill()
    assert rc == 130, run.stderr
    assert ("drivesegrt: SIGINT: no new drives; the running ones finish (again to abandon "
            "them)") in run.stderr
    new = read_jsonl(out / "batch.jsonl")[n_before:]
    assert new[0]["event"] == "start" and new[0]["force"] is True
    assert new[-1]["event"] == "end" and new[-1]["interrupted"] is True
    done = {r["drive"] for r in new if r.get("state") == "done"}
    assert "car1-front" in done and done <= started | {"day1_images"}
    assert len(done) < 6
    summary = json.loads((out / "car1-front" / "summary.json").read_text())
    assert summary["config"]["overlay"]["alpha"] == 0.3
    assert summary["frames_out"] == fleet.frames["car1-front"]
    report = json.loads((out / "report.json").read_text())
    assert report["totals"]["done"] == len(done)
    assert report["totals"]["not_done"] == 6 - len(done)
    assert not (out / ".partial").exists()


def test_ctrl_c_twice_abandons_the_running_drives(fleet, cluster, tmp_path):
    out = tmp_path / "out"
    run = LiveRun(*batch_args(fleet, out, "--workers", "2", "--address", cluster.address))
    try:
        pid, _ = wait_for_attempt(out, "car1-front", 3, run=run)
        run.proc.send_signal(signal.SIGINT)
        run.wait_for_line("no new drives")        # two signals at once are one for Python
        run.proc.send_signal(signal.SIGINT)
        rc = run.finish(timeout=120)
    finally:
        run.kill()
    assert rc == 130, run.stderr
    assert "drivesegrt: SIGINT: abandoning the running drives" in run.stderr
    states = {}
    for r in drive_records(out):
        states[r["drive"]] = r["state"]
    assert states["car1-front"] == "queued"              # not done: a re-run does it
    assert not (out / "car1-front").exists() and not (out / ".partial").exists()
    for drive_id, state in states.items():               # done means whole outputs
        if state == "done":
            summary = json.loads((out / drive_id / "summary.json").read_text())
            assert summary["frames_out"] == fleet.frames[drive_id]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_two_node_cluster_finishes_the_job_when_a_node_leaves(fleet, cluster, tmp_path):
    """Three workers need both nodes (2 + 1 CPUs); the second node is stopped (its processes
    get SIGTERM, as `ray stop` does) while its worker runs a drive."""
    out = tmp_path / "out"
    raylet = cluster.raylet

    def on_second_node():
        return {c.pid for c in raylet.children(recursive=True)}

    manifest = tmp_path / "drives.csv"
    manifest.write_text("path,drive_id\n" + "".join(
        f"{fleet.root / 'fleet' / car / f'{cam}.mp4'},{car}-{cam}\n"
        for car, cam in (("car1", "front"), ("car2", "front"), ("car2", "rear")))
        + f"{fleet.root / 'clips' / 'other.mp4'},extra\n")
    run = LiveRun("batch", manifest, "--output", out, "--model", fleet.model,
                  "--address", cluster.address, "--workers", "3")
    try:
        pid, attempt = wait_for_attempt(out, None, 3, pids=on_second_node, run=run)
        drive_id = attempt.parent.name
        node2 = [raylet, *raylet.children(recursive=True),
                 *(p for p in cluster.second if p.pid != raylet.pid)]
        stop_processes(node2, signal.SIGTERM)
        rc = run.finish(timeout=240)
    finally:
        run.kill()
    assert rc == 0, run.stderr
    assert f"cluster at {cluster.address}: 2 nodes, 3 CPUs" in run.stdout
    records = [r for r in drive_records(out) if r["state"] == "done"]
    assert sorted(r["drive"] for r in records) == ["car1-front", "car2-front", "car2-rear",
                                                   "extra"]
    moved = next(r for r in records if r["drive"] == drive_id)
    assert moved["lost_attempts"] == 1 and moved["pid"] != pid
    for r in records:
        summary = json.loads((out / r["drive"] / "summary.json").read_text())
        assert summary["frames_in"] == summary["frames_out"] == fleet.frames[r["drive"]]
    assert alive(node2) == []


# --------------------------------------------------------------------------- no Ray needed
def test_without_ray_batch_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)         # `import ray` raises ImportError
    assert cli_main("batch", tmp_path, "--output", tmp_path / "out") == 2
    assert capsys.readouterr().err == (
        'drivesegrt: error: drivesegrt batch needs Ray: pip install "drivesegrt[fleet]" '
        '(or pip install "ray>=2.9" pyarrow)\n')


def test_bad_sources_and_foreign_output_folders_are_usage_errors(tmp_path, capsys):
    pytest.importorskip("ray")
    assert cli_main("batch", tmp_path / "nothing.mp4", "--output", tmp_path / "o") == 2
    assert capsys.readouterr().err == \
        f"drivesegrt: error: source not found: {tmp_path / 'nothing.mp4'}\n"
    (tmp_path / "empty").mkdir()
    assert cli_main("batch", tmp_path / "empty", "--output", tmp_path / "o") == 2
    assert capsys.readouterr().err.startswith(
        f"drivesegrt: error: no videos or images found in {tmp_path / 'empty'} (video suffixes: ")
    (tmp_path / "clip.mp4").write_bytes(b"")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert cli_main("batch", tmp_path / "clip.mp4", "--output", tmp_path / "mine") == 2
    assert capsys.readouterr().err == (
        f"drivesegrt: error: --output {tmp_path / 'mine'}: the folder holds other files "
        f"(notes.txt, ...) and no batch.jsonl; choose a new or empty folder\n")


def test_drive_ids_are_stable_unique_and_named_after_paths(tmp_path):
    for rel in ("a/cam/front.mp4", "b/cam/front.mp4", "b/frames.mp4", "b/x y.mov",
                "b/imgs/0001.png", "b/notes.txt", "c/front.mp4", "c/front.mkv"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "list.csv").write_text("path,drive_id\nc/front.mp4,special\nmissing.mp4,\n")

    def digest(rel):
        return hashlib.sha1(str(tmp_path / rel).encode()).hexdigest()[:6]

    sources = [str(tmp_path / s) for s in ("a", "b", "c", "list.csv")]
    drives = find_drives(sources)
    assert [(d.id, d.kind, d.source) for d in drives] == [
        # a folder: paths relative to it; ids that would collide get a digest of the path
        (f"cam-front-{digest('a/cam/front.mp4')}", "video", str(tmp_path / "a/cam/front.mp4")),
        # 'frames' is the batch's Parquet folder; names keep [A-Za-z0-9._-]
        (f"frames-{digest('b/frames.mp4')}", "video", str(tmp_path / "b/frames.mp4")),
        ("x_y", "video", str(tmp_path / "b/x y.mov")),
        (f"cam-front-{digest('b/cam/front.mp4')}", "video", str(tmp_path / "b/cam/front.mp4")),
        ("imgs", "images", str(tmp_path / "b/imgs")),          # an image folder: one drive
        ("front", "video", str(tmp_path / "c/front.mkv")),
        ("special", "video", str(tmp_path / "c/front.mp4")),   # named by the manifest
        ("missing", "video", str(tmp_path / "missing.mp4")),   # fails when run (recorded)
    ]
    # The same drives named in another order keep their ids.
    again = find_drives(sources[::-1])
    assert sorted((d.id, d.source) for d in again) == sorted((d.id, d.source) for d in drives)
    (tmp_path / "dup.csv").write_text("path,drive_id\nc/front.mp4,x\nc/front.mkv,x\n")
    with pytest.raises(ValueError, match=r"^drive_id 'x' is given twice \("):
        find_drives([str(tmp_path / "dup.csv")])
    (tmp_path / "nopath.csv").write_text("file,drive_id\na.mp4,a\n")
    with pytest.raises(ValueError) as e:
        find_drives([str(tmp_path / "nopath.csv")])
    assert str(e.value) == (f"{tmp_path / 'nopath.csv'}: a CSV manifest needs a 'path' column "
                            f"(and optionally 'drive_id'); header: file,drive_id")
