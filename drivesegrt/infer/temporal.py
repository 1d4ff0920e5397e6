"""Temporal smoothing of class scores at model resolution, and when it must restart.

    spec = parse_temporal("ema:0.5:flow")      # None for "none"
    smooth = TemporalFilter(spec)
    probs, status = smooth(softmax(logits), low_res_gray(frame, geom, logits.shape[1:]), restart)

``ema:ALPHA`` keeps an exponential moving average of the softmax probabilities,
``s_t = ALPHA * p_t + (1 - ALPHA) * s_{t-1}``: ALPHA is the weight of the newest frame (1 = no
smoothing). Probabilities rather than logits: their average is again a distribution, so the
top-class probability stays a confidence. ``ema:ALPHA:flow`` first moves the state along the
motion between the two frames (OpenCV's DIS optical flow on grey thumbnails at the same low
resolution), so a moving car does not leave a trail of car-coloured road behind it; on the
CamVid 0016E5 sequence that is what keeps mIoU while flicker falls (README, "Temporal stability").

The filter restarts (forgets the past) on the first frame, when the resolution changes, when
the caller says the frame does not follow the previous one (:class:`Continuity`: a reconnect
or a run of dropped frames) and on a scene cut: the thumbnails differ by more than
``cut`` grey levels on average.

Runs on the thread that collects results (``Job.result``), in frame order.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..preprocess import Geometry, resize

TEMPORAL_SYNTAX = "none | ema:ALPHA | ema:ALPHA:flow (0 < ALPHA <= 1)"
STATUSES = ("start", "cut", "smoothed")   # what happened to a frame's scores
# DIS preset on the low-res thumbnail: ULTRAFAST, the cheapest. MEDIUM scored a little better
# (a few tenths of a point of mIoU and TC) for about 2-3x the time; both meet the stability
# target (benchmarks/temporal.py, benchmarks/RESULTS.md "Temporal stability").
DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST


@dataclass(frozen=True)
class TemporalSpec:
    alpha: float              # weight of the newest frame, 0 < alpha <= 1
    flow: bool = False        # motion-compensate the state with optical flow
    cut: float = 40.0         # mean absolute grey-level change (0-255) that counts as a cut

    def __str__(self) -> str:
        return f"ema:{self.alpha:g}" + (":flow" if self.flow else "")


def parse_temporal(text: str, cut: float = 40.0) -> TemporalSpec | None:
    """``none`` -> None; ``ema:ALPHA`` / ``ema:ALPHA:flow`` -> TemporalSpec; else ValueError."""
    parts = str(text).strip().lower().split(":")
    if parts == ["none"]:
        return None
    bad = ValueError(f"temporal smoothing {text!r}; expected {TEMPORAL_SYNTAX}")
    if parts[0] != "ema" or len(parts) not in (2, 3) or parts[2:] not in ([], ["flow"]):
        raise bad
    try:
        alpha = float(parts[1])
    except ValueError:
        raise bad from None
    if not 0.0 < alpha <= 1.0:
        raise bad
    if not cut > 0:
        raise ValueError(f"scene-cut threshold must be > 0 grey levels, got {cut}")
    return TemporalSpec(alpha, len(parts) == 3, float(cut))


def softmax(logits: np.ndarray) -> np.ndarray:
    """(C, h, w) logits -> (C, h, w) float32 probabilities (a new array)."""
    p = logits.astype(np.float32)                       # a copy: engines may reuse outputs
    p -= p.max(0, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(0, keepdims=True)
    return p


def low_res_gray(frame: np.ndarray, geom: Geometry, low_hw: tuple[int, int],
                 resize_mode: str = "stretch") -> np.ndarray:
    """(H, W, 3) uint8 BGR -> (h, w) uint8 grey thumbnail on the model output's grid (each
    low-res pixel the area average of the input pixels it covers), for flow and cut checks."""
    h, w = low_hw
    if geom.content != (0, 0, *geom.input_hw):          # letterbox: through the model input
        frame, _ = resize(frame, geom.input_hw, resize_mode)
    small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)


class TemporalFilter:
    """EMA of (C, h, w) class probabilities over consecutive frames (see the module doc).
    One per stream; call it in frame order. dis_preset: OpenCV's DIS preset for ``flow``."""

    def __init__(self, spec: TemporalSpec, dis_preset: int = DIS_PRESET):
        self.spec = spec
        self._state: np.ndarray | None = None      # (C, h, w) float32
        self._gray: np.ndarray | None = None       # (h, w) uint8 thumbnail of the last frame
        self._dis = cv2.DISOpticalFlow_create(dis_preset) if spec.flow else None
        self._grid: np.ndarray | None = None       # (h, w, 2) float32 pixel coordinates

    def reset(self) -> None:
        self._state = self._gray = None

    def __call__(self, probs: np.ndarray, gray: np.ndarray,
                 restart: bool = False) -> tuple[np.ndarray, str]:
        """probs (C, h, w) float32 of the newest frame, gray its (h, w) uint8 thumbnail ->
        (smoothed (C, h, w) float32, status in STATUSES). The returned array is the filter's
        state: read it before the next call."""
        if gray.shape != probs.shape[1:]:
            raise ValueError(f"thumbnail {gray.shape} does not match the scores "
                             f"{probs.shape[1:]}")
        if restart or self._state is None or self._state.shape != probs.shape:
            status = "start"
        elif cv2.norm(gray, self._gray, cv2.NORM_L1) / gray.size > self.spec.cut:
            status = "cut"
        else:
            status = "smoothed"
        if status != "smoothed":
            self._state = np.array(probs, np.float32)
        else:
            past = self._warp(self._state, gray) if self._dis is not None else self._state
            a = np.float32(self.spec.alpha)
            np.multiply(past, 1 - a, out=self._state)
            self._state += a * probs
        self._gray = gray
        return self._state, status

    def _warp(self, state: np.ndarray, gray: np.ndarray) -> np.ndarray:
        """The state moved onto the newest frame: each pixel takes the state where the flow
        says it was in the previous frame (bilinear, edges replicated)."""
        flow = self._dis.calc(gray, self._gray, None)      # (h, w, 2): new pixel -> old position
        h, w = gray.shape
        if self._grid is None or self._grid.shape[:2] != (h, w):
            ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
            self._grid = np.dstack([xs, ys])
        m1, m2 = cv2.convertMaps(self._grid + flow, None, cv2.CV_16SC2)   # fixed point: faster
        return np.stack([cv2.remap(plane, m1, m2, cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE) for plane in state])


class Continuity:
    """Which frames do not follow the one before: a jump in frame index worth more than
    ``max_gap_s`` of source time (live sources keep the numbers of the frames they drop) or a
    reconnect. The pipeline asks it for every frame, in capture order."""

    def __init__(self, fps: float, max_gap_s: float):
        if not max_gap_s > 0:
            raise ValueError(f"max gap must be > 0 seconds, got {max_gap_s}")
        self.max_frames = max(1, int(round(fps * max_gap_s)))
        self._last: tuple[int, int] | None = None          # (index, reconnects)

    def breaks(self, index: int, reconnects: int) -> bool:
        """True when frame ``index`` does not continue the previous one (the first does)."""
        last, self._last = self._last, (index, reconnects)
        if last is None:
            return False
        return index - last[0] > self.max_frames or reconnects != last[1]
