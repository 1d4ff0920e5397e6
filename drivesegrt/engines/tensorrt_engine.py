"""TensorRT backend: a built engine run with torch CUDA tensors as I/O buffers (no pycuda).

``load(path)`` takes an .onnx file (builds or reuses the cached engine, see ``trt_build``) or a
serialized engine built by ``drivesegrt build`` (metadata from the ``.json`` beside it).
``infer`` takes (N, 3, H, W) float or (N, H, W, 3) uint8 per ``spec.input_format``, as a torch
tensor (any device) or numpy, and returns the same kind: a torch CUDA tensor (a fresh tensor,
safe to keep) or numpy. Outputs: (N, C, h, w) float logits or (N, h, w) int32 labels.

Execution: ``execute_async_v3`` on a stream this engine owns (non-default), ordered after the
caller's current stream; I/O buffers are allocated per input shape and reused across frames;
output shapes come from the context after ``set_input_shape``, dtypes from the engine.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..meta import ModelMeta
from .base import Engine, EngineSpec


def _torch_dtype(trt, dtype):
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT8: torch.int8,
             trt.DataType.UINT8: torch.uint8, trt.DataType.BOOL: torch.bool}
    for name, tdt in (("INT64", torch.int64), ("BF16", torch.bfloat16)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = tdt
    if dtype not in table:
        raise ValueError(f"TensorRT tensor type {dtype} has no torch equivalent")
    return table[dtype]


class TensorRTEngine(Engine):
    def __init__(self, trt, engine, runtime, meta: ModelMeta, device: str):
        import torch

        self._trt = trt
        self._engine = engine
        self._runtime = runtime
        self._context = engine.create_execution_context()
        if self._context is None:
            raise ValueError("TensorRT could not create an execution context (GPU memory?)")
        self._device = torch.device(device)
        self._stream = torch.cuda.Stream(device=self._device)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"engine has {len(inputs)} inputs and {len(outputs)} outputs; "
                             f"drivesegrt engines have one of each")
        self._in, self._out = inputs[0], outputs[0]
        self._in_dtype = _torch_dtype(trt, engine.get_tensor_dtype(self._in))
        self._out_dtype = _torch_dtype(trt, engine.get_tensor_dtype(self._out))
        self._shape = None          # input shape the buffers are sized for
        self._in_buf = self._out_buf = None
        self._spec = EngineSpec(backend="tensorrt", meta=meta, device=str(self._device),
                                precision=meta.precision, providers=(f"TensorRT {trt.__version__}",))

    @classmethod
    def load(cls, path: str, device: str = "cuda", **options) -> "TensorRTEngine":
        """path: .onnx (build/reuse via trt_build.build_engine; ``options`` go there) or a
        serialized engine with its ``.json`` metadata beside it."""
        import torch

        from ..deploy.onnx_meta import read_meta_file
        from ..deploy.trt_build import (
            build_engine,
            import_tensorrt,
            load_serialized,
            read_engine_meta,
        )

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        trt = import_tensorrt()
        if not device.startswith("cuda") or not torch.cuda.is_available():
            raise ValueError(f"tensorrt engine needs a CUDA device (got {device!r}, CUDA "
                             f"available: {torch.cuda.is_available()})")
        dev = torch.device(device)
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if path.suffix.lower() == ".onnx":
            meta = read_meta_file(path)
            engine_path, _ = build_engine(path, device_index=index, **options)
        else:
            if options:
                raise ValueError(f"build options {sorted(options)} apply to .onnx inputs only")
            meta, engine_path = read_engine_meta(path), path
        with torch.cuda.device(index):
            logger = trt.Logger(trt.Logger.WARNING)
            loaded = load_serialized(trt, engine_path, logger)
            if loaded is None:
                raise ValueError(f"{engine_path}: TensorRT {trt.__version__} cannot deserialize "
                                 f"it (built by another TensorRT version or GPU?); rebuild it "
                                 f"from the ONNX")
            engine, runtime = loaded
            return cls(trt, engine, runtime, meta, f"cuda:{index}")

    @property
    def spec(self) -> EngineSpec:
        return self._spec

    @property
    def input_dtype(self) -> str:
        """dtype of the engine's input binding (a tensor of it is copied unconverted)."""
        return str(self._in_dtype).removeprefix("torch.")

    def _prepare(self, shape: tuple[int, ...]) -> None:
        """(Re)allocate buffers for a new input shape; reused while the shape stays."""
        import torch

        if shape == self._shape:
            return
        if not self._context.set_input_shape(self._in, shape):
            raise ValueError(f"input shape {shape} outside the engine's optimization profile")
        out_shape = tuple(self._context.get_tensor_shape(self._out))
        if any(d < 0 for d in out_shape):
            raise ValueError(f"TensorRT could not infer the output shape for input {shape}")
        self._in_buf = torch.empty(shape, dtype=self._in_dtype, device=self._device)
        self._out_buf = torch.empty(out_shape, dtype=self._out_dtype, device=self._device)
        if not (self._context.set_tensor_address(self._in, self._in_buf.data_ptr())
                and self._context.set_tensor_address(self._out, self._out_buf.data_ptr())):
            raise ValueError("TensorRT rejected the I/O buffer addresses")
        self._shape = shape

    def infer(self, batch):
        """(N, 3, H, W) float / (N, H, W, 3) uint8, torch or numpy -> output of the same kind."""
        import torch

        as_numpy = isinstance(batch, np.ndarray)
        x = torch.from_numpy(np.ascontiguousarray(batch)) if as_numpy else batch
        want_uint8 = self._spec.input_format == "uint8_nhwc_bgr"
        if x.dim() != 4 or (x.dtype == torch.uint8) != want_uint8:
            raise ValueError(f"tensorrt engine expects {self._spec.input_format} 4-D input, got "
                             f"{x.dtype} {tuple(x.shape)}")
        self._prepare(tuple(x.shape))
        caller = torch.cuda.current_stream(self._device)
        self._stream.wait_stream(caller)          # x may still be written on the caller's stream
        with torch.cuda.stream(self._stream):
            self._in_buf.copy_(x, non_blocking=True)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise ValueError("TensorRT execute_async_v3 failed; see the TensorRT log")
            out = self._out_buf.clone()
        if as_numpy:
            self._stream.synchronize()
            return out.cpu().numpy()
        caller.wait_stream(self._stream)
        out.record_stream(caller)
        return out

    def close(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        self._context = self._engine = self._runtime = None
        self._in_buf = self._out_buf = self._stream = None
