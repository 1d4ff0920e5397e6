"""uint8 HxWx3 BGR frames -> model input (resize, BGR->RGB, mean/std, NCHW float32).

Works on numpy arrays (CPU, cv2) and on torch tensors (any device, e.g. CUDA).
"""
from __future__ import annotations

import numpy as np


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


def normalize_torch(images, mean, std):
    """torch (N,H,W,3) uint8 BGR (any device) -> (N,3,H,W) float32 normalized RGB."""
    import torch

    if images.dim() == 3:
        images = images.unsqueeze(0)
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    x = images.flip(-1).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - m) / s
