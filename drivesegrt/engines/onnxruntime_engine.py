"""ONNX Runtime backend: an exported (fp32, fp16 or Q/DQ int8) ONNX file on CPU or CUDA.

The model's metadata comes from the file (``metadata_props["drivesegrt"]``); ``infer`` takes
numpy in the graph's input format and returns numpy:

- ``float_nchw``: (N, 3, H, W) float32 normalized RGB -> (N, C, h, w) float32 logits
- ``uint8_nhwc_bgr``: (N, H, W, 3) uint8 BGR frames -> same outputs
- ``output == "labels"``: (N, h, w) int32 class ids instead of logits
"""
from __future__ import annotations

import numpy as np

from ..onnx_meta import load_onnx, read_meta
from .base import Engine, EngineSpec

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
INPUT_DTYPES = {"float_nchw": np.float32, "uint8_nhwc_bgr": np.uint8}


class OnnxRuntimeEngine(Engine):
    def __init__(self, session, spec: EngineSpec, path: str):
        self._session = session
        self._spec = spec
        self._path = path
        self._input = session.get_inputs()[0].name
        self._dtype = INPUT_DTYPES[spec.meta.input_format]

    @classmethod
    def load(cls, path: str, device: str = "cpu", intra_op_threads: int = 0,
             inter_op_threads: int = 0, **options) -> "OnnxRuntimeEngine":
        """Open ``path`` (an ONNX file written by ``drivesegrt export``/``calibrate``).

        device: ``cpu`` or ``cuda[:N]`` (CUDA EP when this onnxruntime build has it, CPU
        fallback otherwise; ``spec.providers`` says which were used). intra_op_threads: 0 lets
        ONNX Runtime choose (one per physical core).
        """
        import onnxruntime as ort

        if options:
            raise ValueError(f"onnxruntime engine: unknown options {sorted(options)}")
        if not (device == "cpu" or device.startswith("cuda")):
            raise ValueError(f"onnxruntime engine: unknown device {device!r} (cpu or cuda[:N])")
        proto = load_onnx(path)
        meta = read_meta(proto, where=str(path))
        if meta.input_format not in INPUT_DTYPES:
            raise ValueError(f"{path}: unknown input_format {meta.input_format!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(intra_op_threads)
        opts.inter_op_num_threads = int(inter_op_threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers: list = [CPU]
        if device.startswith("cuda") and CUDA in ort.get_available_providers():
            index = int(device.split(":")[1]) if ":" in device else 0
            providers = [(CUDA, {"device_id": index}), CPU]
        try:
            session = ort.InferenceSession(proto.SerializeToString(), sess_options=opts,
                                           providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
            raise ValueError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        used = tuple(session.get_providers())
        spec = EngineSpec(backend="onnxruntime", meta=meta,
                          device=device if CUDA in used else "cpu",
                          precision=meta.precision, providers=used)
        return cls(session, spec, str(path))

    @property
    def spec(self) -> EngineSpec:
        return self._spec

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 or (N, H, W, 3) uint8 per ``spec.input_format`` -> numpy output."""
        if not isinstance(batch, np.ndarray):
            raise ValueError(f"onnxruntime engine takes numpy arrays, got {type(batch).__name__}")
        if batch.dtype != self._dtype or batch.ndim != 4:
            raise ValueError(f"{self._path}: expects {self._spec.input_format} "
                             f"({np.dtype(self._dtype).name}, 4-D), got {batch.dtype} "
                             f"{tuple(batch.shape)}")
        return self._session.run(None, {self._input: np.ascontiguousarray(batch)})[0]

    def close(self) -> None:
        self._session = None
