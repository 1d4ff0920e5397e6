"""The naive baseline: the sequential loop a tutorial would write, same model and outputs.

cv2 read -> torch eager -> bilinear upsample of all logits to frame size -> argmax -> blend
-> cv2 write, one frame at a time, nothing overlapped.
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..models.checkpoint import load_model


def naive_loop(checkpoint: str, video: str, out_path: str, max_frames: int | None = None,
               alpha: float = 0.5) -> dict:
    model, meta = load_model(checkpoint)
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video: {video}")
    fps_in = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (w, h))
    palette = np.array([c[::-1] for c in meta.palette], dtype=np.uint8)  # BGR
    mean = torch.tensor(meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(meta.std).view(1, 3, 1, 1)
    in_h, in_w = meta.input_size
    times = []
    t_start = time.perf_counter()
    while max_frames is None or len(times) < max_frames:
        t0 = time.perf_counter()
        ok, frame = cap.read()
        if not ok:
            break
        x = cv2.cvtColor(cv2.resize(frame, (in_w, in_h)), cv2.COLOR_BGR2RGB)
        x = torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255.0
        x = (x - mean) / std
        with torch.no_grad():
            logits = model(x)
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        labels = logits.argmax(1)[0].numpy().astype(np.uint8)
        overlay = cv2.addWeighted(frame, 1 - alpha, palette[labels], alpha, 0)
        writer.write(overlay)
        times.append((time.perf_counter() - t0) * 1000)
    total = time.perf_counter() - t_start
    cap.release()
    writer.release()
    if not times:
        raise ValueError(f"{video}: no frames decoded")
    t = np.array(times)
    return {"frames": len(times), "fps": len(times) / total,
            "ms": {"p50": float(np.percentile(t, 50)), "p95": float(np.percentile(t, 95)),
                   "p99": float(np.percentile(t, 99))}}
