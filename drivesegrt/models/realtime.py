"""MobileSeg: the real-time encoder-decoder for CPU/edge speed.

Encoder: MobileNetV1 (width 0.25 by default; its ImageNet weights load by key name).
Context: LR-ASPP-style head on the stride-32 features (1x1 branch gated by global pooling).
Decoder: FPN-style top-down path fusing strides 16, 8 and 4 with depthwise-separable convs;
logits come out at stride 4 and the pipeline's postprocess brings them to frame size.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import conv_bn_relu, dw_separable

UPSAMPLE_MODES = ("bilinear", "nearest")


def _ch(c: int, width: float) -> int:
    return max(4, int(c * width))


class MobileNetV1(nn.Module):
    """stage1 -> stride 8 (tap at stride 4 after block 3), stage2 -> 16, stage3 -> 32."""

    def __init__(self, width: float = 0.25):
        super().__init__()
        c = lambda v: _ch(v, width * 4)  # noqa: E731 - widths below are the x0.25 ones
        self.stage1 = nn.Sequential(
            conv_bn_relu(3, c(8), 3, 2), dw_separable(c(8), c(16)),
            dw_separable(c(16), c(32), 2), dw_separable(c(32), c(32)),
            dw_separable(c(32), c(64), 2), dw_separable(c(64), c(64)))
        self.stage2 = nn.Sequential(dw_separable(c(64), c(128), 2),
                                    *[dw_separable(c(128), c(128)) for _ in range(5)])
        self.stage3 = nn.Sequential(dw_separable(c(128), c(256), 2), dw_separable(c(256), c(256)))
        self.channels = (c(32), c(64), c(128), c(256))

    def forward(self, x):
        s4 = self.stage1[:4](x)           # (N, c32, H/4, W/4)
        s8 = self.stage1[4:](s4)          # (N, c64, H/8, W/8)
        s16 = self.stage2(s8)             # (N, c128, H/16, W/16)
        s32 = self.stage3(s16)            # (N, c256, H/32, W/32)
        return s4, s8, s16, s32


def load_imagenet_backbone(backbone: MobileNetV1, path: str | Path) -> int:
    """Load the ImageNet MobileNetV1 x0.25 checkpoint (keys ``module.stageN...``); returns
    the number of tensors loaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained backbone not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj)
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.endswith("fc.weight")
             and not k.endswith("fc.bias")}
    own = backbone.state_dict()
    mismatch = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if mismatch:
        raise ValueError(f"{path}: backbone keys/shapes do not match MobileNetV1 at this width "
                         f"(first: {mismatch[0]})")
    backbone.load_state_dict(state, strict=True)
    return len(state)


class MobileSeg(nn.Module):
    def __init__(self, num_classes: int, width: float = 0.25, decoder_channels: int = 64,
                 upsample: str = "bilinear"):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"mobileseg: upsample {upsample!r} not in {UPSAMPLE_MODES}")
        self.upsample = upsample
        self.backbone = MobileNetV1(width)
        c4, c8, c16, c32 = self.backbone.channels
        d = decoder_channels
        self.context = conv_bn_relu(c32, d, 1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c32, d, 1), nn.Sigmoid())
        self.lat16 = conv_bn_relu(c16, d, 1)
        self.lat8 = conv_bn_relu(c8, d, 1)
        self.lat4 = conv_bn_relu(c4, d, 1)
        self.fuse16 = dw_separable(d, d)
        self.fuse8 = dw_separable(d, d)
        self.fuse4 = dw_separable(d, d)
        self.classifier = nn.Conv2d(d, num_classes, 1)

    def _up(self, x, like):
        if self.upsample == "nearest":
            return F.interpolate(x, size=like.shape[-2:], mode="nearest")
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x):
        """(N, 3, H, W) normalized RGB -> (N, num_classes, ceil(H/4), ceil(W/4)) logits."""
        s4, s8, s16, s32 = self.backbone(x)
        y = self.context(s32) * self.gate(s32)            # (N, d, H/32, W/32)
        y = self.fuse16(self._up(y, s16) + self.lat16(s16))
        y = self.fuse8(self._up(y, s8) + self.lat8(s8))
        y = self.fuse4(self._up(y, s4) + self.lat4(s4))   # (N, d, H/4, W/4)
        return self.classifier(y)
