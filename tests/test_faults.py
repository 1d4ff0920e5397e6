"""Output faults for real: a full disk (a tiny tmpfs), two runs into one folder, a reused
folder, a stale lock, a run folder removed mid-run, an unwritable summary.json, signals
during start-up, output paths that look like FFmpeg protocols. Each case is a real
``drivesegrt run`` process; the outputs are checked with ffmpeg/ffprobe and json."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager

import pytest
from helpers import (
    HIGHWAY_CLIP,
    LiveRun,
    cli_main,
    ffmpeg,
    needs_ffmpeg,
    published_frame,
    read_jsonl,
    read_summary,
    run_args,
    run_cli,
    tiny_checkpoint,
)

from drivesegrt.publish import mp4
from drivesegrt.publish.rundir import LOCK, RESERVE
from drivesegrt.publish.sinks import VideoSink

pytestmark = [needs_ffmpeg, pytest.mark.timeout(240)]

LIVE = "synthetic:?w=160&h=120&fps=10&frames=600&live=1"      # a minute, paced: stopped early


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", input_size=(96, 128))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("drivesegrt: error:")]


@contextmanager
def tmpfs(path, size: str):
    """A real tmpfs of ``size`` mounted at ``path`` (root only; the test skips otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def decoded_frames(path) -> int:
    """Frames in ``path`` decoded by FFmpeg to the end; fails on any decoder complaint (a
    cut-off fragment, "moov atom not found")."""
    r = subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-i", str(path), "-f", "null",
                        "-"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                            "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0",
                            str(path)], capture_output=True, text=True, check=True)
    return int(probe.stdout.strip())


def whole_lines(path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), f"{path} ends inside a line: {text[-80:]!r}"
    return [json.loads(line) for line in text.splitlines()]


# ------------------------------------------------------------------------- a full disk
def test_full_disk_keeps_a_playable_video_a_summary_and_whole_lines(shared_data, tmp_path,
                                                                   model, one_thread_config):
    """The issue's case: a small filesystem fills up during the highway clip. The run says so
    in one line naming the file; overlay.mp4 plays to its last complete fragment, summary.json
    is there (its space was reserved), frames.jsonl holds whole lines, no temp files remain."""
    with tmpfs(tmp_path / "disk", "1m") as disk:        # the tiny model's video: 1.5 MB
        out = disk / "r1"
        r = run_cli(*run_args(model, one_thread_config, HIGHWAY_CLIP, out))
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr
        errors = error_lines(r.stderr)
        assert len(errors) == 1, r.stderr
        assert re.match(rf"drivesegrt: error: cannot write {re.escape(str(out))}/"
                        rf"(overlay\.mp4|frames\.jsonl): No space left on device \(disk full\) "
                        rf"\(outputs written so far are finalized in {re.escape(str(out))}",
                        errors[0]), errors[0]
        s = read_summary(out)
        assert "No space left on device (disk full)" in s["error"]
        assert 0 < s["frames_out"] < 221
        assert sorted(p.name for p in out.iterdir()) == ["frames.jsonl", "overlay.mp4",
                                                         "summary.json"]
        n = decoded_frames(out / "overlay.mp4")
        assert 0 < n <= s["frames_out"]
        assert s["outputs"]["video"].get("frames_kept", n) == n
        records = whole_lines(out / "frames.jsonl")
        assert s["frames_out"] - 1 <= len(records) <= s["frames_out"]
        assert [rec["index"] for rec in records] == list(range(len(records)))


def test_full_disk_in_frames_jsonl_leaves_whole_lines(tmp_path, model, one_thread_config):
    """Only frames.jsonl grows (no video, no masks) on a disk with 16 KiB beyond summary.json's
    reservation: the line that does not fit is taken back whole."""
    with tmpfs(tmp_path / "disk", f"{RESERVE // 1024 + 16}k") as disk:
        out = disk / "r"
        r = run_cli(*run_args(model, one_thread_config, "synthetic:?w=64&h=48&frames=2000", out,
                              "--no-video"))
        assert r.returncode == 1, r.stderr
        errors = error_lines(r.stderr)
        assert len(errors) == 1 and errors[0].startswith(
            f"drivesegrt: error: cannot write {out}/frames.jsonl: No space left on device "
            f"(disk full)"), r.stderr
        s = read_summary(out)
        records = whole_lines(out / "frames.jsonl")
        assert 0 < len(records) < 2000 and s["frames_out"] - 1 <= len(records) <= s["frames_out"]


