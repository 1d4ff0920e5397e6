"""Overlay: palette colors blended over the frame, a legend and a HUD (FPS, per-stage ms).

Colorizing is three single-channel lookup tables (cv2.LUT of the label map per color channel,
merged): cv2.LUT with a 3-channel table has no SIMD path and costs about twice as much
(benchmarks/RESULTS.md, "CPU work per frame"). The blend is one cv2.addWeighted written into
the color image (no extra copy); the legend is rendered once and pasted.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..labels import palette_lut

_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Short HUD names for the stages (frame.STAGES order).
_HUD_NAMES = {"capture": "cap", "preprocess": "pre", "infer": "inf", "postprocess": "post",
              "figures": "fig", "overlay": "ovl", "write": "wr"}


def colorize(labels: np.ndarray, lut3: np.ndarray) -> np.ndarray:
    """(H, W) uint8 ids -> (H, W, 3) uint8 BGR via a (256, 1, 3) table."""
    return paint(labels, channel_luts(lut3))


def paint(labels: np.ndarray, luts: tuple[np.ndarray, ...]) -> np.ndarray:
    """(H, W) uint8 ids -> (H, W, 3) uint8, one (256,) table per output channel."""
    return cv2.merge([cv2.LUT(labels, lut) for lut in luts])


def channel_luts(lut3: np.ndarray) -> tuple[np.ndarray, ...]:
    """(256, 1, 3) table -> three contiguous (256,) uint8 tables, one per channel."""
    return tuple(np.ascontiguousarray(lut3.reshape(256, 3)[:, c]) for c in range(3))


class Overlay:
    """Draws overlays for one run. class_names/palette (RGB) are the Segmenter's (after remap).
    Not thread-safe (keeps a legend cache); one per publish thread."""

    def __init__(self, class_names, palette, alpha: float = 0.5, legend: bool = True,
                 hud: bool = True):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
        self.class_names = tuple(class_names)
        self.alpha = float(alpha)
        self.show_legend = legend
        self.show_hud = hud
        self._luts = channel_luts(palette_lut(palette, bgr=True).reshape(256, 1, 3))
        self._palette_bgr = [tuple(int(v) for v in c[::-1]) for c in palette]
        self._legend: dict[int, np.ndarray] = {}          # frame height -> rendered legend

    def __call__(self, frame: np.ndarray, labels: np.ndarray,
                 hud: dict | None = None, blended: np.ndarray | None = None) -> np.ndarray:
        """frame (H,W,3) uint8 BGR, labels (H,W) uint8 -> new (H,W,3) uint8 BGR overlay.

        hud: optional {"fps": float, "stages_ms": {stage: ms}} drawn at the bottom.
        blended: the palette blend already made (on the GPU, by CudaSegmenter); only the
        legend and HUD are drawn on it (in place).
        """
        if blended is not None:
            out = blended
        else:
            color = paint(labels, self._luts)
            out = cv2.addWeighted(frame, 1.0 - self.alpha, color, self.alpha, 0.0, dst=color)
        if self.show_legend:
            self._paste_legend(out)
        if self.show_hud and hud is not None:
            draw_hud(out, hud)
        return out

    def _scale(self, height: int) -> float:
        return max(0.35, min(1.0, height / 900))

    def _render_legend(self, height: int) -> np.ndarray:
        s = self._scale(height)
        row = int(22 * s) + 4
        (tw, _), _ = cv2.getTextSize(max(self.class_names, key=len, default=""), _FONT, 0.5 * s, 1)
        img = np.full((row * len(self.class_names) + 6, tw + row + 12, 3), 30, np.uint8)
        for i, (name, color) in enumerate(zip(self.class_names, self._palette_bgr)):
            y = 4 + i * row
            cv2.rectangle(img, (4, y), (4 + row - 6, y + row - 6), color, -1)
            cv2.putText(img, name, (row + 4, y + row - 9), _FONT, 0.5 * s, (235, 235, 235), 1,
                        cv2.LINE_AA)
        return img

    def _paste_legend(self, out: np.ndarray) -> None:
        h, w = out.shape[:2]
        legend = self._legend.get(h)
        if legend is None:
            legend = self._legend[h] = self._render_legend(h)
        lh, lw = min(legend.shape[0], h), min(legend.shape[1], w)
        out[:lh, :lw] = legend[:lh, :lw]


def hud_text(hud: dict) -> str:
    parts = [f"{hud.get('fps', 0.0):5.1f} FPS"]
    for stage, ms in hud.get("stages_ms", {}).items():
        parts.append(f"{_HUD_NAMES.get(stage, stage)} {ms:.1f}")
    return "  ".join(parts) + " ms"


def draw_hud(out: np.ndarray, hud: dict) -> None:
    """FPS and per-stage ms on a dark strip at the bottom of ``out`` (in place)."""
    h, w = out.shape[:2]
    s = max(0.35, min(1.0, h / 900))
    text = hud_text(hud)
    (tw, th), base = cv2.getTextSize(text, _FONT, 0.55 * s, 1)
    y0 = h - th - base - 8
    out[max(0, y0):, : min(w, tw + 12)] //= 3
    cv2.putText(out, text, (6, h - base - 4), _FONT, 0.55 * s, (255, 255, 255), 1, cv2.LINE_AA)
