"""uint8 HxWx3 BGR frames -> model input (resize, BGR->RGB, mean/std, NCHW float32).

numpy arrays and cv2; the CUDA path (infer/cuda/preprocess.py) does the same on the device.

``resize`` fits a frame into the model's input size, either by stretching or by letterboxing
(aspect kept, padded); it returns a :class:`Geometry` that postprocess uses to map the model's
output back onto the frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

RESIZE_MODES = ("stretch", "letterbox")
INPUT_FORMATS = ("float_nchw", "uint8_nhwc_bgr")


@dataclass(frozen=True)
class Geometry:
    """Where a frame sits inside the model input: the content box (top, left, height, width)
    in input pixels. Stretch: the whole input. Letterbox: a centred box, padding around it."""
    frame_hw: tuple[int, int]
    input_hw: tuple[int, int]
    content: tuple[int, int, int, int]     # top, left, height, width (input pixels)


def letterbox_box(frame_hw: tuple[int, int], input_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Centred (top, left, h, w) box of the frame scaled to fit ``input_hw``, aspect kept."""
    (fh, fw), (ih, iw) = frame_hw, input_hw
    s = min(ih / fh, iw / fw)
    h, w = min(ih, max(1, round(fh * s))), min(iw, max(1, round(fw * s)))
    return (ih - h) // 2, (iw - w) // 2, h, w


def resize(frame: np.ndarray, input_hw: tuple[int, int], mode: str = "stretch",
           pad_bgr=(0, 0, 0)) -> tuple[np.ndarray, Geometry]:
    """(H,W,3) uint8 -> ((ih,iw,3) uint8, Geometry). No copy when the frame already fits."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r}; allowed: {', '.join(RESIZE_MODES)}")
    fh, fw = frame.shape[:2]
    ih, iw = input_hw
    if mode == "stretch" or (fh, fw) == (ih, iw):
        geom = Geometry((fh, fw), (ih, iw), (0, 0, ih, iw))
        if (fh, fw) == (ih, iw):
            return frame, geom
        # INTER_AREA would be the textbook choice for shrinking, but INTER_LINEAR is ~4x
        # faster and is what the models are trained with (data/transforms.py).
        return cv2.resize(frame, (iw, ih), interpolation=cv2.INTER_LINEAR), geom
    top, left, h, w = letterbox_box((fh, fw), (ih, iw))
    out = np.empty((ih, iw, 3), np.uint8)
    out[:] = np.asarray(pad_bgr, np.uint8)
    cv2.resize(frame, (w, h), dst=out[top:top + h, left:left + w],
               interpolation=cv2.INTER_LINEAR)
    return out, Geometry((fh, fw), (ih, iw), (top, left, h, w))


def pad_color(mean) -> tuple[int, int, int]:
    """BGR uint8 color that normalizes to ~0 (the dataset mean): letterbox padding."""
    r, g, b = (int(round(255 * m)) for m in mean)
    return b, g, r


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
    """(N,H,W,3) or (H,W,3) uint8 BGR -> (N,3,H,W) float32 normalized RGB."""
    if images.ndim == 3:
        images = images[None]
    scale = 1.0 / (255.0 * np.asarray(std, dtype=np.float32))           # RGB order
    shift = np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)
    rgb = images[..., ::-1]                                              # (N,H,W,3) RGB view
    out = np.empty((images.shape[0], 3, images.shape[1], images.shape[2]), np.float32)
    for c in range(3):
        np.multiply(rgb[..., c], scale[c], out=out[:, c], casting="unsafe")
        out[:, c] -= shift[c]
    return out


def preprocess(frame: np.ndarray, input_hw: tuple[int, int], mean, std,
               mode: str = "stretch", input_format: str = "float_nchw"):
    """One frame -> (batch of 1 in the engine's ``input_format``, Geometry).

    float_nchw: (1,3,ih,iw) float32 normalized RGB. uint8_nhwc_bgr: (1,ih,iw,3) uint8 (the
    graph normalizes). The one preprocessing of drivesegrt: run, eval, calibration and training
    all call it (the CUDA path is checked against it).
    """
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input format {input_format!r}; allowed: {', '.join(INPUT_FORMATS)}")
    resized, geom = resize(frame, input_hw, mode, pad_color(mean))
    if input_format == "uint8_nhwc_bgr":
        return np.ascontiguousarray(resized)[None], geom
    return normalize(resized, mean, std), geom
