"""``drivesegrt convert``: a public checkpoint -> a drivesegrt checkpoint (weights + metadata).

    drivesegrt convert --espnetv2-cityscapes FILE.pth --s 1.0 --input-size 360 480 --out CKPT.pt

Today's one source: the ESPNetv2 authors' Cityscapes checkpoints (sacmehta/EdgeNets, MIT,
Copyright (c) 2021 Sachin Mehta), loaded strictly, background channel dropped: a 19-class
``cityscapes19`` model that ``run``, ``eval``, ``export`` and ``calibrate`` take like any other.
"""
from __future__ import annotations

from pathlib import Path

from ..labels import CITYSCAPES19
from ..meta import ModelMeta
from ..models.checkpoint import save_checkpoint


def add_arguments(p) -> None:
    p.add_argument("--espnetv2-cityscapes", required=True, metavar="FILE.pth",
                   help="an ESPNetv2 Cityscapes checkpoint of the authors "
                        "(espnetv2_s_<s>_city_1024x512.pth)")
    p.add_argument("--s", type=float, required=True, help="its width: 0.5, 1.0, 1.5 or 2.0")
    p.add_argument("--input-size", type=int, nargs=2, default=(360, 480), metavar=("H", "W"),
                   help="(H, W) the model is deployed at (default 360 480)")
    p.add_argument("--output-stride", type=int, default=2, choices=(1, 2),
                   help="2 (default): logits at half the input size, the pipeline resizes them")
    p.add_argument("--out", required=True, help="output checkpoint (.pt)")


def convert_espnetv2_cityscapes(path: str | Path, s: float, input_size: tuple[int, int],
                                out: str | Path, output_stride: int = 2) -> ModelMeta:
    """The authors' checkpoint ``path`` at width ``s`` -> a 19-class checkpoint at ``out``;
    returns its metadata."""
    from ..models.espnetv2 import (
        CITYSCAPES_CLASSES,
        CITYSCAPES_PYRAMID_CHANNELS,
        ESPNetv2,
        drop_background,
        load_cityscapes_weights,
    )

    if min(input_size) < 8:
        raise ValueError(f"--input-size must be >= 8, got {list(input_size)}")
    model = ESPNetv2(CITYSCAPES_CLASSES, s, CITYSCAPES_PYRAMID_CHANNELS, output_stride)
    drop_background(load_cityscapes_weights(model, path)).eval()
    meta = ModelMeta.for_label_set(
        "espnetv2", CITYSCAPES19, input_size=tuple(input_size),
        arch_kwargs={"s": float(s), "pyramid_channels": CITYSCAPES_PYRAMID_CHANNELS,
                     "output_stride": output_stride})
    save_checkpoint(out, model, meta)
    return meta


def main(args) -> int:
    meta = convert_espnetv2_cityscapes(args.espnetv2_cityscapes, args.s, tuple(args.input_size),
                                       args.out, args.output_stride)
    print(f"wrote {args.out} (espnetv2 s={args.s}, {meta.label_set}, "
          f"input {meta.input_size[0]}x{meta.input_size[1]})")
    return 0
