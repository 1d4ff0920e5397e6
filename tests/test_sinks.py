"""Sinks: overlay.mp4 (ffmpeg H.264 and OpenCV mp4v), images, masks, frames.jsonl."""
from __future__ import annotations

import shutil

import av
import cv2
import numpy as np
import pytest
from helpers import HIGHWAY_CLIP, published_frame, read_jsonl, video_info

from drivesegrt.publish.sinks import (
    ImageSink,
    JsonlSink,
    MaskSink,
    VideoSink,
    WindowSink,
    Worker,
)


def frames(n, size=(96, 64), stem=None):
    return [published_frame(i, size, None if stem is None else f"{stem}{i}") for i in range(n)]


@pytest.mark.parametrize("codec", ["h264", "mp4v"])
def test_video_sink_decodes_to_every_frame(tmp_path, codec):
    if codec == "h264" and shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    sink = VideoSink(tmp_path / "o.mp4", (96, 64), 25.0, codec)
    for f in frames(12):
        sink.write(f)
    sink.close()
    assert video_info(tmp_path / "o.mp4") == (12, 96, 64)
    assert ("libx264" if codec == "h264" else "mp4v") in sink.describe()["encoder"]
    assert len(sink.encode_ms()) == 12


def test_h264_video_holds_the_frames_written(tmp_path, shared_data):
    # Frames go into the encoder pipe as I420 converted by OpenCV: colors must survive.
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")

    with av.open(str(HIGHWAY_CLIP)) as c:
        images = [f.to_ndarray(format="bgr24") for _, f in zip(range(10), c.decode(video=0))]
    sink = VideoSink(tmp_path / "o.mp4", (960, 540), 25.0, "h264")
    for i, img in enumerate(images):
        f = published_frame(i, (960, 540))
        f.overlay = img
        sink.write(f)
    sink.close()
    with av.open(str(tmp_path / "o.mp4")) as c:
        back = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(back) == 10
    psnr = [cv2.PSNR(a, b) for a, b in zip(images, back)]
    assert min(psnr) > 35, psnr                       # crf 23 on this clip: about 40 dB
    means = [np.abs(a.mean((0, 1)) - b.mean((0, 1))).max() for a, b in zip(images, back)]
    assert max(means) < 1.5, means                    # no color shift per channel


def test_video_sink_auto_falls_back_to_mp4v_for_odd_sizes(tmp_path):
    sink = VideoSink(tmp_path / "o.mp4", (95, 63), 10.0, "auto")
    for f in frames(3, (95, 63)):
        sink.write(f)
    sink.close()
    assert "mp4v" in sink.encoder
    assert video_info(tmp_path / "o.mp4")[0] == 3


def test_mask_and_image_sinks_name_files(tmp_path):
    masks, images = MaskSink(tmp_path / "masks"), ImageSink(tmp_path / "overlays")
    for f in frames(3, stem="img"):
        masks.write(f)
        images.write(f)
    video_masks = MaskSink(tmp_path / "vmasks")
    for f in frames(2):
        video_masks.write(f)
    for s in (masks, images, video_masks):
        s.close()
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["img0.png", "img1.png", "img2.png"]
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert sorted(p.name for p in (tmp_path / "vmasks").iterdir()) == ["000000.png", "000001.png"]
    m = cv2.imread(str(tmp_path / "masks" / "img2.png"), cv2.IMREAD_UNCHANGED)
    assert m.dtype == np.uint8 and m.ndim == 2 and (m == 2).all()


def test_jsonl_records(tmp_path):
    sink = JsonlSink(tmp_path / "frames.jsonl")
    for f in frames(2, stem="s"):
        sink.write(f)
    sink.close()
    recs = read_jsonl(tmp_path / "frames.jsonl")
    assert [r["index"] for r in recs] == [0, 1]
    assert set(recs[0]) == {"index", "capture_time", "stages_ms", "latency_ms", "stem"}


def test_worker_reraises_job_errors():
    w = Worker("t", 2)

    def boom():
        raise OSError("disk full")

    w.submit(boom)
    with pytest.raises(OSError, match="disk full"):
        w.close()


def test_window_unavailable_without_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert "no display" in WindowSink.unavailable_reason()