def test_trim_to_complete_fragments(tmp_path):
    """overlay.mp4 cut anywhere (a write that did not fit) is trimmed to whole fragments that
    FFmpeg decodes without a complaint; the count it reports is what FFmpeg decodes."""
    sink = VideoSink(tmp_path / "o.mp4", (96, 64), 25.0, "h264")
    for i in range(60):
        sink.write(published_frame(i, (96, 64)))
    sink.close()
    data = (tmp_path / "o.mp4").read_bytes()
    assert decoded_frames(tmp_path / "o.mp4") == 60
    # Inside fragments (frames lost), and inside the closing index (no frame lost).
    for cut, all_kept in ((len(data) // 3, False), (len(data) // 2 + 7, False),
                          (len(data) - 100, True)):
        part = tmp_path / f"cut{cut}.mp4"
        part.write_bytes(data[:cut])
        kept = mp4.trim_to_complete(part)
        assert (kept == 60) if all_kept else (0 < kept < 60)
        assert part.stat().st_size <= cut and decoded_frames(part) == kept


# ------------------------------------------------------------------------- one run per folder
def test_second_run_into_a_busy_folder_is_refused_naming_the_holder(tmp_path, model,
                                                                   one_thread_config):
    out = tmp_path / "run"
    first = LiveRun(*run_args(model, one_thread_config, LIVE, out, "--save-masks"))
    try:
        first.wait_for_frames(out / "frames.jsonl", 3)
        for more in ((), ("--overwrite",)):               # --overwrite does not break a lock
            r = run_cli(*run_args(model, one_thread_config, "synthetic:?w=160&h=120&frames=5",
                                  out, "--save-masks", *more))
            assert r.returncode == 2
            assert re.fullmatch(
                rf"drivesegrt: error: output directory {re.escape(str(out))} is in use by another "
                rf"run \(pid {first.proc.pid} on {re.escape(socket.gethostname())}, started "
                rf"\S+\); wait for it to end or choose another --output\n", r.stderr), r.stderr
        rc = first.interrupt(signal.SIGINT)
    finally:
        first.kill()
    assert rc == 130, first.stderr
    s = read_summary(out)
    assert decoded_frames(out / "overlay.mp4") == s["frames_out"]
    assert len(list((out / "masks").iterdir())) == s["frames_out"]
    assert not (out / LOCK).exists()


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path, model, one_thread_config):
    out = tmp_path / "run"
    killed = LiveRun(*run_args(model, one_thread_config, LIVE, out, "--save-masks"))
    try:
        killed.wait_for_frames(out / "frames.jsonl", 3)
        killed.proc.kill()
        killed.finish()
    finally:
        killed.kill()
    assert (out / LOCK).exists()                           # left behind by SIGKILL
    r = run_cli(*run_args(model, one_thread_config, "synthetic:?w=160&h=120&frames=4", out,
                          "--save-masks", "--overwrite"))
    assert r.returncode == 0, r.stderr
    assert (f"drivesegrt: taking over {out} from a run that is gone (pid {killed.proc.pid} on "
            f"{socket.gethostname()}, started ") in r.stderr
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:06d}.png" for i in range(4)]
    assert len(read_jsonl(out / "frames.jsonl")) == 4 and not (out / LOCK).exists()


def test_reused_folder_refused_without_overwrite_and_cleared_with_it(tmp_path, model,
                                                                    one_thread_config):
    """A second run in a folder that holds a first run's outputs: exit 2 without --overwrite;
    with it, the old outputs go (no stale masks beside the new ones) and the user's own files
    stay."""
    out = tmp_path / "run"
    six = run_args(model, one_thread_config, "synthetic:?w=160&h=120&frames=6", out,
                   "--save-masks")
    assert run_cli(*six).returncode == 0
    r = run_cli(*six)
    assert r.returncode == 2
    assert r.stderr == (f"drivesegrt: error: output directory {out} is not empty (frames.jsonl, "
                        f"masks, overlay.mp4, summary.json); use --overwrite to replace a "
                        f"previous run's outputs, or another --output\n")
    (out / "notes.txt").write_text("mine")
    (out / "keep").mkdir()
    (out / "keep" / "a.txt").write_text("mine too")
    r = run_cli(*run_args(model, one_thread_config, "synthetic:?w=160&h=120&frames=3", out,
                          "--save-masks", "--overwrite"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:06d}.png" for i in range(3)]
    assert read_summary(out)["frames_out"] == 3 and decoded_frames(out / "overlay.mp4") == 3
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "keep" / "a.txt").read_text() == "mine too"


