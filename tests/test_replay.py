"""drivesegrt replay: a recorded drive served as a live MPEG-TS stream on 127.0.0.1."""
from __future__ import annotations

import shutil
import subprocess
import sys

import cv2
import pytest
from conftest import HIGHWAY_CLIP
from live_helpers import free_port

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def test_replay_server_streams_frames(shared_data):
    from drivesegrt.capture.replay import ReplayServer

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
    r = subprocess.run([sys.executable, "-m", "drivesegrt", "replay", str(tmp_path / "nope.mp4")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "nope.mp4" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
