"""Building blocks shared by the model zoo."""
from __future__ import annotations

import torch.nn as nn


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def dw_separable(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """MobileNetV1's conv_dw: depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU.
    Indices 0..5 match the ImageNet checkpoint's key layout."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
