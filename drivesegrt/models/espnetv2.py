"""ESPNetv2 for semantic segmentation: EESPNet encoder + efficient-pyramid-pooling decoder.

ESPNetv2 (Mehta et al., CVPR 2019); weights: sacmehta/EdgeNets, MIT,
Copyright (c) 2021 Sachin Mehta.

Module names follow the parameter keys of the authors' public Cityscapes checkpoints, so they
load with ``load_state_dict(..., strict=True)`` (``load_cityscapes_weights``). Those predict 20
channels: the 19 Cityscapes train ids, then background at index 19 (``drop_background``).

Layout at width ``s`` (channels c1..c4 from ``WIDTHS``)::

    level1          3x3 conv, stride 2                              1/2   c1
    level2_0        downsampling unit                               1/4   c2
    level3_0, 3     downsampling unit + 3 EESP units                1/8   c3
    level4_0, 4     downsampling unit + 7 EESP units                1/16  c4
    bu_dec_l1       pyramid pooling                                 1/16  64
    bu_dec_l2..l4   resize to the skip, add the projected skip       1/8, 1/4, 1/2: 48, 32, classes
                    (merge_enc_dec_*), BN + PReLU, pyramid pooling
    output          bilinear (align_corners) to the input size (or the 1/2 logits as they
                    are: ``output_stride=2``)

Any input size works. The authors double the decoder features before each skip addition,
which lines up only when H and W are multiples of 32; here they are resized to the skip's own
size, the very same operation in that case.

Written for export: every resampling size is computed from the input size as a Python int, so
the ONNX graph resizes to constant sizes and pools with AveragePool or small constant MatMuls
(no Gather, no data-dependent shapes). The price: an exported graph serves the input size it was
exported at (the exporter's default; batch stays dynamic).
"""
from __future__ import annotations

import math
import warnings
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# Channels of level1..level4 per width s (the classification levels 5+ are not used here).
WIDTHS = {0.5: (16, 32, 64, 128), 1.0: (32, 64, 128, 256), 1.5: (32, 96, 192, 384),
          2.0: (32, 128, 256, 512)}
# Dilations of the four branches of an EESP unit. Branch i would have an effective kernel of
# 3 + 2i; at level 4 the receptive-field limit (7) turns the widest one back into a plain 3x3,
# and branches are kept sorted by receptive field.
DILATIONS = (1, 2, 3, 4)
DILATIONS_LEVEL4 = (1, 1, 2, 3)
LEVEL3_UNITS, LEVEL4_UNITS = 3, 7
DECODER_WIDTHS = (64, 48, 32)                     # after the 1/16, 1/8 and 1/4 pyramids
PYRAMID_SCALES = (2.0, 1.5, 1.0, 0.5, 0.1)        # relative sizes of the pyramid's branches
PYRAMID_MIN_SIZE = 5                              # no branch is resampled below 5 pixels a side

CITYSCAPES_CLASSES = 20                           # 19 train ids + background
BACKGROUND = 19                                   # index of the background channel
CITYSCAPES_PYRAMID_CHANNELS = 10                  # what the checkpoints were trained with
CITYSCAPES_WEIGHTS = "espnetv2_s_{s}_city_1024x512.pth"


def _dims(x: torch.Tensor) -> tuple[int, ...]:
    """Shape of ``x`` as Python ints. While tracing for ONNX export sizes are tensors; taking
    their values is what makes every resampling node constant-size (hence the silenced warning)."""
    if torch.jit.is_tracing():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return tuple(int(d) for d in x.shape)
    return tuple(x.shape)


