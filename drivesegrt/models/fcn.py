"""FCN-32s/16s/8s (Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015) on a VGG-style encoder with BatchNorm.

A 1x1 classifier scores pool5 (stride 32); FCN-16s adds 2x-upsampled scores to a 1x1 scoring of
pool4, FCN-8s then does the same with pool3; a last upsampling returns to the input stride.
Upsampling is learned (ConvTranspose2d, kernel 2x its stride) and starts as bilinear interpolation;
the skip scorers start at zero, so training begins from the coarser net's output, as in the paper.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .upsample import Upsample, check_upsample, pad_to
from .vgg import VGGEncoder

FCN_UPSAMPLE = ("transposed", "bilinear", "nearest")


class FCN(nn.Module):
    """(N, 3, H, W) -> (N, num_classes, H, W) logits; ``skips`` = 0 (32s), 1 (16s) or 2 (8s).

    The input is zero-padded (the normalized mean colour) to a multiple of 32 and the logits are
    cropped back, so every stride is exact and no border row scores zero for odd sizes.
    """

    def __init__(self, num_classes: int, base: int = 64, upsample: str = "transposed",
                 skips: int = 0):
        super().__init__()
        check_upsample(upsample, FCN_UPSAMPLE)
        self.encoder = VGGEncoder(base)
        self.stride = 2 ** len(self.encoder.channels)                     # 32
        self.score = nn.Conv2d(self.encoder.channels[-1], num_classes, 1)
        # pool4, then pool3 (channels of stages -2 and -3)
        self.skip_scores = nn.ModuleList(nn.Conv2d(self.encoder.channels[-2 - i], num_classes, 1)
                                         for i in range(skips))
        for conv in self.skip_scores:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.skip_ups = nn.ModuleList(Upsample(upsample, num_classes, factor=2, kernel=4,
                                               bilinear_init=True) for _ in range(skips))
        final = self.stride >> skips                                       # 32, 16 or 8
        self.final_up = Upsample(upsample, num_classes, factor=final, kernel=2 * final,
                                 bilinear_init=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.stride
        # ceil to a multiple of 32 by floor division: ONNX Mod is not parsed by older TensorRT
        x = pad_to(x, ((h + s - 1) // s * s, (w + s - 1) // s * s))   # (N, 3, Hp, Wp)
        feats = self.encoder(x)                           # [(x_s, pool_s)] for strides 2..32
        y = self.score(feats[-1][1])                      # (N, K, Hp/32, Wp/32)
        for i, (up, score) in enumerate(zip(self.skip_ups, self.skip_scores)):
            pooled = feats[-2 - i][1]                     # pool4 (N, C4, Hp/16, Wp/16), pool3
            y = up(y, pooled.shape[-2:]) + score(pooled)  # (N, K, Hp/16, Wp/16), then /8
        y = self.final_up(y, x.shape[-2:])                # (N, K, Hp, Wp)
        return y[..., :h, :w]                             # (N, K, H, W)


class FCN32s(FCN):
    """FCN-32s: scores at stride 32, one 32x upsampling. (N, 3, H, W) -> (N, K, H, W)."""

    def __init__(self, num_classes: int, base: int = 64, upsample: str = "transposed"):
        super().__init__(num_classes, base, upsample, skips=0)


class FCN16s(FCN):
    """FCN-16s: + pool4 skip, 16x final upsampling. (N, 3, H, W) -> (N, K, H, W)."""

    def __init__(self, num_classes: int, base: int = 64, upsample: str = "transposed"):
        super().__init__(num_classes, base, upsample, skips=1)


class FCN8s(FCN):
    """FCN-8s: + pool4 and pool3 skips, 8x final upsampling. (N, 3, H, W) -> (N, K, H, W)."""

    def __init__(self, num_classes: int, base: int = 64, upsample: str = "transposed"):
        super().__init__(num_classes, base, upsample, skips=2)
