"""SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017): VGG-16 encoder (13 convs, five 2x2
max-pools) and a mirrored decoder (512-512-256-128-64) that max-unpools with the encoder's
pooling switches, then convolves to densify the sparse map.

The unpooling is rebuilt from TensorRT-parsable ops (see ``upsample.max_unpool_2x2``) and equals
torch's max_pool2d(return_indices=True) + max_unpool2d exactly, ties included.
"""
from __future__ import annotations

from .encdec import EncoderDecoder
from .vgg import VGG16_DEPTHS, VGG16_WIDTHS


class SegNet(EncoderDecoder):
    """(N, 3, H, W) -> (N, num_classes, H, W) logits, any H and W (pooling floors; each unpool
    returns to its encoder stage's exact size with zeros where the pooling saw nothing)."""

    def __init__(self, num_classes: int, base: int = 64, upsample: str = "max_unpool"):
        super().__init__(num_classes, base, upsample, VGG16_DEPTHS, VGG16_WIDTHS)
