"""Preprocess: resize (stretch/letterbox) + normalize to the model's input."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import MEAN, STD

from drivesegrt.preprocess import (
    letterbox_box,
    normalize,
    pad_color,
    preprocess,
    resize,
)


def test_normalize_matches_formula():
    img = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    ref = (img[..., ::-1].astype(np.float32) / 255 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    out = normalize(img, MEAN, STD)
    assert out.shape == (2, 3, 5, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref.transpose(0, 3, 1, 2), atol=1e-5)


def test_stretch_resizes_to_input():
    frame = np.zeros((540, 960, 3), np.uint8)
    out, geom = resize(frame, (360, 480), "stretch")
    assert out.shape == (360, 480, 3)
    assert geom.content == (0, 0, 360, 480) and geom.frame_hw == (540, 960)


def test_same_size_is_not_copied():
    frame = np.zeros((360, 480, 3), np.uint8)
    out, _ = resize(frame, (360, 480), "stretch")
    assert out is frame


def test_letterbox_keeps_aspect_and_pads():
    frame = np.full((540, 960, 3), 200, np.uint8)
    out, geom = resize(frame, (360, 480), "letterbox", pad_bgr=(1, 2, 3))
    top, left, h, w = geom.content
    assert (h, w) == (270, 480) and (top, left) == (45, 0)
    assert (out[:top] == (1, 2, 3)).all() and (out[top + h:] == (1, 2, 3)).all()
    assert (out[top:top + h] == 200).all()
    assert letterbox_box((100, 100), (360, 480)) == (0, 60, 360, 360)


@pytest.mark.parametrize("fmt", ["float_nchw", "uint8_nhwc_bgr"])
@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_preprocess_formats(fmt, mode):
    """preprocess = resize (letterbox bars in the mean color), then (float_nchw only)
    normalize: the model's input, a batch of one."""
    frame = np.random.default_rng(1).integers(0, 256, (270, 500, 3), dtype=np.uint8)
    x, geom = preprocess(frame, (96, 128), MEAN, STD, mode, fmt)
    resized, ref_geom = resize(frame, (96, 128), mode, pad_color(MEAN))
    assert geom == ref_geom
    if fmt == "float_nchw":
        assert x.shape == (1, 3, 96, 128) and x.dtype == np.float32
        np.testing.assert_allclose(x, normalize(resized[None], MEAN, STD), rtol=0, atol=1e-6)
    else:
        assert x.shape == (1, 96, 128, 3) and x.dtype == np.uint8
        assert np.array_equal(x[0], resized)


def test_bad_modes():
    with pytest.raises(ValueError, match="allowed: stretch, letterbox"):
        resize(np.zeros((4, 4, 3), np.uint8), (8, 8), "fit")
    with pytest.raises(ValueError, match="allowed: float_nchw, uint8_nhwc_bgr"):
        preprocess(np.zeros((4, 4, 3), np.uint8), (8, 8), MEAN, STD, input_format="rgb")


@pytest.mark.parametrize("fmt", ["float_nchw", "uint8_nhwc_bgr"])
def test_calibration_and_training_validation_feed_what_run_feeds(tmp_path, fmt):
    """One preprocessing: the INT8 calibration reader and the training loop's validation
    give the engine exactly the array the pipeline's Segmenter gives it."""
    import cv2
    import torch

    from drivesegrt.deploy.quantize import FrameReader
    from drivesegrt.meta import ModelMeta
    from drivesegrt.train import train

    frame = np.random.default_rng(5).integers(0, 256, (270, 500, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "f.png"), frame)
    meta = ModelMeta(arch="x", input_size=(96, 128), input_format=fmt)
    run_input, _ = preprocess(frame, meta.input_size, meta.mean, meta.std, "stretch", fmt)
    calib = FrameReader("input", meta, [tmp_path / "f.png"]).get_next()["input"]
    assert calib.dtype == run_input.dtype and np.array_equal(calib, run_input)
    if fmt == "float_nchw":                 # training validates float models only
        seen = []

        class Probe(torch.nn.Module):
            def forward(self, x):
                seen.append(x.numpy().copy())
                return torch.zeros((x.shape[0], 2, *x.shape[2:]))

        dataset = [(frame, np.zeros(frame.shape[:2], np.uint8))]
        train.evaluate(Probe(), dataset, ModelMeta(arch="x", input_size=(96, 128),
                                                   class_names=("a", "b")), "cpu")
        assert np.array_equal(seen[0], run_input)
