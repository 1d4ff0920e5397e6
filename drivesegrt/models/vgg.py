"""VGG-style encoder shared by FCN, SegNet, U-Net and the basic encoder-decoder: stages of
3x3 conv + BN + ReLU blocks, each followed by a 2x2/stride-2 max-pool (floor mode)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import conv_bn_relu

# VGG-16's convolutional part: convs per stage and width multiples of ``base`` (64-128-256-512-512).
VGG16_DEPTHS = (2, 2, 3, 3, 3)
VGG16_WIDTHS = (1, 2, 4, 8, 8)


def conv_stack(cin: int, cout: int, n: int) -> nn.Sequential:
    """n 3x3 conv+BN+ReLU blocks: the first maps cin -> cout, the others keep cout."""
    return nn.Sequential(*[conv_bn_relu(cin if i == 0 else cout, cout) for i in range(n)])


class VGGEncoder(nn.Module):
    """(N, 3, H, W) -> per stage s (stride 2**(s+1) after its pool):
    ``(x_s, p_s)`` with x_s the (N, C_s, H_s, W_s) pre-pool feature (skip connection and
    unpooling switches) and p_s = max_pool2d(x_s, 2, 2), (N, C_s, H_s // 2, W_s // 2)."""

    def __init__(self, base: int = 64, depths=VGG16_DEPTHS, widths=VGG16_WIDTHS,
                 in_channels: int = 3):
        super().__init__()
        if base < 1 or len(depths) != len(widths):
            raise ValueError(f"VGG encoder: base must be >= 1 and depths/widths equally long, "
                             f"got base={base}, depths={depths}, widths={widths}")
        self.channels = tuple(base * w for w in widths)
        cins = (in_channels,) + self.channels[:-1]
        self.stages = nn.ModuleList(conv_stack(ci, co, n)
                                    for ci, co, n in zip(cins, self.channels, depths))
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for stage in self.stages:
            x = stage(x)                  # (N, C_s, H_s, W_s)
            p = self.pool(x)              # (N, C_s, H_s // 2, W_s // 2)
            out.append((x, p))
            x = p
        return out
