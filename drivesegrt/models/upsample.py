"""Decoder upsampling, one choice per model: nearest, bilinear, bed of nails, max-unpool, transposed.

Every choice exports to ONNX ops that TensorRT parses. That matters for ``max_unpool``: TensorRT has
neither MaxUnpool nor MaxPool's indices output (and torch's ONNX exporters fail on max_unpool2d), so
the pooling switches are rebuilt from the encoder feature and its pooled output with
Slice/Equal/Mul/Concat/DepthToSpace/Pad, keeping only the FIRST max of each 2x2 window in torch's
scan order, exactly as ``max_pool2d(return_indices=True)`` + ``max_unpool2d`` do.

Odd sizes: 2x2 max-pooling floors (a 9x13 map pools to 4x6), so the 2x-upsampled map is padded with
zeros on the bottom/right up to the encoder's size, the rows and columns the pooling dropped.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

UPSAMPLE_MODES = ("nearest", "bilinear", "bed_of_nails", "max_unpool", "transposed")


def check_upsample(mode: str, allowed: tuple[str, ...] = UPSAMPLE_MODES) -> str:
    """Return ``mode`` if it is one of ``allowed``, else raise ValueError naming both."""
    if mode not in allowed:
        raise ValueError(f"upsample {mode!r} is not supported here; allowed: {', '.join(allowed)}")
    return mode


def pad_to(y: torch.Tensor, size) -> torch.Tensor:
    """Zero-pad (N, C, h, w) on the bottom/right to (N, C, H, W), H >= h and W >= w (the pooling
    floored those rows/columns away, so there is nothing to put back in them)."""
    return F.pad(y, (0, size[1] - y.shape[-1], 0, size[0] - y.shape[-2]))


def interleave_2x2(parts: torch.Tensor) -> torch.Tensor:
    """(N, C, 4, h, w) window corners in row-major order (top-left, top-right, bottom-left,
    bottom-right) -> (N, C, 2h, 2w). Exports as Reshape + DepthToSpace (CRD)."""
    n, c, _, h, w = parts.shape
    return F.pixel_shuffle(parts.reshape(n, c * 4, h, w), 2)


def first_max_mask(x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """One-hot switches of a 2x2/stride-2 max-pool: (N, C, H, W) encoder feature and its
    (N, C, H//2, W//2) pooled map -> (N, C, 4, H//2, W//2) float mask, 1 at the first maximum of each
    window in torch's scan order (row-major), 0 elsewhere. Ties (post-ReLU zeros) keep the first."""
    h, w = pooled.shape[-2:]
    x = x[..., : 2 * h, : 2 * w]                      # (N, C, 2h, 2w): drop what the pool floored
    corners = (x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2])
    taken = torch.zeros_like(pooled)                  # (N, C, h, w): 1 once a window has its max
    masks = []
    for corner in corners:                            # each (N, C, h, w)
        m = (corner == pooled).to(pooled.dtype) * (1 - taken)
        masks.append(m)
        taken = taken + m
    masks.append(1 - taken)                           # bottom-right is the max if no other was
    return torch.stack(masks, dim=2)                  # (N, C, 4, h, w)


def max_unpool_2x2(y: torch.Tensor, x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """Place (N, C, h, w) decoder values at the switches of ``pooled = max_pool2d(x, 2, 2)``:
    -> (N, C, H, W) like ``x``, zeros elsewhere. Equals torch's max_pool2d(return_indices=True) +
    max_unpool2d(output_size=x.shape[-2:]), ties included."""
    mask = first_max_mask(x, pooled)                  # (N, C, 4, h, w)
    return pad_to(interleave_2x2(y.unsqueeze(2) * mask), x.shape[-2:])


def bed_of_nails_2x2(y: torch.Tensor, size) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, H, W): each value at the top-left of its 2x2 cell, zeros elsewhere."""
    zeros = torch.zeros_like(y)
    parts = torch.stack((y, zeros, zeros, zeros), dim=2)   # (N, C, 4, h, w)
    return pad_to(interleave_2x2(parts), size)


def bilinear_kernel(channels: int, kernel: int) -> torch.Tensor:
    """(channels, channels, k, k) ConvTranspose2d weight that upsamples each channel bilinearly
    and mixes none (the initialization of Long et al.'s FCN upsampling layers)."""
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    r = torch.arange(kernel, dtype=torch.float32)
    k1 = 1 - (r - center).abs() / factor                  # (k,)
    weight = torch.zeros(channels, channels, kernel, kernel)
    idx = torch.arange(channels)
    weight[idx, idx] = k1[:, None] * k1[None, :]
    return weight


class Upsample(nn.Module):
    """Upsample (N, C_in, h, w) to (N, C_out, H, W) with one of :data:`UPSAMPLE_MODES`.

    ``factor``: nominal scale (2 for encoder-decoder stages, 8/16/32 for FCN); the output is
    always exactly ``size``. ``transposed``: ConvTranspose2d, kernel ``kernel`` (default
    ``factor``, non-overlapping like U-Net's 2x2 up-convolution), stride ``factor``, then zero
    padding to ``size``; ``bilinear_init`` starts it as bilinear interpolation (FCN).
    ``bed_of_nails`` and ``max_unpool`` are 2x2 only; ``max_unpool`` needs the switches
    ``(x, pooled)``. When C_out != C_in, the parameter-free modes are followed by a 1x1 conv.
    """

    def __init__(self, mode: str, in_channels: int, out_channels: int | None = None,
                 factor: int = 2, kernel: int | None = None, bilinear_init: bool = False):
        super().__init__()
        self.mode = check_upsample(mode)
        out_channels = out_channels or in_channels
        if mode in ("bed_of_nails", "max_unpool") and factor != 2:
            raise ValueError(f"upsample {mode!r} works on 2x2 pooling windows, not factor {factor}")
        self.proj = None
        if mode == "transposed":
            kernel = kernel or factor
            self.deconv = nn.ConvTranspose2d(in_channels, out_channels, kernel, factor,
                                             (kernel - factor) // 2, bias=False)
            if bilinear_init and in_channels == out_channels:
                with torch.no_grad():
                    self.deconv.weight.copy_(bilinear_kernel(in_channels, kernel))
        elif out_channels != in_channels:
            self.proj = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, y: torch.Tensor, size, switches=None) -> torch.Tensor:
        """(N, C_in, h, w) -> (N, C_out, *size). ``switches``: the encoder's (x, pooled) pair,
        only used by ``max_unpool``."""
        if self.mode == "transposed":
            return pad_to(self.deconv(y), size)
        if self.mode == "nearest":
            y = F.interpolate(y, size=size, mode="nearest")
        elif self.mode == "bilinear":
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        elif self.mode == "bed_of_nails":
            y = bed_of_nails_2x2(y, size)
        else:
            if switches is None:
                raise ValueError("upsample 'max_unpool' needs the encoder's pooling switches")
            y = max_unpool_2x2(y, *switches)
        return y if self.proj is None else self.proj(y)
