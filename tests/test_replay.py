"""drivesegrt replay: a recorded drive served as a live MPEG-TS stream on 127.0.0.1."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import cv2
import pytest
from helpers import HIGHWAY_CLIP, ROOT, needs_ffmpeg, read_summary, run_cli

from drivesegrt.capture.replay import ReplayServer, free_port

pytestmark = needs_ffmpeg


def test_replay_server_streams_frames(shared_data):
    with ReplayServer(HIGHWAY_CLIP, free_port()) as server:
        cap = cv2.VideoCapture(server.url)
        assert cap.isOpened()
        frames = []
        for _ in range(10):
            ok, frame = cap.read()
            assert ok
            frames.append(frame)
        cap.release()
    assert frames[0].shape == (540, 960, 3)
    assert not server.running()


def test_replay_cli_missing_clip_is_one_line_exit_2(tmp_path):
    r = run_cli("replay", tmp_path / "nope.mp4", timeout=60)
    assert r.returncode == 2
    assert r.stderr == f"drivesegrt: error: clip not found: {tmp_path / 'nope.mp4'}\n"


def _replay_process(*args) -> subprocess.Popen:
    """``drivesegrt replay ARGS`` as a process, returned once it says it is serving."""
    cmd = [sys.executable, "-m", "drivesegrt", "replay", *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("serving "), proc.stderr.read() if proc.poll() is not None else line
    return proc


@pytest.mark.timeout(180)
def test_replay_serves_one_client_after_another(shared_data, tmp_path):
    """The README calls replay looped: a second run must connect after the first one left
    (ffmpeg's one-client server exited after the first: "ffmpeg exited with code 1")."""
    port = free_port()
    server = _replay_process(HIGHWAY_CLIP, "--port", port)
    try:
        for i in range(2):
            out = tmp_path / f"run{i}"
            r = run_cli("run", "--source", f"http://127.0.0.1:{port}/live.ts", "--max-frames", 5,
                        "--output", out, timeout=120)
            assert r.returncode == 0 and r.stderr == "", r.stderr
            assert read_summary(out)["frames_out"] == 5
            assert server.poll() is None                       # still serving
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        assert server.stderr.read() == ""
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.timeout(120)
def test_replay_serves_clients_at_once(shared_data):
    with ReplayServer(HIGHWAY_CLIP, free_port()) as server:
        caps = [cv2.VideoCapture(server.url) for _ in range(2)]
        for cap in caps:
            assert cap.isOpened() and cap.read()[1].shape == (540, 960, 3)
        for cap in caps:
            cap.release()


def test_replay_refuses_a_file_without_video(tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n")
    r = run_cli("replay", notes, timeout=60)
    assert r.returncode == 2
    assert r.stderr == f"drivesegrt: error: {notes}: cannot open as a video (unknown or corrupt format)\n"