# ------------------------------------------------------------------------- exit codes
@pytest.mark.parametrize("fault", ["summary_unwritable", "run_dir_removed"])
def test_output_failing_after_frames_is_exit_1(tmp_path, model, one_thread_config, fault):
    out = tmp_path / "run"
    run = LiveRun(*run_args(model, one_thread_config,
                            "synthetic:?w=160&h=120&fps=20&frames=60&live=1", out))
    try:
        run.wait_for_frames(out / "frames.jsonl", 5)
        if fault == "summary_unwritable":
            (out / "summary.json").mkdir()                 # something else took the name
        else:
            shutil.rmtree(out)
        rc = run.finish()
    finally:
        run.kill()
    assert rc == 1, run.stderr
    assert "Traceback" not in run.stderr
    errors = error_lines(run.stderr)
    assert len(errors) == 1, run.stderr
    if fault == "summary_unwritable":
        assert errors[0].startswith(f"drivesegrt: error: cannot write {out}/summary.json: "
                                    f"Is a directory (outputs written so far are finalized")
        # a live source drops frames the loaded machine cannot take; what was published is
        # whole in both outputs
        n = len(whole_lines(out / "frames.jsonl"))
        assert n >= 5 and decoded_frames(out / "overlay.mp4") == n
    else:
        assert errors[0].startswith(f"drivesegrt: error: run directory {out} was removed during "
                                    f"the run; its outputs are lost")
        assert not out.exists()


class StallingStream:
    """An HTTP server on 127.0.0.1 that takes a connection, holds it until ``release()``,
    then sends an MPEG-TS clip: a camera that is slow to answer at start-up."""

    def __init__(self, clip):
        self.clip = clip
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/live.ts"
        self.connected = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)                               # the request
            self.connected.set()
            self._release.wait(30)
            try:
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\n\r\n"
                             + self.clip.read_bytes())
            except OSError:
                pass

    def release(self):
        self._release.set()

    def close(self):
        self._release.set()
        self.sock.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_start_up_exits_130_with_outputs_finalized(tmp_path, model,
                                                                 one_thread_config, signum):
    """The signal arrives while the run is still opening its source (the handlers are in
    place from the start): exit 130, not SIGTERM's default death (143), and a summary saying
    it was interrupted before the first frame."""
    clip = tmp_path / "clip.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", 2, "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "mpegts", clip)
    server = StallingStream(clip)
    out = tmp_path / "run"
    run = LiveRun(*run_args(model, one_thread_config, server.url, out))
    try:
        assert server.connected.wait(60), run.stderr
        run.proc.send_signal(signum)
        time.sleep(0.5)                    # delivered while the source is still opening
        server.release()
        rc = run.finish()
    finally:
        server.close()
        run.kill()
    assert rc == 130, run.stderr
    assert "Traceback" not in run.stderr
    assert (f"drivesegrt: {signal.Signals(signum).name} during start-up: stopping before the "
            f"first frame") in run.stderr
    s = read_summary(out)
    assert s["interrupted"] and s["frames_out"] == 0 and s["error"] is None


# ------------------------------------------------------------------------- output names
@pytest.mark.parametrize("name, folder", [("pipe:", "pipe:"), ("file:x", "file:x"),
                                          ("tcp://127.0.0.1:9/r", "tcp:/127.0.0.1:9/r")])
def test_output_named_like_an_ffmpeg_protocol_is_a_folder(tmp_path, monkeypatch, capfd, model,
                                                          name, folder):
    """FFmpeg would read 'pipe:' as its stdout (the video lands in ours, no file) and 'tcp://'
    as a connection; the run directory is a folder of that name, always. (capfd sees what the
    ffmpeg child writes to the shared stdout too.)"""
    monkeypatch.chdir(tmp_path)
    rc = cli_main("run", "--backend", "torch", "--model", model, "--source",
                  "synthetic:?w=160&h=120&frames=5", "--output", name)
    stdout, stderr = capfd.readouterr()
    assert rc == 0, stderr
    assert "FPS end-to-end" in stdout and len(stdout) < 4096      # text only, no video bytes
    out = tmp_path / folder
    assert decoded_frames(out / "overlay.mp4") == 5
    assert read_summary(out)["frames_out"] == 5
