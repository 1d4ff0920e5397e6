"""The engine interface: every runtime is one file behind these four methods.

    engine = load_engine("onnxruntime", "model.onnx", device="cpu")
    out = engine.infer(batch)      # see EngineSpec for what batch/out are
    engine.spec                    # EngineSpec: metadata, I/O formats, device
    engine.close()

Engines never do GPU work at import time; GPU resources are created in ``load`` and
released in ``close`` (or by using the engine as a context manager).
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..meta import ModelMeta

DEVICES = "cpu, cuda or cuda:N"


def parse_device(device: str) -> tuple[str, int | None]:
    """``"cpu"`` -> ("cpu", None), ``"cuda"`` -> ("cuda", None), ``"cuda:1"`` -> ("cuda", 1);
    ValueError naming the device for anything else. Whether the device exists is the
    engine's question (it raises naming its backend when it cannot run there)."""
    m = re.fullmatch(r"(cpu)|(cuda)(?::(\d+))?", str(device))
    if m is None:
        raise ValueError(f"unknown device {device!r}; use {DEVICES}")
    if m.group(1):
        return "cpu", None
    return "cuda", None if m.group(3) is None else int(m.group(3))


@dataclass(frozen=True)
class EngineSpec:
    backend: str            # torch | onnxruntime | openvino | tensorrt
    meta: ModelMeta         # class names, palette, input size, mean/std, input_format, output
    device: str             # cpu | cuda[:N]
    precision: str          # fp32 | fp16 | int8
    providers: tuple[str, ...] = ()   # e.g. ONNX Runtime execution providers actually used
    fixed_input_size: tuple[int, int] | None = None   # (H, W) when the graph takes only that

    @property
    def input_size(self) -> tuple[int, int]:
        return self.meta.input_size

    @property
    def input_format(self) -> str:
        """float_nchw: (N,3,H,W) float32 normalized RGB; uint8_nhwc_bgr: (N,H,W,3) raw frames."""
        return self.meta.input_format

    @property
    def output(self) -> str:
        """logits: (N,C,h,w) float; labels: (N,h,w) integer class ids (argmax in the graph)."""
        return self.meta.output


class Engine(ABC):
    """One loaded model on one runtime. ``infer`` takes and returns arrays of the runtime's kind:
    numpy on CPU; numpy or torch tensors (same device) on CUDA."""

    @classmethod
    @abstractmethod
    def load(cls, path: str, device: str = "cpu", **options) -> "Engine":
        ...

    @abstractmethod
    def infer(self, batch):
        ...

    @property
    @abstractmethod
    def spec(self) -> EngineSpec:
        ...

    @property
    def input_dtype(self) -> str:
        """numpy dtype name of the input this engine takes without a conversion: ``float32``,
        ``float16`` or ``uint8`` (device preprocessing writes its batch in it)."""
        return "uint8" if self.spec.input_format == "uint8_nhwc_bgr" else "float32"

    @property
    def channels_last(self) -> bool:
        """True when a float NCHW input in channels_last memory format is used without a
        transpose (device preprocessing then writes it that way)."""
        return False

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
