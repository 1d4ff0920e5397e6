"""ONNX Runtime backend: an exported (fp32, fp16 or Q/DQ int8) ONNX file on CPU or CUDA.

The model's metadata comes from the file (``metadata_props["drivesegrt"]``); ``infer`` takes
numpy in the graph's input format and returns numpy:

- ``float_nchw``: (N, 3, H, W) float32 normalized RGB -> (N, C, h, w) float32 logits
- ``uint8_nhwc_bgr``: (N, H, W, 3) uint8 BGR frames -> same outputs
- ``output == "labels"``: (N, h, w) int32 class ids instead of logits

On CUDA (the CUDA execution provider loaded and torch built with CUDA), ``infer`` also takes a
torch CUDA tensor and returns one, with no host round trip: IO binding binds the caller's
tensor by its device pointer and a preallocated torch output buffer, and ONNX Runtime runs on a
CUDA stream this engine owns (``user_compute_stream``), ordered after the caller's stream and
without a host sync (``disable_synchronize_execution_providers``); the caller's stream waits
for it. The returned tensor is the engine's output buffer: the next call overwrites it.
"""
from __future__ import annotations

import numpy as np

from ..deploy.onnx_meta import check_graph_io, load_onnx, read_meta
from .base import Engine, EngineSpec, parse_device

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
INPUT_DTYPES = {"float_nchw": np.float32, "uint8_nhwc_bgr": np.uint8}
# ONNX tensor type strings (NodeArg.type) -> numpy dtype, for IO binding.
ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
              "tensor(uint8)": np.uint8, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


