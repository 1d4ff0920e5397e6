"""Model zoo registry: ``build_model(name, num_classes, **widths)``.

Building never reads files or touches a GPU; pretrained backbones are loaded by training code.
"""
from __future__ import annotations

import importlib

import torch.nn as nn

# name -> "module:callable"; each callable is (num_classes, **kwargs) -> nn.Module whose
# forward maps (N, 3, H, W) float to (N, num_classes, h, w) logits.
MODELS = {
    "mobileseg": "drivesegrt.models.realtime:MobileSeg",
    "fcn32s": "drivesegrt.models.fcn:FCN32s",
    "fcn16s": "drivesegrt.models.fcn:FCN16s",
    "fcn8s": "drivesegrt.models.fcn:FCN8s",
    "segnet": "drivesegrt.models.segnet:SegNet",
    "unet": "drivesegrt.models.unet:UNet",
    "encdec": "drivesegrt.models.encdec:EncoderDecoder",
    "espnetv2": "drivesegrt.models.espnetv2:ESPNetv2",
}

# Models whose ONNX graph is specialised to the input size it was exported at: their layers
# compute sizes in Python (ESPNetv2's pyramid pooling), which the exporter writes as constants.
# They export one file per input size, never with dynamic H/W.
FIXED_SIZE_EXPORT = frozenset({"espnetv2"})


def available_models() -> list[str]:
    return list(MODELS)


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    try:
        target = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}") from None
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    module, attr = target.split(":")
    factory = getattr(importlib.import_module(module), attr)
    try:
        return factory(num_classes, **kwargs)
    except TypeError as e:
        raise ValueError(f"model {name!r}: bad options {sorted(kwargs)} ({e})") from None
