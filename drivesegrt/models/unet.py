"""U-Net (Ronneberger, Fischer, Brox, MICCAI 2015) with BatchNorm and 'same' padding.

Contracting path: four stages of two 3x3 conv+BN+ReLU and a 2x2 max-pool (64-128-256-512 at base
64), a 1024-wide bottleneck. Expanding path: a 2x2 up-convolution halving the channels, concat
with the contracting stage's feature map, two 3x3 convs. 'Same' padding keeps sizes aligned, so
no cropping of the skips is needed; odd sizes are zero-padded after each up-convolution.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .upsample import Upsample, check_upsample
from .vgg import VGGEncoder, conv_stack

# max_unpool is left out: the expanding path carries twice the channels of the switches.
UNET_UPSAMPLE = ("transposed", "nearest", "bilinear", "bed_of_nails")


class UNet(nn.Module):
    """(N, 3, H, W) -> (N, num_classes, H, W) logits, any H and W. ``upsample`` other than
    ``transposed`` is followed by a 1x1 conv halving the channels (upsampling + conv, the
    paper's other reading of 'up-convolution')."""

    def __init__(self, num_classes: int, base: int = 64, upsample: str = "transposed"):
        super().__init__()
        check_upsample(upsample, UNET_UPSAMPLE)
        self.encoder = VGGEncoder(base, depths=(2, 2, 2, 2), widths=(1, 2, 4, 8))
        chans = self.encoder.channels                                   # 64, 128, 256, 512
        self.bottleneck = conv_stack(chans[-1], 2 * chans[-1], 2)       # 1024
        self.ups = nn.ModuleList(Upsample(upsample, 2 * c, c) for c in reversed(chans))
        self.decoder = nn.ModuleList(conv_stack(2 * c, c, 2) for c in reversed(chans))
        self.classifier = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)                             # [(x_s, pool_s)], strides 1..8 / 2..16
        y = self.bottleneck(feats[-1][1])                   # (N, 16b, H/16, W/16)
        for (skip, _), up, stage in zip(reversed(feats), self.ups, self.decoder):
            y = up(y, skip.shape[-2:])                      # (N, C_s, H_s, W_s)
            y = stage(torch.cat((skip, y), dim=1))          # (N, 2 C_s, H_s, W_s) -> (N, C_s, ...)
        return self.classifier(y)                           # (N, K, H, W)