def _hw(x: torch.Tensor) -> tuple[int, int]:
    return _dims(x)[-2:]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, *size), bilinear with aligned corners as the checkpoints were
    trained."""
    if _hw(x) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


@lru_cache(maxsize=256)
def _window_matrix(n_in: int, n_out: int) -> tuple[tuple[float, ...], ...]:
    """(n_in, n_out) matrix whose column i averages adaptive-pooling window i:
    rows floor(i * n_in / n_out) .. ceil((i + 1) * n_in / n_out) - 1. Plain Python, so that a
    trace records it as one constant."""
    m = [[0.0] * n_out for _ in range(n_in)]
    for i in range(n_out):
        start, end = i * n_in // n_out, -(-(i + 1) * n_in // n_out)
        for r in range(start, end):
            m[r][i] = 1.0 / (end - start)
    return tuple(map(tuple, m))


def _pool_axis(x: torch.Tensor, axis: int, n_out: int) -> torch.Tensor:
    """Adaptive average pooling of (N, C, H, W) along H (axis 2) or W (axis 3) to ``n_out``.

    Windows repeat with period p inputs -> q outputs (p/q = n_in/n_out in lowest terms) and never
    straddle a period, so the pooling is one small (p, q) matrix applied per period.
    """
    _, c, h, w = _dims(x)
    n_in = h if axis == 2 else w
    if n_in == n_out:
        return x
    if n_in % n_out == 0:
        k = n_in // n_out
        return F.avg_pool2d(x, (k, 1) if axis == 2 else (1, k))
    g = math.gcd(n_in, n_out)
    p, q = n_in // g, n_out // g
    with warnings.catch_warnings():   # a constant of the trace, as intended
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        m = torch.tensor(_window_matrix(p, q), dtype=x.dtype, device=x.device)    # (p, q)
    if axis == 3:
        y = x.reshape(-1, c, h, g, p) @ m                                 # (N, C, H, g, q)
        return y.reshape(-1, c, h, n_out)
    y = m.t() @ x.reshape(-1, c, g, p, w)                                 # (N, C, g, q, W)
    return y.reshape(-1, c, n_out, w)


def adaptive_avg_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` (same windows) from export-friendly ops: AveragePool where the
    ratio is whole, small period matrices otherwise. (N, C, H, W) -> (N, C, *size)."""
    h, w = _hw(x)
    oh, ow = size
    if h % oh == 0 and w % ow == 0 and (h, w) != (oh, ow):
        return F.avg_pool2d(x, (h // oh, w // ow))
    return _pool_axis(_pool_axis(x, 3, ow), 2, oh)


def prelu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """PReLU with one slope per channel of (N, C, H, W) ``x``, as relu(x) + a * (x - relu(x)).

    Bit for bit what ``F.prelu`` computes (x - relu(x) is exactly min(x, 0)), but exported as
    Relu/Sub/Mul/Add, which ONNX Runtime and OpenVINO fuse and vectorize: ONNX Runtime's PRelu
    kernel with per-channel slopes is several times slower than the four together.
    """
    r = torch.relu(x)
    return r + weight.reshape(1, -1, 1, 1) * (x - r)


class PReLU(nn.PReLU):
    """``nn.PReLU`` (same parameter) computed by :func:`prelu`."""

    def forward(self, x):
        return prelu(x, self.weight)


def _conv3_pool2(k: torch.Tensor) -> torch.Tensor:
    """(C, 1, 3, 3) depthwise kernel -> (C, 1, 4, 4) kernel that, at stride 2 and padding 1,
    equals the 3x3 conv (padding 1) followed by 2x2 average pooling. Built from Concat and
    Add only, so the exporter folds it into one constant."""
    c = k.shape[0]
    zeros_row = torch.zeros(c, 1, 1, 3, dtype=k.dtype, device=k.device)
    zeros_col = torch.zeros(c, 1, 4, 1, dtype=k.dtype, device=k.device)
    rows = (torch.cat([k, zeros_row], 2), torch.cat([zeros_row, k], 2))   # (C, 1, 4, 3)
    shifted = [torch.cat(pair, 3) for r in rows for pair in ((r, zeros_col), (zeros_col, r))]
    return (shifted[0] + shifted[1] + shifted[2] + shifted[3]) * 0.25


def _batch_norm_part(bn: nn.BatchNorm2d, x: torch.Tensor, start: int) -> torch.Tensor:
    """``bn`` on (N, C, H, W) ``x`` standing for channels start..start+C-1 of ``bn``'s input:
    the same per-channel statistics, and in training the same running-statistics updates
    (through views of ``bn``'s buffers; the caller counts the batch once)."""
    c = slice(start, start + _dims(x)[1])
    return F.batch_norm(x, bn.running_mean[c], bn.running_var[c], bn.weight[c], bn.bias[c],
                        bn.training, bn.momentum, bn.eps)


class ConvUnit(nn.Module):
    """Conv, then BatchNorm and PReLU if asked; parameters under ``conv``/``bn``/``act``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bn: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, dilation * (k // 2), dilation, groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.act = PReLU(cout) if act else None

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return x if self.act is None else self.act(x)


class NormAct(nn.Module):
    """BatchNorm + PReLU under ``bn``/``act``."""

    def __init__(self, c: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.act = PReLU(c)

    def forward(self, x):
        return self.act(self.bn(x))


class DecoderConv(nn.Module):
    """Conv + BatchNorm + PReLU under ``cbr.0/1/2`` (the decoder's key layout)."""

    def __init__(self, cin: int, cout: int, k: int, groups: int = 1):
        super().__init__()
        self.cbr = nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False),
                                 nn.BatchNorm2d(cout), PReLU(cout))

    def forward(self, x):
        return self.cbr(x)


class DecoderNormAct(nn.Module):
    """BatchNorm + PReLU under ``br.0/1`` (the decoder's key layout)."""

    def __init__(self, c: int):
        super().__init__()
        self.br = nn.Sequential(nn.BatchNorm2d(c), PReLU(c))

    def forward(self, x):
        return self.br(x)


class UnusedSlope(nn.Module):
    """A PReLU slope the checkpoints store for strided EESP units, which never apply it. A buffer,
    not a parameter, so that it loads but takes no gradient."""

    def __init__(self, c: int):
        super().__init__()
        self.register_buffer("weight", torch.full((c,), 0.25))


class EESP(nn.Module):
    """EESP unit (reduce, split, transform, merge).

    A grouped 1x1 conv reduces ``cin`` to n = cout / 4 channels; four depthwise 3x3 convs with
    the given dilations read that reduction; each branch adds the previous branch's output
    (hierarchical fusion, so the dilated branches do not grid); the branches are concatenated,
    normalized and mixed by a grouped 1x1 conv. Stride 1: plus the input, then PReLU,
    (N, cin, H, W) -> (N, cout, H, W). Stride 2: the mixed features only, at ceil(H/2) x ceil(W/2),
    for the downsampling unit to complete.
    """

    def __init__(self, cin: int, cout: int, dilations: tuple[int, ...], stride: int = 1):
        super().__init__()
        k = len(dilations)
        if cout % k or cin % k:
            raise ValueError(f"EESP: channels {cin}->{cout} not divisible by {k} branches")
        if stride == 1 and cin != cout:
            raise ValueError(f"EESP: a stride-1 unit keeps its width, got {cin}->{cout}")
        n = cout // k
        self.stride = stride
        self.proj_1x1 = ConvUnit(cin, n, 1, groups=k)
        self.spp_dw = nn.ModuleList(ConvUnit(n, n, 3, stride, d, groups=n, bn=False, act=False)
                                    for d in dilations)
        self.conv_1x1_exp = ConvUnit(cout, cout, 1, groups=k, act=False)
        self.br_after_cat = NormAct(cout)
        self.module_act = PReLU(cout) if stride == 1 else UnusedSlope(cout)

    def forward(self, x):
        y = self.proj_1x1(x)                                  # (N, n, H, W)
        branches = []
        for dw in self.spp_dw:
            b = dw(y)                                         # (N, n, H/stride, W/stride)
            branches.append(b + branches[-1] if branches else b)
        y = self.conv_1x1_exp(self.br_after_cat(torch.cat(branches, 1)))   # (N, cout, ...)
        if self.stride != 1:
            return y
        return self.module_act(y + x)


class DownSampler(nn.Module):
    """Halves the resolution: [3x3 average pool (stride 2) | strided EESP] concatenated, plus the
    input image (average-pooled to this resolution, 3x3 conv + 1x1 conv: "input
    reinforcement"), then PReLU. (N, cin, H, W) -> (N, cout, ceil(H/2), ceil(W/2))."""

    def __init__(self, cin: int, cout: int, dilations: tuple[int, ...]):
        super().__init__()
        self.eesp = EESP(cin, cout - cin, dilations, stride=2)
        self.inp_reinf = nn.Sequential(ConvUnit(3, 3, 3), ConvUnit(3, cout, 1, act=False))
        self.act = PReLU(cout)

    def forward(self, x, image):
        y = torch.cat([F.avg_pool2d(x, 3, 2, 1), self.eesp(x)], 1)
        return self.act(y + self.inp_reinf(image))


class EESPNet(nn.Module):
    """The encoder: (N, 3, H, W) -> features at 1/2, 1/4, 1/8, 1/16 (sizes rounded up)."""

    def __init__(self, s: float):
        super().__init__()
        c1, c2, c3, c4 = WIDTHS[s]
        self.level1 = ConvUnit(3, c1, 3, stride=2)
        self.level2_0 = DownSampler(c1, c2, DILATIONS)
        self.level3_0 = DownSampler(c2, c3, DILATIONS)
        self.level3 = nn.ModuleList(EESP(c3, c3, DILATIONS) for _ in range(LEVEL3_UNITS))
        self.level4_0 = DownSampler(c3, c4, DILATIONS)
        self.level4 = nn.ModuleList(EESP(c4, c4, DILATIONS_LEVEL4) for _ in range(LEVEL4_UNITS))

    def forward(self, x):
        # the image at 1/4, 1/8, 1/16 for input reinforcement: the same 3x3 stride-2 average
        # pool as the feature path, so the sizes always agree
        image = F.avg_pool2d(F.avg_pool2d(x, 3, 2, 1), 3, 2, 1)
        l1 = self.level1(x)                               # (N, c1, H/2, W/2)
        l2 = self.level2_0(l1, image)                     # (N, c2, H/4, W/4)
        image = F.avg_pool2d(image, 3, 2, 1)
        l3 = self.level3_0(l2, image)                     # (N, c3, H/8, W/8)
        for unit in self.level3:
            l3 = unit(l3)
        image = F.avg_pool2d(image, 3, 2, 1)
        l4 = self.level4_0(l3, image)                     # (N, c4, H/16, W/16)
        for unit in self.level4:
            l4 = unit(l4)
        return l1, l2, l3, l4


class PyramidPool(nn.Module):
    """Efficient pyramid pooling: (N, cin, h, w) -> (N, cout, h, w).

    A 1x1 projection to p channels; five branches, each a depthwise 3x3 conv at a scale of
    ``PYRAMID_SCALES`` (resampled there and back); each branch normalized (BN + PReLU); a 3x3
    conv with one group per channel that reads that channel in all five branches; BN + PReLU; a
    1x1 conv to ``cout`` [+ BN + PReLU].

    The parameters keep the authors' layout (``merge_layer``: the branches' BN + PReLU over their
    concatenation, a channel shuffle, the grouped conv, the 1x1 conv). The computation avoids the
    concatenation, the shuffle and the grouped conv, which runtimes run slowly with five input
    channels per group: the grouped conv is the sum over branches of one depthwise 3x3 conv per
    branch, and each branch gets its slice of the BN and PReLU parameters.
    """

    def __init__(self, cin: int, p: int, cout: int, last: bool = False):
        super().__init__()
        n = len(PYRAMID_SCALES)
        self.projection_layer = DecoderConv(cin, p, 1)
        self.stages = nn.ModuleList(nn.Conv2d(p, p, 3, 1, 1, groups=p, bias=False)
                                    for _ in PYRAMID_SCALES)
        self.merge_layer = nn.Sequential(
            DecoderNormAct(n * p), nn.Identity(), DecoderConv(n * p, p, 3, groups=p),
            nn.Conv2d(p, cout, 1, bias=last))
        self.br = None if last else DecoderNormAct(cout)

    @staticmethod
    def _branch(x, scale: float, stage: nn.Conv2d, h: int, w: int):
        """Branch at ``scale``: (N, p, h, w) -> (N, p, h, w)."""
        size = (max(math.ceil(h * scale), PYRAMID_MIN_SIZE),
                max(math.ceil(w * scale), PYRAMID_MIN_SIZE))
        if scale < 1:
            return _resize(stage(adaptive_avg_pool(x, size)), (h, w))
        if scale == 1:
            return stage(x)
        up = _resize(x, size)
        if size == (2 * h, 2 * w):    # conv then exact 2x2 pooling: one strided 4x4 conv
            return F.conv2d(up, _conv3_pool2(stage.weight), None, 2, 1, 1, stage.groups)
        return adaptive_avg_pool(stage(up), (h, w))

    def forward(self, x):
        x = self.projection_layer(x)                          # (N, p, h, w)
        _, p, h, w = _dims(x)
        norm, act = self.merge_layer[0].br                    # over the 5p concatenated channels
        fuse, fuse_bn, fuse_act = self.merge_layer[2].cbr     # fuse.weight: (p, 5, 3, 3)
        if norm.training and norm.num_batches_tracked is not None:
            norm.num_batches_tracked.add_(1)
        y = None
        for i, (scale, stage) in enumerate(zip(PYRAMID_SCALES, self.stages, strict=True)):
            b = _batch_norm_part(norm, self._branch(x, scale, stage, h, w), i * p)
            b = prelu(b, act.weight[i * p:(i + 1) * p])
            b = F.conv2d(b, fuse.weight[:, i:i + 1], None, 1, 1, 1, p)   # (N, p, h, w)
            y = b if y is None else y + b
        y = self.merge_layer[3](fuse_act(fuse_bn(y)))         # (N, cout, h, w)
        return y if self.br is None else self.br(y)


class SkipProjection(nn.Module):
    """Efficient point-wise conv for an encoder skip: grouped 3x3 conv (gcd(cin, cout) groups)
    + BN + PReLU, scaled per channel by a sigmoid gate of the globally pooled input.
    (N, cin, h, w) -> (N, cout, h, w)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.wt_layer = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False),
                                      nn.Sigmoid())
        self.expansion_layer = DecoderConv(cin, cout, 3, groups=math.gcd(cin, cout))

    def _expand(self, x):
        conv, bn, act = self.expansion_layer.cbr
        cin, groups = conv.in_channels, conv.groups
        if groups != conv.out_channels or cin == groups:
            return self.expansion_layer(x)
        # One output per group of k inputs: a depthwise conv, then each output sums its group
        # (a 1x1 conv with a 0/1 matrix). Runtimes run the pair several times faster than a
        # grouped conv with so few channels per group.
        k = cin // groups
        y = F.conv2d(x, conv.weight.reshape(cin, 1, 3, 3), None, 1, 1, 1, cin)  # (N, cin, h, w)
        group_sum = torch.eye(groups, dtype=x.dtype, device=x.device).repeat_interleave(k, 1)
        return act(bn(F.conv2d(y, group_sum[:, :, None, None])))          # (N, cout, h, w)

    def forward(self, x):
        return self._expand(x) * self.wt_layer(x)


class ESPNetv2(nn.Module):
    """ESPNetv2 segmentation at width ``s`` (0.5, 1.0, 1.5 or 2.0).

    num_classes: output channels (the Cityscapes checkpoints: 20, see ``CITYSCAPES_CLASSES``).
    pyramid_channels: width of the decoder's pyramids; default min(num_classes // 2, 16) as the
    authors chose it (10 for their 20-class checkpoints).
    output_stride: 1 returns logits at the input size (bilinear with aligned corners, as the
    checkpoints were trained); 2 returns the decoder's own logits at ceil(H/2) x ceil(W/2) for
    callers that resize anyway (the pipeline's postprocess), skipping the largest resize.
    """

    def __init__(self, num_classes: int, s: float = 2.0, pyramid_channels: int | None = None,
                 output_stride: int = 1):
        super().__init__()
        if s not in WIDTHS:
            raise ValueError(f"espnetv2: width s={s!r} not supported; allowed: "
                             f"{', '.join(map(str, WIDTHS))}")
        if output_stride not in (1, 2):
            raise ValueError(f"espnetv2: output_stride {output_stride!r} not supported; "
                             f"allowed: 1, 2")
        p = pyramid_channels if pyramid_channels is not None else min(num_classes // 2, 16)
        if p < 1:
            raise ValueError(f"espnetv2: pyramid_channels must be >= 1, got {p}")
        self.s = float(s)
        self.num_classes = num_classes
        self.output_stride = output_stride
        c1, c2, c3, c4 = WIDTHS[s]
        d1, d2, d3 = DECODER_WIDTHS
        self.base_net = EESPNet(s)
        self.bu_dec_l1 = PyramidPool(c4, p, d1)
        self.bu_dec_l2 = PyramidPool(d1, p, d2)
        self.bu_dec_l3 = PyramidPool(d2, p, d3)
        self.bu_dec_l4 = PyramidPool(d3, p, num_classes, last=True)
        self.merge_enc_dec_l2 = SkipProjection(c3, d1)
        self.merge_enc_dec_l3 = SkipProjection(c2, d2)
        self.merge_enc_dec_l4 = SkipProjection(c1, d3)
        self.bu_br_l2 = nn.Sequential(nn.BatchNorm2d(d1), PReLU(d1))
        self.bu_br_l3 = nn.Sequential(nn.BatchNorm2d(d2), PReLU(d2))
        self.bu_br_l4 = nn.Sequential(nn.BatchNorm2d(d3), PReLU(d3))

    @property
    def classifier(self) -> nn.Conv2d:
        """The final 1x1 conv (p -> num_classes, with bias)."""
        return self.bu_dec_l4.merge_layer[3]

    def forward(self, x):
        """(N, 3, H, W) normalized RGB -> (N, num_classes, H, W) logits (``output_stride`` 2:
        (N, num_classes, ceil(H/2), ceil(W/2)))."""
        l1, l2, l3, l4 = self.base_net(x)
        y = self.bu_dec_l1(l4)                                                   # 1/16
        y = self.bu_dec_l2(self.bu_br_l2(self.merge_enc_dec_l2(l3) + _resize(y, _hw(l3))))
        y = self.bu_dec_l3(self.bu_br_l3(self.merge_enc_dec_l3(l2) + _resize(y, _hw(l2))))
        y = self.bu_dec_l4(self.bu_br_l4(self.merge_enc_dec_l4(l1) + _resize(y, _hw(l1))))
        if self.output_stride == 2:
            return y                                                             # 1/2
        return _resize(y, _hw(x))                                                # (N, K, H, W)


def load_cityscapes_weights(model: ESPNetv2, path: str | Path) -> ESPNetv2:
    """Load one of the authors' Cityscapes checkpoints (``CITYSCAPES_WEIGHTS``) strictly into
    ``model``, built with ``num_classes=CITYSCAPES_CLASSES`` at the checkpoint's width; returns
    it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ESPNetv2 Cityscapes weights not found: {path}")
    if model.num_classes != CITYSCAPES_CLASSES:
        raise ValueError(f"{path}: the checkpoints have {CITYSCAPES_CLASSES} output channels; "
                         f"build with num_classes={CITYSCAPES_CLASSES} (then drop_background), "
                         f"not {model.num_classes}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"{path}: does not match ESPNetv2 s={model.s} ({first})") from None
    return model


def drop_background(model: ESPNetv2) -> ESPNetv2:
    """Keep the 19 Cityscapes classes: the classifier loses its background row (in place).

    The logits become the 20-channel ones without channel ``BACKGROUND``; the model is then
    ``ESPNetv2(19, s, pyramid_channels=CITYSCAPES_PYRAMID_CHANNELS)``.
    """
    old = model.classifier
    if old.out_channels != CITYSCAPES_CLASSES:
        raise ValueError(f"drop_background: expected {CITYSCAPES_CLASSES} output channels, "
                         f"got {old.out_channels}")
    new = nn.Conv2d(old.in_channels, BACKGROUND, 1, bias=True, device=old.weight.device,
                    dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[:BACKGROUND])
        new.bias.copy_(old.bias[:BACKGROUND])
    model.bu_dec_l4.merge_layer[3] = new
    model.num_classes = BACKGROUND
    return model


def cityscapes_espnetv2(s: float, weights_dir: str | Path, background: bool = False) -> ESPNetv2:
    """ESPNetv2 at width ``s`` with the authors' Cityscapes weights from ``weights_dir``, in eval
    mode: (N, 3, H, W) -> (N, 19, H, W) logits (20 with ``background``)."""
    model = ESPNetv2(CITYSCAPES_CLASSES, s, pyramid_channels=CITYSCAPES_PYRAMID_CHANNELS)
    load_cityscapes_weights(model, Path(weights_dir) / CITYSCAPES_WEIGHTS.format(s=float(s)))
    return (model if background else drop_background(model)).eval()


def init_from_cityscapes(model: ESPNetv2, path: str | Path,
                         sources: list[list[int]]) -> ESPNetv2:
    """Initialise ``model`` (any ``num_classes``, the checkpoint's width and
    ``pyramid_channels=CITYSCAPES_PYRAMID_CHANNELS``) from a Cityscapes checkpoint for
    fine-tuning on another label set: every layer but the classifier loads strictly; classifier
    row k is the mean of the checkpoint's rows ``sources[k]`` (Cityscapes train ids, e.g. from
    ``labels.LabelMap.sources_of``), so the new classes start where their Cityscapes
    counterparts are. A class with no source keeps its fresh initialisation. In place; returns
    ``model``."""
    if len(sources) != model.num_classes:
        raise ValueError(f"{path}: {len(sources)} class sources for a model with "
                         f"{model.num_classes} classes")
    if model.classifier.in_channels != CITYSCAPES_PYRAMID_CHANNELS:
        raise ValueError(f"{path}: the checkpoints need pyramid_channels="
                         f"{CITYSCAPES_PYRAMID_CHANNELS}, the model has "
                         f"{model.classifier.in_channels}")
    teacher = ESPNetv2(CITYSCAPES_CLASSES, model.s, pyramid_channels=CITYSCAPES_PYRAMID_CHANNELS)
    load_cityscapes_weights(teacher, path)
    state = teacher.state_dict()
    head = {f"bu_dec_l4.merge_layer.3.{k}": v for k, v in
            (("weight", state.pop("bu_dec_l4.merge_layer.3.weight")),
             ("bias", state.pop("bu_dec_l4.merge_layer.3.bias")))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if sorted(missing) != sorted(head) or unexpected:       # only the classifier may differ
        raise ValueError(f"{path}: does not match ESPNetv2 s={model.s} apart from the "
                         f"classifier (missing {missing[:3]}, unexpected {unexpected[:3]})")
    w, b = head["bu_dec_l4.merge_layer.3.weight"], head["bu_dec_l4.merge_layer.3.bias"]
    with torch.no_grad():
        for k, ids in enumerate(sources):
            if not ids:
                continue
            if max(ids) >= BACKGROUND or min(ids) < 0:
                raise ValueError(f"{path}: class source ids must be Cityscapes train ids "
                                 f"0..{BACKGROUND - 1}, got {ids}")
            model.classifier.weight[k] = w[ids].mean(0)
            model.classifier.bias[k] = b[ids].mean(0)
    return model
