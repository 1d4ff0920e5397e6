"""The lecture's basic encoder-decoder, and the mirrored decoder that SegNet shares.

Encoder: conv+pool stages (widths 64-128-256-512 at base 64, output stride 16). Decoder: one
"deconvolution" stage per encoder stage, deepest first: upsample x2 back to that stage's
pre-pool size, then 3x3 conv+BN+ReLU blocks; the stage's last conv maps to the next shallower
width (512-256-128-64 in, 256-128-64-64 out). A linear 1x1 conv gives the logits.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import conv_bn_relu
from .upsample import Upsample, check_upsample
from .vgg import VGGEncoder


def decoder_stage(cin: int, cout: int, n: int) -> nn.Sequential:
    """n 3x3 conv+BN+ReLU blocks, the first n-1 keep cin and the last maps to cout (the mirror
    of an encoder stage)."""
    return nn.Sequential(*[conv_bn_relu(cin, cin) for _ in range(n - 1)], conv_bn_relu(cin, cout))


class EncoderDecoder(nn.Module):
    """(N, 3, H, W) -> (N, num_classes, H, W) logits, any H and W.

    ``depths``/``widths``: convs per stage and width multiples of ``base``; the decoder mirrors
    them. ``upsample``: any of ``UPSAMPLE_MODES``; ``max_unpool`` reuses the encoder's pooling
    switches. Odd sizes: pooling floors, each decoder stage upsamples to its encoder stage's
    exact pre-pool size (zero padding for the floored row/column).
    """

    def __init__(self, num_classes: int, base: int = 64, upsample: str = "nearest",
                 depths=(1, 1, 1, 1), widths=(1, 2, 4, 8)):
        super().__init__()
        check_upsample(upsample)
        self.encoder = VGGEncoder(base, depths, widths)
        chans = self.encoder.channels                       # e.g. 64, 128, 256, 512
        outs = (chans[0],) + chans[:-1]                     # decoder stage s maps chans[s] -> outs[s]
        # deepest stage first
        self.ups = nn.ModuleList(Upsample(upsample, c) for c in reversed(chans))
        self.decoder = nn.ModuleList(decoder_stage(ci, co, n) for ci, co, n in
                                     zip(reversed(chans), reversed(outs), reversed(depths)))
        self.classifier = nn.Conv2d(outs[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)                             # [(x_s, pool_s)], strides 2, 4, ...
        y = feats[-1][1]                                    # (N, C_last, H/2**S, W/2**S)
        for (skip, pooled), up, stage in zip(reversed(feats), self.ups, self.decoder):
            y = up(y, skip.shape[-2:], (skip, pooled))      # (N, C_s, H_s, W_s)
            y = stage(y)                                    # (N, C_{s-1}, H_s, W_s)
        return self.classifier(y)                           # (N, K, H, W)