class OnnxRuntimeEngine(Engine):
    def __init__(self, session, spec: EngineSpec, path: str, stream=None):
        self._session = session
        self._spec = spec
        self._path = path
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name
        self._dtype = INPUT_DTYPES[spec.meta.input_format]
        self._in_type = ONNX_TYPES.get(session.get_inputs()[0].type, self._dtype)
        self._stream = stream            # torch.cuda.Stream ORT runs on (IO binding), or None
        self._binding = None
        self._bound_shape = None         # input shape the output buffer is sized for
        self._out_buf = None

    @classmethod
    def load(cls, path: str, device: str = "cpu", intra_op_threads: int = 0,
             inter_op_threads: int = 0, allow_spinning: bool = False,
             **options) -> "OnnxRuntimeEngine":
        """Open ``path`` (an ONNX file written by ``drivesegrt export``/``calibrate``).

        device: ``cpu`` or ``cuda[:N]`` (the CUDA EP; ValueError naming the backend and the
        device when this onnxruntime build cannot provide it: no silent CPU fallback;
        ``spec.providers`` says which were used). intra_op_threads: 0 lets
        ONNX Runtime choose (one per physical core). allow_spinning: ORT's worker threads
        busy-wait after each run by default; in a pipeline that steals the cores decode, overlay
        and encode need (measured here: torch beside a spinning ORT session ran 10x slower), so
        it is off unless asked for (engine-only benchmarks may turn it on).
        """
        import onnxruntime as ort

        if options:
            raise ValueError(f"onnxruntime engine: unknown options {sorted(options)}")
        kind, index = parse_device(device)
        if kind == "cuda" and CUDA not in ort.get_available_providers():
            raise ValueError(f"backend onnxruntime cannot run on device {device!r}: this "
                             f"onnxruntime build has no CUDA execution provider (install "
                             f"onnxruntime-gpu, or use --device cpu)")
        proto = load_onnx(path)
        meta = read_meta(proto, where=str(path))
        fixed_hw = check_graph_io(proto, meta, where=str(path))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(intra_op_threads)
        opts.inter_op_num_threads = int(inter_op_threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning",
                                      "1" if allow_spinning else "0")
        providers: list = [CPU]
        stream = None
        if kind == "cuda":
            index = index or 0
            cuda_options = {"device_id": index}
            stream = _torch_stream(index)
            if stream is not None:
                cuda_options["user_compute_stream"] = str(stream.cuda_stream)
            providers = [(CUDA, cuda_options), CPU]
        try:
            session = ort.InferenceSession(proto.SerializeToString(), sess_options=opts,
                                           providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
            raise ValueError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        used = tuple(session.get_providers())
        if kind == "cuda" and CUDA not in used:       # ORT falls back to the CPU on its own
            raise ValueError(f"backend onnxruntime cannot run on device {device!r}: its CUDA "
                             f"execution provider did not load (CUDA/cuDNN libraries missing "
                             f"or no such GPU)")
        spec = EngineSpec(backend="onnxruntime", meta=meta, device=device,
                          precision=meta.precision, providers=used, fixed_input_size=fixed_hw)
        return cls(session, spec, str(path), stream if CUDA in used else None)

    @property
    def spec(self) -> EngineSpec:
        return self._spec

    @property
    def input_dtype(self) -> str:
        """dtype of the graph input: float32, float16 or uint8."""
        return np.dtype(self._in_type).name

    def infer(self, batch):
        """(N, 3, H, W) float32 or (N, H, W, 3) uint8 per ``spec.input_format``: numpy -> numpy;
        a torch tensor -> a torch tensor (IO binding on CUDA; via numpy on the CPU)."""
        if not isinstance(batch, np.ndarray):
            if self._stream is not None and getattr(batch, "is_cuda", False):
                return self._infer_bound(batch)
            if hasattr(batch, "detach"):                  # a torch tensor on the CPU
                import torch

                return torch.from_numpy(self.infer(batch.detach().cpu().numpy()))
            raise ValueError(f"onnxruntime engine takes numpy arrays or torch tensors, got "
                             f"{type(batch).__name__}")
        if batch.dtype != self._dtype or batch.ndim != 4:
            raise ValueError(f"{self._path}: expects {self._spec.input_format} "
                             f"({np.dtype(self._dtype).name}, 4-D), got {batch.dtype} "
                             f"{tuple(batch.shape)}")
        return self._session.run(None, {self._input: np.ascontiguousarray(batch)})[0]

    def _infer_bound(self, x):
        """torch CUDA tensor in, torch CUDA tensor out: IO binding on the engine's stream."""
        import onnxruntime as ort
        import torch

        index = self._stream.device.index or 0
        x = x.to(_torch_dtype(self._in_type)).contiguous()          # no copy when it already matches
        if x.dim() != 4:
            raise ValueError(f"{self._path}: expects a 4-D {self._spec.input_format} batch, "
                             f"got {tuple(x.shape)}")
        caller = torch.cuda.current_stream(self._stream.device)
        self._stream.wait_stream(caller)                   # x may still be written there
        shape = tuple(x.shape)
        if self._binding is None:
            self._binding = self._session.io_binding()
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        self._binding.bind_input(self._input, "cuda", index, self._in_type, list(shape),
                                 x.data_ptr())
        if shape != self._bound_shape:
            self._bind_output_buffer(index)
            self._bound_shape = shape
        self._session.run_with_iobinding(self._binding, self._run_options)
        caller.wait_stream(self._stream)
        x.record_stream(self._stream)                      # x was read on the engine's stream
        return self._out_buf

    def _bind_output_buffer(self, index: int) -> None:
        """Learn the output shape for the bound input (one run with an ORT-allocated output),
        then bind a torch buffer of that shape, reused while the input shape stays."""
        import torch

        self._binding.bind_output(self._output, "cuda", index)
        self._session.run_with_iobinding(self._binding)     # synchronizes: a one-off probe
        probe = self._binding.get_outputs()[0]
        out_type = ONNX_TYPES.get(probe.data_type())
        if out_type is None:
            raise ValueError(f"{self._path}: output type {probe.data_type()} is not supported")
        self._out_buf = torch.empty(tuple(probe.shape()), dtype=_torch_dtype(out_type),
                                    device=self._stream.device)
        self._binding.bind_output(self._output, "cuda", index, out_type,
                                  list(self._out_buf.shape), self._out_buf.data_ptr())

    def close(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        self._binding = self._out_buf = self._stream = None
        self._session = None


def _torch_dtype(np_type):
    import torch

    return getattr(torch, np.dtype(np_type).name)


def _torch_stream(index: int):
    """A CUDA stream of torch's for ONNX Runtime to run on, or None where torch has no CUDA
    (then tensors go through numpy)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.Stream(device=index)
