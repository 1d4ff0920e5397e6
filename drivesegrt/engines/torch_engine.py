"""PyTorch eager engine: a drivesegrt checkpoint run in eval/inference mode.

numpy in, numpy out on CPU (torch tensors in give torch tensors out, on the engine's device).
fp16/channels_last on CUDA land with the GPU pipeline; ``device`` is already real.
"""
from __future__ import annotations

import numpy as np
import torch

from ..checkpoint import load_model
from ..meta import ModelMeta
from .base import Engine, EngineSpec


def _check_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported by the torch engine; use cpu or cuda")
    return dev


class TorchEngine(Engine):
    def __init__(self, model: torch.nn.Module, meta: ModelMeta, device: str = "cpu"):
        if meta.input_format != "float_nchw":
            raise ValueError(f"torch engine takes float_nchw input; the model says "
                             f"{meta.input_format!r}")
        self._device = _check_device(device)
        self._model = model.to(self._device).eval()
        self._spec = EngineSpec(backend="torch", meta=meta, device=str(self._device),
                                precision="fp32")

    @classmethod
    def load(cls, path: str, device: str = "cpu", **options) -> "TorchEngine":
        if options:
            raise ValueError(f"torch engine: unknown options {sorted(options)}")
        _check_device(device)
        model, meta = load_model(path, "cpu")
        return cls(model, meta, device)

    @property
    def spec(self) -> EngineSpec:
        return self._spec

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    def infer(self, batch):
        """(N,3,H,W) float32 -> (N,C,h,w) float32 logits (numpy in → numpy out)."""
        as_numpy = isinstance(batch, np.ndarray)
        x = torch.from_numpy(batch) if as_numpy else batch
        with torch.inference_mode():
            out = self._model(x.to(self._device, non_blocking=True))
        return out.cpu().numpy() if as_numpy else out

    def close(self) -> None:
        self._model = None
