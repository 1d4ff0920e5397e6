"""Sources and the capture stage (recorded: every frame in order; live: newest only)."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from helpers import CAMVID, CAMVID_CLIP, HIGHWAY_CLIP

from drivesegrt.capture import (
    ImageSource,
    LatestFrame,
    Prefetch,
    SyntheticSource,
    VideoFileSource,
    open_source,
)


def drain(reader):
    frames = []
    while (f := reader.read()) is not None:
        frames.append(f)
    reader.close()
    return frames


def test_synthetic_options_and_motion():
    src = open_source("synthetic:?w=320&h=180&fps=12&frames=5&seed=1")
    assert isinstance(src, SyntheticSource) and not src.live
    assert (src.size, src.fps, src.frame_count) == ((320, 180), 12.0, 5)
    frames = [src.read() for _ in range(6)]
    assert frames[-1] is None
    assert [f.index for f in frames[:5]] == [0, 1, 2, 3, 4]
    assert frames[0].image.shape == (180, 320, 3) and frames[0].image.dtype == np.uint8
    assert not np.array_equal(frames[0].image, frames[4].image)      # the scene moves
    assert "capture" in frames[0].stages_ms


def test_synthetic_bad_option():
    with pytest.raises(ValueError, match="unknown option 'width'; allowed: w, h, fps"):
        open_source("synthetic:?width=3")


def test_video_file_every_frame_in_order(shared_data):
    src = open_source(str(CAMVID_CLIP))
    assert isinstance(src, VideoFileSource) and not src.live
    assert src.size == (480, 360) and src.fps == pytest.approx(15.0)
    frames = drain(Prefetch(src, depth=2))
    assert [f.index for f in frames] == list(range(101))
    assert all(f.image.shape == (360, 480, 3) for f in frames)


def test_prefetch_max_frames_and_count(shared_data):
    reader = Prefetch(open_source(str(HIGHWAY_CLIP)), depth=3, max_frames=7)
    frames = drain(reader)
    assert len(frames) == 7 and reader.frames_in == 7 and reader.frames_dropped == 0


def test_image_folder_name_order_and_stems(shared_data, tmp_path):
    names = sorted(p.name for p in (CAMVID / "test").glob("*.png"))[:3]
    for n in names:
        (tmp_path / n).symlink_to(CAMVID / "test" / n)
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(str(tmp_path))
    assert isinstance(src, ImageSource) and src.frame_count == 3
    frames = drain(Prefetch(src))
    assert [f.stem for f in frames] == [n[:-4] for n in names]
    glob_src = open_source(str(tmp_path / "*.png"))
    assert [f.stem for f in drain(Prefetch(glob_src))] == [n[:-4] for n in names]


def test_unreadable_image_is_skipped(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "b.png").write_bytes(b"garbage")
    cv2.imwrite(str(tmp_path / "c.png"), np.zeros((8, 8, 3), np.uint8))
    src = open_source(str(tmp_path))
    assert [f.stem for f in drain(Prefetch(src))] == ["a", "c"]
    assert src.frames_failed == 1


@pytest.mark.parametrize("spec, exc, match", [
    ("/nonexistent/clip.mp4", FileNotFoundError, "source not found"),
    ("/dev/video97", ValueError, "camera /dev/video97 does not open"),
    ("97", ValueError, "camera 97 does not open"),
    ("gopher://x", ValueError, "unsupported stream scheme 'gopher'"),
    ("/nonexistent/*.png", FileNotFoundError, "no images found"),
])
def test_bad_sources(spec, exc, match):
    with pytest.raises(exc, match=match):
        open_source(spec)


def test_garbage_video_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 5000)
    with pytest.raises(ValueError) as e:
        open_source(str(bad))
    assert str(e.value) == f"{bad}: cannot open as a video (unknown or corrupt format)"


def test_latest_frame_drops_stale_frames():
    """A live source at 200 fps read by a consumer at ~20 fps: most frames are dropped,
    the ones delivered are fresh, and in == delivered + dropped."""
    src = open_source("synthetic:?w=64&h=48&fps=200&frames=0&live=1")
    assert src.live
    reader = LatestFrame(src)
    got, ages = [], []
    for _ in range(10):
        time.sleep(0.05)
        f = reader.read()
        ages.append(time.perf_counter() - f.t_capture)
        got.append(f.index)
    reader.close()
    assert got == sorted(got) and len(set(got)) == len(got)
    assert reader.frames_dropped > 0
    assert reader.frames_in == len(got) + reader.frames_dropped
    assert max(ages) < 0.05          # at most ~one capture interval old, never queued


def test_truncated_video_delivers_frames_before_the_cut(shared_data, tmp_path):
    data = HIGHWAY_CLIP.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    frames = drain(Prefetch(open_source(str(cut))))
    assert 50 < len(frames) < 221
    assert [f.index for f in frames] == list(range(len(frames)))
