"""Engine registry: choose the backend explicitly by name (config or --backend)."""
from __future__ import annotations

import importlib

from .base import Engine, EngineSpec

# name -> "module:Class"; modules are imported only when chosen (openvino and tensorrt are optional).
BACKENDS = {
    "torch": "drivesegrt.engines.torch_engine:TorchEngine",
    "onnxruntime": "drivesegrt.engines.onnxruntime_engine:OnnxRuntimeEngine",
    "openvino": "drivesegrt.engines.openvino_engine:OpenVinoEngine",
    "tensorrt": "drivesegrt.engines.tensorrt_engine:TensorRTEngine",
}

# What `run`, `eval` and the Python API use when no backend is named.
DEFAULT_BACKEND = "onnxruntime"


def engine_class(backend: str) -> type[Engine]:
    try:
        target = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def load_engine(backend: str, path: str, device: str = "cpu", **options) -> Engine:
    return engine_class(backend).load(str(path), device=device, **options)


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Engine", "EngineSpec", "engine_class", "load_engine"]
