"""Overlay: LUT colors blended with alpha, legend, HUD."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import HIGHWAY_CLIP

from drivesegrt.labels import CAMVID11, palette_lut
from drivesegrt.publish.overlay import Overlay, colorize, hud_text


def test_colorize_uses_palette_in_bgr():
    labels = np.array([[0, 3], [8, 200]], np.uint8)
    color = colorize(labels, palette_lut(CAMVID11.palette).reshape(256, 1, 3))
    assert tuple(color[0, 1]) == tuple(CAMVID11.palette[3][::-1])
    assert tuple(color[1, 0]) == tuple(CAMVID11.palette[8][::-1])
    assert tuple(color[1, 1]) == (0, 0, 0)         # ids without a color are black


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_alpha_blend(alpha):
    frame = np.full((40, 60, 3), 100, np.uint8)
    labels = np.full((40, 60), 3, np.uint8)
    out = Overlay(CAMVID11.class_names, CAMVID11.palette, alpha, legend=False, hud=False)(frame, labels)
    road_bgr = np.array(CAMVID11.palette[3][::-1], np.float32)
    expect = np.round((1 - alpha) * 100 + alpha * road_bgr)
    assert np.abs(out[20, 30].astype(np.float32) - expect).max() <= 1
    assert frame[0, 0, 0] == 100                  # input untouched


def test_legend_and_hud_are_drawn():
    frame = np.zeros((540, 960, 3), np.uint8)
    labels = np.zeros((540, 960), np.uint8)
    plain = Overlay(CAMVID11.class_names, CAMVID11.palette, 0.0, legend=False, hud=False)(frame, labels)
    full = Overlay(CAMVID11.class_names, CAMVID11.palette, 0.0)(
        frame, labels, {"fps": 61.5, "stages_ms": {"infer": 9.8}})
    assert not plain.any()
    assert full[:100, :100].any()                   # legend, top-left
    assert full[-20:, :200].any()                   # HUD, bottom
    assert hud_text({"fps": 61.5, "stages_ms": {"infer": 9.8}}) == " 61.5 FPS  inf 9.8 ms"


def test_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        Overlay(("a",), ((1, 2, 3),), 1.5)


def test_overlay_is_the_three_channel_lut_blend_bit_for_bit():
    # Per-channel LUTs replaced one 3-channel cv2.LUT: the overlay must not move by a level.

    cap = cv2.VideoCapture(str(HIGHWAY_CLIP))
    ok, frame = cap.read()
    cap.release()
    assert ok
    labels = np.random.default_rng(0).integers(0, 256, frame.shape[:2], dtype=np.uint8)
    lut3 = palette_lut(CAMVID11.palette, bgr=True).reshape(256, 1, 3)
    color = cv2.LUT(cv2.merge((labels, labels, labels)), lut3)
    ref = cv2.addWeighted(frame, 0.6, color, 0.4, 0.0)
    out = Overlay(CAMVID11.class_names, CAMVID11.palette, 0.4, legend=False, hud=False)(
        frame, labels)
    assert np.array_equal(out, ref)
    assert np.array_equal(colorize(labels, lut3), color)
