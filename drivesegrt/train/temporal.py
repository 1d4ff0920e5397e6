"""Temporal stability of a segmentation on a labelled frame sequence: TC and flicker rate.

For each pair of consecutive frames (t, t+1), optical flow from frame t to frame t+1 (OpenCV's
DIS, on the grey images) maps every pixel x of frame t to where it is in frame t+1; sampling
frame t+1's maps there (nearest) "warps" them onto frame t. Pixels whose flow leaves the image
are not scored.

* **TC** (temporal consistency, Liu et al., "Efficient Semantic Video Segmentation with
  Per-frame Inference", ECCV 2020): the mean IoU between the prediction of frame t and the
  warped prediction of frame t+1, averaged over the pairs. 100 % = the prediction moves
  exactly with the image.
* **flicker rate**: among the pixels whose ground truth is the same at t and, warped, at t+1
  (and not void), the share whose predicted class differs between the prediction of t and
  the warped prediction of t+1; pooled over the sequence. A pixel of road that turns sidewalk
  for one frame counts here; a car that moves does not (the flow follows it, and where the
  flow is wrong the ground truth changes too and the pixel is left out).

Consecutive frames belong to one sequence when their file stems agree up to the trailing
frame number (``0016E5_07959`` -> ``0016E5_``) and their sizes agree; a new sequence starts
no pair.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import cv2
import numpy as np

from .metrics import confusion_matrix, scores

_INVALID = 255        # label value of pixels the flow leaves the image for


@dataclass(frozen=True)
class Warp:
    """Where each pixel of frame t is in frame t+1."""
    map_x: np.ndarray            # (H, W) float32 x in frame t+1
    map_y: np.ndarray            # (H, W) float32 y in frame t+1
    valid: np.ndarray            # (H, W) bool: inside frame t+1


class FlowWarp:
    """DIS optical flow between consecutive frames (the MEDIUM preset: metrics are computed
    once, quality over speed)."""

    def __init__(self):
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def __call__(self, image_t: np.ndarray, image_t1: np.ndarray) -> Warp:
        """(H, W, 3) uint8 BGR frames t and t+1 -> the Warp of frame t+1 onto frame t."""
        gray = [cv2.cvtColor(im, cv2.COLOR_BGR2GRAY) for im in (image_t, image_t1)]
        flow = self._dis.calc(gray[0], gray[1], None)      # (H, W, 2) dx, dy: t -> t+1
        return warp_from_flow(flow)


def warp_from_flow(flow: np.ndarray) -> Warp:
    """(H, W, 2) float32 flow from frame t to frame t+1 -> the Warp it defines."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    mx, my = xs + flow[..., 0], ys + flow[..., 1]
    # Nearest sampling rounds: positions up to half a pixel outside still land on the image.
    valid = (mx > -0.5) & (mx < w - 0.5) & (my > -0.5) & (my < h - 0.5)
    return Warp(mx, my, valid)


def warp_labels(labels: np.ndarray, warp: Warp) -> np.ndarray:
    """(H, W) uint8 map of frame t+1 -> (H, W) uint8 on frame t (nearest); 255 off-image."""
    return cv2.remap(labels, warp.map_x, warp.map_y, cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=_INVALID)


def temporal_consistency(pred_t: np.ndarray, warped_t1: np.ndarray, valid: np.ndarray,
                         num_classes: int) -> float:
    """mIoU (0..1) between frame t's prediction and frame t+1's warped onto it, over the
    valid pixels and the classes present in either."""
    cm = confusion_matrix(warped_t1[valid], pred_t[valid], num_classes)
    return scores(cm)["miou"]


def flicker_counts(pred_t: np.ndarray, warped_pred_t1: np.ndarray, gt_t: np.ndarray,
                   warped_gt_t1: np.ndarray, valid: np.ndarray,
                   num_classes: int) -> tuple[int, int]:
    """(stable pixels, of which flickering): stable = valid, ground truth a class (not void)
    and unchanged through the warp; flickering = predicted class changed."""
    stable = valid & (gt_t == warped_gt_t1) & (gt_t < num_classes)
    changed = stable & (pred_t != warped_pred_t1)
    return int(np.count_nonzero(stable)), int(np.count_nonzero(changed))


def sequence_key(stem: str) -> str:
    """The part of a file stem that names its sequence: the stem without its trailing digits."""
    return re.sub(r"\d+$", "", stem)


@dataclass
class TemporalScores:
    """Running TC and flicker of one prediction stream over consecutive pairs."""
    num_classes: int
    tc: list[float] = field(default_factory=list)          # per pair, 0..1
    flicker: list[float | None] = field(default_factory=list)   # per pair (None: no stable px)
    stable: int = 0
    changed: int = 0

    def add_pair(self, pred_t, pred_t1, gt_t, warped_gt_t1, warp: Warp) -> None:
        """Frame t's prediction and ground truth, frame t+1's prediction, its ground truth
        already warped onto t (shared by every stream), and the warp."""
        warped = warp_labels(pred_t1, warp)
        valid = warp.valid & (warped != _INVALID)      # rounding at the border agrees
        self.tc.append(temporal_consistency(pred_t, warped, valid, self.num_classes))
        stable, changed = flicker_counts(pred_t, warped, gt_t, warped_gt_t1, valid,
                                         self.num_classes)
        self.stable += stable
        self.changed += changed
        self.flicker.append(changed / stable if stable else None)

    def summary(self) -> dict:
        """tc (mean over pairs), flicker (pooled over stable pixels), both 0..1; pairs."""
        return {"tc": float(np.mean(self.tc)) if self.tc else None,
                "flicker": self.changed / self.stable if self.stable else None,
                "pairs": len(self.tc), "stable_pixels": self.stable}
