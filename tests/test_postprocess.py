"""Postprocess: linear == F.interpolate(bilinear)+argmax; point == nearest of low-res argmax."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import HIGHWAY_CLIP, smooth_logits, tiny_checkpoint

from drivesegrt.infer.postprocess import Postprocessor, labels_point, postprocess
from drivesegrt.labels import CAMVID11, remap_table
from drivesegrt.preprocess import Geometry, letterbox_box, normalize, resize


def reference_linear(logits, out_hw):
    x = torch.from_numpy(logits)[None]
    return F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False)[0].argmax(0).numpy()


def stretch(frame_hw, input_hw):
    return Geometry(frame_hw, input_hw, (0, 0, *input_hw))


@pytest.mark.parametrize("c, low, frame", [
    (11, (90, 120), (540, 960)),     # MobileSeg at 360x480 -> the highway clip
    (11, (90, 120), (360, 480)),     # -> CamVid size
    (11, (90, 120), (720, 1280)),    # non-integer horizontal ratio
    (19, (64, 128), (371, 777)),     # odd sizes, Cityscapes classes
    (5, (360, 480), (540, 960)),     # full-resolution logits
])
def test_linear_matches_interpolate_argmax_on_smooth_logits(c, low, frame):
    logits = smooth_logits(c, *low)
    geom = stretch(frame, (low[0] * 4, low[1] * 4) if low[0] < 100 else low)
    out = postprocess(logits, geom, "linear")
    assert out.shape == frame and out.dtype == np.uint8
    assert (out == reference_linear(logits, frame)).mean() >= 0.999


def test_linear_matches_on_noisy_logits():
    """Worst case: almost every cell is a boundary cell."""
    logits = np.random.default_rng(0).standard_normal((11, 45, 60)).astype(np.float32)
    out = postprocess(logits, stretch((270, 480), (180, 240)), "linear")
    assert (out == reference_linear(logits, (270, 480))).mean() >= 0.999


def test_linear_matches_on_real_model_logits(tmp_path, shared_data):
    """A tiny random-weight MobileSeg on a real highway frame."""
    import cv2

    from drivesegrt.models.checkpoint import load_model

    model, meta = load_model(tiny_checkpoint(tmp_path / "m.pt", input_size=(360, 480)))
    cap = cv2.VideoCapture(str(HIGHWAY_CLIP))
    ok, frame = cap.read()
    assert ok
    x = normalize(resize(frame, meta.input_size)[0], meta.mean, meta.std)
    with torch.inference_mode():
        logits = model(torch.from_numpy(x))[0].numpy()
    out = Postprocessor("linear")(logits, stretch(frame.shape[:2], meta.input_size))
    assert (out == reference_linear(logits, frame.shape[:2])).mean() >= 0.999


def test_point_is_nearest_exact_of_low_res_argmax():
    logits = smooth_logits(11, 90, 120)
    out = postprocess(logits, stretch((540, 960), (360, 480)), "point")
    low = torch.from_numpy(logits.argmax(0).astype(np.uint8))[None, None].float()
    ref = F.interpolate(low, size=(540, 960), mode="nearest-exact")[0, 0].byte().numpy()
    assert (out == ref).all()


def test_labels_output_is_upsampled_by_point():
    labels = np.arange(12, dtype=np.int64).reshape(3, 4) % 11
    out = postprocess(labels, stretch((6, 8), (3, 4)), "linear")
    assert (out == np.kron(labels, np.ones((2, 2), np.int64))).all()


def _dense_linear(logits, geom):
    """Reference for any geometry: all-class bilinear at every frame pixel, float64."""
    from drivesegrt.infer.postprocess import _tables
    (y0, y1, ly, _), (x0, x1, lx, _) = _tables(geom, logits.shape[1:])
    l64 = logits.astype(np.float64)
    ly, lx = ly[:, None].astype(np.float64), lx[None, :].astype(np.float64)
    v = ((1 - ly) * ((1 - lx) * l64[:, y0][:, :, x0] + lx * l64[:, y0][:, :, x1])
         + ly * ((1 - lx) * l64[:, y1][:, :, x0] + lx * l64[:, y1][:, :, x1]))
    return v.argmax(0)


def test_linear_letterbox_matches_dense_reference():
    frame_hw, input_hw = (540, 960), (360, 480)
    geom = Geometry(frame_hw, input_hw, letterbox_box(frame_hw, input_hw))
    logits = smooth_logits(11, 90, 120, seed=3)
    out = postprocess(logits, geom, "linear")
    assert (out == _dense_linear(logits, geom)).mean() >= 0.999


@pytest.mark.parametrize("filter_mode", ["linear", "point"])
def test_letterbox_maps_content_back_onto_the_frame(filter_mode):
    """An 'engine' that labels the letterboxed input by color: the frame's left half is
    class 1, right half class 2, padding class 0. Back at frame size there must be no
    padding class and the halves must line up (up to the 1/4-res boundary). With ``linear``
    the outermost rows blend with the padding's logits (within half a low-res cell = 10 frame
    rows here), exactly as interpolating the full input and cropping would."""
    frame = np.zeros((320, 800, 3), np.uint8)   # content 64x160 at top 48: cell-aligned
    frame[:, 400:] = 255
    boxed, geom = resize(frame, (160, 160), "letterbox", pad_bgr=(128, 128, 128))
    onehot = np.stack([(boxed[..., 0] == 128), (boxed[..., 0] < 100), (boxed[..., 0] > 200)])
    logits = F.avg_pool2d(torch.from_numpy(onehot.astype(np.float32))[None], 4)[0].numpy()
    out = postprocess(logits, geom, filter_mode)
    assert out.shape == (320, 800)
    inner = out[10:-10] if filter_mode == "linear" else out
    assert (inner != 0).all()
    assert (inner[:, :390] == 1).all() and (inner[:, 410:] == 2).all()


def test_remap_applies_to_both_paths():
    logits = smooth_logits(11, 90, 120, seed=5)
    lut, target = remap_table(CAMVID11, "driving5")
    geom = stretch((540, 960), (360, 480))
    for mode in ("linear", "point"):
        plain = postprocess(logits, geom, mode)
        assert (postprocess(logits, geom, mode, lut) == lut[plain]).all()
    assert target.name == "driving5"


def test_labels_point_keeps_dtype_uint8():
    out = labels_point(np.zeros((3, 4), np.int32), stretch((7, 9), (3, 4)))
    assert out.dtype == np.uint8 and out.shape == (7, 9)


def test_bad_filter_and_shape():
    with pytest.raises(ValueError, match="allowed: linear, point"):
        Postprocessor("bicubic")
    with pytest.raises(ValueError, match="engine output must be"):
        postprocess(np.zeros((1, 2, 3, 4), np.float32), stretch((8, 8), (4, 4)))
