"""drivesegrt: real-time semantic segmentation for driving video.

    import drivesegrt as ds
    seg = ds.load_segmenter()                 # bundled default; or a name ("camvid") or a path;
                                              # backend=, device=
    labels = seg(frame_bgr)                   # (H, W) uint8 class ids at the frame's size
    vis = ds.overlay(frame_bgr, labels, seg)  # palette + legend, like run's overlay
    summary = ds.run(source="drive.mp4", output="runs/x")   # the CLI's run; summary.json's dict

One frame's journey (the package tree follows it): capture -> infer (preprocess, engine,
postprocess) -> publish (overlay, sinks); ``pipeline`` runs the three on threads.
"""
from __future__ import annotations

import numpy as np

__version__ = "0.1.0"

from .engines import BACKENDS, DEFAULT_BACKEND  # noqa: E402
from .infer.build import BUNDLED, DEFAULT_MODEL, load_segmenter  # noqa: E402
from .infer.segmenter import Segmented, Segmenter  # noqa: E402
from .publish.overlay import Overlay  # noqa: E402
from .run import run  # noqa: E402

__all__ = ["__version__", "load_segmenter", "overlay", "run", "Segmenter", "Segmented",
           "Overlay", "BACKENDS", "DEFAULT_BACKEND", "BUNDLED", "DEFAULT_MODEL"]


def overlay(frame: np.ndarray, labels: np.ndarray, seg: Segmenter, alpha: float = 0.5,
            legend: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 BGR frame + (H, W) uint8 class ids from ``seg`` -> a new (H, W, 3) uint8
    BGR image: ``seg``'s palette blended at ``alpha``, with its class legend, as ``run`` draws
    it (without the FPS/latency line)."""
    return Overlay(seg.class_names, seg.palette, alpha, legend, hud=False)(frame, labels)
