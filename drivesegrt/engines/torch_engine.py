"""PyTorch eager engine: a drivesegrt checkpoint run in eval/inference mode.

numpy in -> numpy float32 out (a host round trip; what the CPU pipeline uses). torch tensors in
-> torch tensors out on the engine's device, nothing copied to the host (the CUDA pipeline).

``compile`` (any device, off by default) runs the model through ``torch.compile`` (inductor);
the first call of each input shape compiles.

On CUDA, three options (all off by default, chosen explicitly by the caller/config):

- ``fp16``: weights and activations in float16; tensor outputs are float16 logits.
- ``channels_last``: weights in NHWC memory format (faster convolutions on tensor cores); a
  channels_last input (``DevicePreprocessor`` writes one) is used without a transpose.
- ``cuda_graphs``: the forward pass of each input shape is captured once in a
  ``torch.cuda.CUDAGraph`` (warm-up on a side stream, then capture, as the torch docs
  prescribe) and replayed: one launch per frame instead of one per kernel. Tensor calls copy
  the input into the graph's static input and return the graph's static output, which the
  next call overwrites (use it, or clone it, before calling again). numpy calls run eagerly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..deploy.onnx_meta import is_onnx_file
from ..meta import ModelMeta
from ..models.checkpoint import load_model
from .base import Engine, EngineSpec, parse_device

GRAPH_WARMUP_ITERS = 3


def _check_device(device: str) -> torch.device:
    """The torch device for ``device`` (cpu, cuda, cuda:N); ValueError naming the backend and
    the device when this machine cannot provide it."""
    kind, index = parse_device(device)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"backend torch cannot run on device {device!r}: CUDA is not "
                             f"available here (torch {torch.__version__})")
        if index is not None and index >= torch.cuda.device_count():
            raise ValueError(f"backend torch cannot run on device {device!r}: this machine "
                             f"has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(device)


@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    input: torch.Tensor          # (N, 3, H, W) static input (engine dtype / memory format)
    output: torch.Tensor         # (N, C, h, w) static output


class TorchEngine(Engine):
    def __init__(self, model: torch.nn.Module, meta: ModelMeta, device: str = "cpu",
                 fp16: bool = False, channels_last: bool = False, cuda_graphs: bool = False,
                 compile: bool = False):
        if meta.input_format != "float_nchw":
            raise ValueError(f"torch engine takes float_nchw input; the model says "
                             f"{meta.input_format!r}")
        self._device = _check_device(device)
        if self._device.type != "cuda" and (fp16 or cuda_graphs):
            raise ValueError(f"torch engine: fp16 and cuda_graphs need a CUDA device "
                             f"(device is {device!r})")
        self._dtype = torch.float16 if fp16 else torch.float32
        self._format = torch.channels_last if channels_last else torch.contiguous_format
        self._model = model.to(self._device, self._dtype, memory_format=self._format).eval()
        if compile:
            self._model = torch.compile(self._model)
        self._use_graphs = bool(cuda_graphs)
        self._graphs: dict[tuple[int, ...], _Graph] = {}
        self._spec = EngineSpec(backend="torch", meta=meta, device=str(self._device),
                                precision="fp16" if fp16 else "fp32")

    @classmethod
    def load(cls, path: str, device: str = "cpu", fp16: bool = False,
             channels_last: bool = False, cuda_graphs: bool = False, compile: bool = False,
             **options) -> "TorchEngine":
        if options:
            raise ValueError(f"torch engine: unknown options {sorted(options)}")
        _check_device(device)
        try:
            model, meta = load_model(path, "cpu")
        except ValueError:
            if is_onnx_file(path):
                raise ValueError(f"{path}: an ONNX file; the torch backend loads .pt "
                                 f"checkpoints (use --backend onnxruntime or openvino)") from None
            raise
        return cls(model, meta, device, fp16=fp16, channels_last=channels_last,
                   cuda_graphs=cuda_graphs, compile=compile)

    @property
    def spec(self) -> EngineSpec:
        return self._spec

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def input_dtype(self) -> str:
        """dtype a tensor input should have to be used without a conversion."""
        return str(self._dtype).removeprefix("torch.")

    @property
    def channels_last(self) -> bool:
        return self._format is torch.channels_last

    def _to_input(self, x: torch.Tensor) -> torch.Tensor:
        """On the engine's device, dtype and memory format; no copy when ``x`` already is."""
        return x.to(self._device, self._dtype, non_blocking=True, memory_format=self._format)

    def infer(self, batch):
        """(N,3,H,W) float -> (N,C,h,w) logits: numpy float32 -> numpy float32, torch -> torch on
        the engine's device (float16 with ``fp16``; the graph's static output with
        ``cuda_graphs``)."""
        if isinstance(batch, np.ndarray):
            with torch.inference_mode():
                out = self._model(self._to_input(torch.from_numpy(batch)))
            return out.float().cpu().numpy()
        with torch.inference_mode():
            if self._use_graphs:
                return self._replay(batch)
            return self._model(self._to_input(batch))

    def _replay(self, x: torch.Tensor) -> torch.Tensor:
        g = self._graphs.get(tuple(x.shape))
        if g is None:
            g = self._graphs[tuple(x.shape)] = self._capture(tuple(x.shape))
        g.input.copy_(x)                 # on the caller's current stream, like the replay
        g.graph.replay()
        return g.output

    def _capture(self, shape: tuple[int, ...]) -> _Graph:
        """Warm up on a side stream (lazy init, cuDNN algorithm choice), then capture."""
        static_in = torch.zeros(shape, dtype=self._dtype, device=self._device,
                                memory_format=self._format)
        current = torch.cuda.current_stream(self._device)
        side = torch.cuda.Stream(device=self._device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_ITERS):
                self._model(static_in)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other pipeline threads may use CUDA (e.g. a second pipeline) meanwhile.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self._model(static_in)
        return _Graph(graph, static_in, static_out)

    def close(self) -> None:
        if self._graphs and self._device.type == "cuda":
            torch.cuda.synchronize(self._device)  # no replay may still be running
        self._graphs = {}
        self._model = None
