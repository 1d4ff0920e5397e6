"""drivesegrt replay: a recorded drive served as a live MPEG-TS stream on 127.0.0.1."""
from __future__ import annotations

import cv2
from helpers import HIGHWAY_CLIP, needs_ffmpeg, run_cli

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
