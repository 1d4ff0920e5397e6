"""OpenVINO backend: an exported (fp32, fp16 or Q/DQ int8) ONNX file on an x86 CPU.

OpenVINO reads the ONNX file itself (no conversion step, no file written). It takes the same
graphs as :mod:`.onnxruntime_engine`, with the same I/O formats (``float_nchw`` /
``uint8_nhwc_bgr`` in, logits or labels out) and numpy in/out. Q/DQ pairs become OpenVINO
FakeQuantize ops that its low-precision transformations run as int8 kernels, depthwise
convolutions included, which is where it beats ONNX Runtime's int8 on this network (see
benchmarks/RESULTS.md).

The model is compiled for the static shape of the first batch (static shapes are OpenVINO's
fast path) and recompiled when the batch shape changes; the last few compiled shapes are kept.
Inference precision is pinned to f32, so an fp32 graph is not silently run in bf16 on CPUs
that have it. Its threads are not pinned to cores (they share them with the pipeline's).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..deploy.onnx_meta import check_graph_io, load_onnx, read_meta
from .base import Engine, EngineSpec

INPUT_DTYPES = {"float_nchw": np.float32, "uint8_nhwc_bgr": np.uint8}
KEEP_SHAPES = 4          # compiled models kept for different batch shapes
NOT_INSTALLED = "OpenVINO is not installed (pip install 'drivesegrt[openvino]')"


class OpenVinoEngine(Engine):
    def __init__(self, core, model, spec: EngineSpec, path: str, config: dict):
        self._core = core
        self._model = model              # ov.Model as read (dynamic batch/H/W)
        self._spec = spec
        self._path = path
        self._config = config
        self._dtype = INPUT_DTYPES[spec.meta.input_format]
        self._requests: OrderedDict[tuple, object] = OrderedDict()   # shape -> InferRequest

    @classmethod
    def load(cls, path: str, device: str = "cpu", threads: int = 0,
             **options) -> "OpenVinoEngine":
        """Open ``path`` (an ONNX file written by ``drivesegrt export``/``calibrate``).

        device: ``cpu`` only (OpenVINO's GPU plugin is for Intel GPUs). threads: inference
        threads, 0 lets OpenVINO choose (one per physical core).
        """
        if options:
            raise ValueError(f"openvino engine: unknown options {sorted(options)}")
        if device != "cpu":
            raise ValueError(f"backend openvino cannot run on device {device!r}: cpu only "
                             f"(use --backend onnxruntime or tensorrt on CUDA)")
        try:
            import openvino as ov
        except ImportError:
            raise ValueError(NOT_INSTALLED) from None
        proto = load_onnx(path)
        meta = read_meta(proto, where=str(path))
        fixed_hw = check_graph_io(proto, meta, where=str(path))
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as e:  # OpenVINO raises RuntimeError with a multi-line report
            raise ValueError(f"{path}: OpenVINO cannot read it ({_first_line(e)})") from None
        # No CPU pinning: its threads share the cores with the pipeline's own (decode, publish,
        # the encoder) and other processes; pinned, each inference also paid for
        # sched_setaffinity calls (benchmarks/RESULTS.md, "CPU work per frame").
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                  "ENABLE_CPU_PINNING": False}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        spec = EngineSpec(backend="openvino", meta=meta, device="cpu", precision=meta.precision,
                          providers=(f"OpenVINO {ov.get_version().split('-')[0]} CPU",),
                          fixed_input_size=fixed_hw)
        return cls(core, model, spec, str(path), config)

    @property
    def spec(self) -> EngineSpec:
        return self._spec

    def _request(self, shape: tuple):
        """The infer request compiled for this input shape (compiled on first use)."""
        request = self._requests.get(shape)
        if request is not None:
            self._requests.move_to_end(shape)
            return request
        model = self._model.clone()
        model.reshape(list(shape))
        try:
            compiled = self._core.compile_model(model, "CPU", self._config)
        except Exception as e:
            raise ValueError(f"{self._path}: OpenVINO cannot compile it for input shape "
                             f"{shape} ({_first_line(e)})") from None
        request = compiled.create_infer_request()
        self._requests[shape] = request
        if len(self._requests) > KEEP_SHAPES:
            self._requests.popitem(last=False)
        return request

    def infer(self, batch):
        """(N, 3, H, W) float32 or (N, H, W, 3) uint8 per ``spec.input_format`` -> numpy (a new
        array each call: callers may keep it while the next batch runs)."""
        if hasattr(batch, "detach"):                       # a torch tensor on the CPU
            import torch

            return torch.from_numpy(self.infer(batch.detach().cpu().numpy()))
        if not isinstance(batch, np.ndarray) or batch.dtype != self._dtype or batch.ndim != 4:
            got = (f"{batch.dtype} {tuple(batch.shape)}" if isinstance(batch, np.ndarray)
                   else type(batch).__name__)
            raise ValueError(f"{self._path}: expects {self._spec.input_format} "
                             f"({np.dtype(self._dtype).name}, 4-D), got {got}")
        import openvino as ov

        batch = np.ascontiguousarray(batch)
        request = self._request(batch.shape)
        request.set_input_tensor(ov.Tensor(batch, shared_memory=True))    # no input copy
        request.infer()
        return request.get_output_tensor(0).data.copy()

    def close(self) -> None:
        self._requests.clear()
        self._model = self._core = None


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"
