"""Per-frame driving figures for frames.jsonl, from the class map a frame was given.

    figures = DrivingFigures(seg.class_names, coverage=True, drivable=True,
                             rois={"ego_lane": (0.35, 0.55, 0.65, 1.0)})
    rec = figures.measure(labels, confidence)     # JSON-ready dict, merged into the frame's line
    figures.draw(overlay, rec)                    # outline the drivable area (draw=True)

``coverage``    share of the frame's pixels per class (all classes, sums to 1).
``drivable``    the drivable classes (``road``) connected to the bottom centre of the image, the
                ego vehicle's side: ``share`` of the frame, ``polygon`` (its outer outline,
                OpenCV contours simplified with approxPolyDP, in source pixels [x, y]) and
                ``free_ahead``: how far it reaches up the centre band without interruption, a
                fraction of the image height (the median over the band's columns), a
                "free space ahead" proxy.
``roi``         per named region (fractions x0, y0, x1, y1 of the frame), the share of each
                class (sums to 1 per region).
``confidence``  ``mean`` top-class probability and ``low_share``, the share of pixels below
                the low-confidence threshold (when the segmenter made a confidence map).

All shares in 0..1, rounded to 5 decimals. Work is at the source resolution, on uint8 maps.
"""
from __future__ import annotations

import cv2
import numpy as np

_ROUND = 5
_SEED_ROWS = 0.1          # the bottom 10 % of the centre band: where the ego vehicle stands
_OUTLINE_BGR = (0, 255, 255)


