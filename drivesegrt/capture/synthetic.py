"""``synthetic:``: generated driving-like frames, recorded or paced live."""
from __future__ import annotations

import math
import time
from urllib.parse import parse_qsl

import cv2
import numpy as np

from .base import FPS_RANGE, Source

MAX_SIDE = 8192          # w and h: a frame must fit in memory many times over (queues, sinks)


class SyntheticSource(Source):
    """Generated driving-like frames: sky, buildings, a road in perspective with moving lane
    dashes, poles and a car drifting across. Recorded by default (every frame, as fast as
    asked); ``live=1`` paces frames in real time at ``fps`` like a camera."""

    kind = "synthetic"
    OPTIONS = {"w": 960, "h": 540, "fps": 30.0, "frames": 300, "live": 0, "seed": 0}
    # Allowed values (inclusive; None: no upper bound). frames=0 is endless.
    RANGES = {"w": (32, MAX_SIDE), "h": (32, MAX_SIDE), "fps": FPS_RANGE, "frames": (0, None),
              "live": (0, 1), "seed": (0, None)}

    def __init__(self, spec: str):
        super().__init__(spec)
        opts = dict(self.OPTIONS)
        query = spec.split("?", 1)[1] if "?" in spec else ""
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key not in opts:
                raise ValueError(f"synthetic: unknown option {key!r}; allowed: {', '.join(opts)}")
            try:
                opts[key] = type(self.OPTIONS[key])(float(value) if key == "fps" else int(value))
            except ValueError:
                kind = "a number" if key == "fps" else "an integer"
                raise ValueError(f"synthetic: option {key}={value!r} is not {kind}") from None
        for key, (lo, hi) in self.RANGES.items():
            if not (lo <= opts[key] and (hi is None or opts[key] <= hi)):   # False for nan too
                raise ValueError(f"synthetic: option {key}={opts[key]} is out of range "
                                 f"({lo}..{'' if hi is None else hi})")
        self.size = (opts["w"], opts["h"])
        self.fps = opts["fps"]
        self.live = bool(opts["live"])
        self.frame_count = opts["frames"] or None
        self._rng = np.random.default_rng(opts["seed"])
        self._background = self._draw_background()
        self._t_next = None

    def _draw_background(self) -> np.ndarray:
        w, h = self.size
        img = np.empty((h, w, 3), np.uint8)
        horizon = int(h * 0.45)
        sky = np.linspace(235, 170, horizon, dtype=np.float32)
        img[:horizon] = np.stack([sky, sky * 0.85, sky * 0.6], -1).astype(np.uint8)[:, None]  # BGR
        img[horizon:] = (70, 110, 80)                                  # verge (BGR green-grey)
        x = 0
        while x < w:                                                   # buildings
            bw = int(self._rng.integers(w // 16, w // 6))
            bh = int(self._rng.integers(h // 10, int(h * 0.3)))
            shade = int(self._rng.integers(70, 150))
            cv2.rectangle(img, (x, horizon - bh), (x + bw, horizon), (shade, shade, shade + 10), -1)
            x += bw + int(self._rng.integers(2, w // 40 + 3))
        cx = w // 2
        sidewalk = np.array([[cx - w // 30, horizon], [cx + w // 30, horizon],
                             [w + w // 3, h], [-w // 3, h]], np.int32)
        road = np.array([[cx - w // 50, horizon], [cx + w // 50, horizon],
                         [w + w // 8, h], [-w // 8, h]], np.int32)
        cv2.fillPoly(img, [sidewalk], (150, 150, 160))
        cv2.fillPoly(img, [road], (90, 85, 85))
        self._horizon = horizon
        return img

    def _road_x(self, y: float, side: float) -> float:
        """x of a line on the road at row y; side in [-1, 1] across the road at the bottom."""
        w, h = self.size
        t = (y - self._horizon) / (h - self._horizon)
        return w / 2 + side * t * (w / 2 + w / 8)

    def _next(self):
        n = self.frames_read
        if self.frame_count is not None and n >= self.frame_count:
            return None
        if self.live:                      # pace like a camera at self.fps
            t = time.perf_counter()
            self._t_next = t if self._t_next is None else max(self._t_next, t - 1.0)
            if self._t_next > t:
                time.sleep(self._t_next - t)
            self._t_next += 1.0 / self.fps
        w, h = self.size
        img = self._background.copy()
        hz = self._horizon
        phase = (n * 0.04) % 1.0
        for k in range(8):                  # lane dashes moving towards the viewer
            t0 = ((k + phase) / 8) ** 2
            t1 = min(1.0, ((k + phase + 0.45) / 8) ** 2)
            y0, y1 = hz + t0 * (h - hz), hz + t1 * (h - hz)
            for side in (-0.35, 0.35):
                pts = np.array([[self._road_x(y0, side) - 1 - 6 * t0, y0],
                                [self._road_x(y0, side) + 1 + 6 * t0, y0],
                                [self._road_x(y1, side) + 1 + 6 * t1, y1],
                                [self._road_x(y1, side) - 1 - 6 * t1, y1]], np.int32)
                cv2.fillPoly(img, [pts], (230, 230, 230))
        for k in range(3):                  # poles passing by on both sides
            t = ((k + phase) / 3) ** 2
            y = hz + t * (h - hz)
            for side in (-1.15, 1.15):
                x = int(self._road_x(y, side))
                ph = int(10 + t * h * 0.5)
                cv2.rectangle(img, (x - 1 - int(4 * t), int(y) - ph), (x + 1 + int(4 * t), int(y)),
                              (60, 60, 60), -1)
        cx = int(w / 2 + w * 0.18 * math.sin(n * 0.03))        # a car drifting across lanes
        cy, cw, ch = int(hz + (h - hz) * 0.35), w // 9, h // 12
        cv2.rectangle(img, (cx - cw // 2, cy - ch), (cx + cw // 2, cy), (40, 40, 170), -1)
        cv2.rectangle(img, (cx - cw // 3, cy - ch - ch // 2), (cx + cw // 3, cy - ch),
                      (30, 30, 120), -1)
        return img