def check_roi(name: str, box) -> tuple[float, float, float, float]:
    """A region ``x0, y0, x1, y1`` (a sequence, or the text "x0,y0,x1,y1") in fractions of
    the frame; ValueError naming it if bad."""
    try:
        x0, y0, x1, y1 = (float(v) for v in (box.split(",") if isinstance(box, str) else box))
    except (TypeError, ValueError):
        raise ValueError(f"region {name!r}: expected four numbers x0,y0,x1,y1, got {box!r}") \
            from None
    if not name or not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ValueError(f"region {name!r}: {x0:g},{y0:g},{x1:g},{y1:g} must be fractions of "
                         f"the frame with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    return x0, y0, x1, y1


def parse_roi(text: str) -> tuple[str, tuple[float, float, float, float]]:
    """``NAME=x0,y0,x1,y1`` (fractions of the frame) -> (name, box); ValueError naming it."""
    name, sep, box = str(text).partition("=")
    if not sep or not name.strip():
        raise ValueError(f"region {text!r}: expected NAME=x0,y0,x1,y1 (fractions of the frame)")
    return name.strip(), check_roi(name.strip(), box)


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) pixel count per class id of a uint8 map (a histogram: faster than
    bincount on large maps)."""
    hist = cv2.calcHist([labels], [0], None, [256], [0, 256]).ravel()
    return hist[:num_classes]


def _shares(labels: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    counts = class_counts(np.ascontiguousarray(labels), len(names))
    total = max(1, labels.size)
    return {n: round(float(c) / total, _ROUND) for n, c in zip(names, counts)}


def drivable_region(labels: np.ndarray, drivable_lut: np.ndarray, center_band: float
                    ) -> np.ndarray:
    """(H, W) uint8 class ids -> (H, W) uint8 mask (1 inside) of the drivable component that
    covers most of the seed: the bottom rows of the centre band; all zeros if it holds none."""
    h, w = labels.shape
    mask = cv2.LUT(labels, drivable_lut)                   # (H, W) 1 where drivable
    n, comp = cv2.connectedComponents(mask, connectivity=8)
    x0, x1 = _band(w, center_band)
    seed = comp[h - max(1, int(round(h * _SEED_ROWS))):, x0:x1]
    votes = np.bincount(seed.ravel(), minlength=n)
    votes[0] = 0                                           # background
    if n < 2 or votes.max() == 0:
        return np.zeros_like(mask)
    return (comp == int(votes.argmax())).astype(np.uint8)


def _band(w: int, fraction: float) -> tuple[int, int]:
    half = max(1, int(round(w * fraction / 2)))
    return max(0, w // 2 - half), min(w, w // 2 + half)


def outline(region: np.ndarray, tolerance_px: float) -> list[list[int]]:
    """Outer outline of a (H, W) uint8 mask as a simplified closed polygon [[x, y], ...]
    (the largest outer contour; [] when empty)."""
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    largest = max(contours, key=cv2.contourArea)
    poly = cv2.approxPolyDP(largest, tolerance_px, True)    # (N, 1, 2) int32
    return poly.reshape(-1, 2).tolist()


def free_ahead(region: np.ndarray, center_band: float) -> float:
    """Median over the centre band's columns of the uninterrupted run of ``region`` from the
    bottom row up, as a fraction of the height."""
    h, w = region.shape
    x0, x1 = _band(w, center_band)
    up = region[::-1, x0:x1] != 0                          # row 0 = bottom
    run = np.where(up.all(0), h, up.argmin(0))             # first non-drivable row per column
    return round(float(np.median(run)) / h, _ROUND)


class DrivingFigures:
    """The figures chosen for a run; ``measure`` once per frame on the publish thread.

    class_names: the segmenter's (after remap). drivable_classes: class names (any case) that
    count as drivable. center_band: width fraction of the centre band. polygon_tolerance:
    approxPolyDP tolerance as a fraction of the image diagonal. rois: {name: (x0, y0, x1, y1)}
    fractions. confidence_low: threshold (0..1) of ``low_share``. draw: outline the drivable
    area on the overlay.
    """

    def __init__(self, class_names, coverage: bool = True, drivable: bool = True,
                 drivable_classes=("road",), center_band: float = 0.1,
                 polygon_tolerance: float = 0.005, rois: dict | None = None,
                 confidence_low: float = 0.5, draw: bool = False):
        self.class_names = tuple(class_names)
        self.coverage, self.drivable, self.draws = bool(coverage), bool(drivable), bool(draw)
        if draw and not drivable:
            raise ValueError("outlining the drivable area needs the drivable figure "
                             "(figures.drivable)")
        if not 0.0 < center_band <= 1.0:
            raise ValueError(f"centre band must be a fraction of the width in (0, 1], got "
                             f"{center_band}")
        if not 0.0 <= confidence_low <= 1.0:
            raise ValueError(f"low-confidence threshold must be in [0, 1], got {confidence_low}")
        self.center_band, self.polygon_tolerance = float(center_band), float(polygon_tolerance)
        self.rois = {name: check_roi(name, box) for name, box in (rois or {}).items()}
        self.confidence_low = float(confidence_low)
        self._lut = np.zeros(256, np.uint8)
        if drivable:
            lower = {n.lower(): i for i, n in enumerate(self.class_names)}
            ids = [lower[c.lower()] for c in drivable_classes if c.lower() in lower]
            if not ids:
                raise ValueError(f"no drivable class {', '.join(map(str, drivable_classes))} "
                                 f"among the model's classes ({', '.join(self.class_names)}); "
                                 f"name one in figures.drivable_classes or turn "
                                 f"figures.drivable off")
            self._lut[ids] = 1

    def measure(self, labels: np.ndarray, confidence: np.ndarray | None = None) -> dict:
        """(H, W) uint8 class ids (+ optional (H, W) uint8 confidence) -> the frame's figures."""
        out: dict = {}
        if self.coverage:
            out["coverage"] = _shares(labels, self.class_names)
        if self.drivable:
            region = drivable_region(labels, self._lut, self.center_band)
            h, w = labels.shape
            out["drivable"] = {
                "share": round(float(np.count_nonzero(region)) / region.size, _ROUND),
                "free_ahead": free_ahead(region, self.center_band),
                "polygon": outline(region, self.polygon_tolerance * float(np.hypot(h, w)))}
        if self.rois:
            out["roi"] = {name: _shares(_crop(labels, box), self.class_names)
                          for name, box in self.rois.items()}
        if confidence is not None:
            low = int(np.ceil(self.confidence_low * 255))
            out["confidence"] = {
                "mean": round(float(confidence.mean()) / 255, _ROUND),
                "low_share": round(float(np.count_nonzero(confidence < low)) / confidence.size,
                                   _ROUND)}
        return out

    def draw(self, overlay: np.ndarray, figures: dict) -> None:
        """Outline the drivable area of ``figures`` on ``overlay`` (in place) when drawing."""
        polygon = figures.get("drivable", {}).get("polygon") if self.draws else None
        if polygon:
            h = overlay.shape[0]
            cv2.polylines(overlay, [np.asarray(polygon, np.int32).reshape(-1, 1, 2)], True,
                          _OUTLINE_BGR, max(1, h // 270), cv2.LINE_AA)


def _crop(labels: np.ndarray, box) -> np.ndarray:
    """The part of ``labels`` inside fractional ``box`` (at least one pixel)."""
    h, w = labels.shape
    x0, y0, x1, y1 = box
    c0, r0 = min(w - 1, int(round(x0 * w))), min(h - 1, int(round(y0 * h)))
    c1, r1 = max(c0 + 1, int(round(x1 * w))), max(r0 + 1, int(round(y1 * h)))
    return labels[r0:r1, c0:c1]
