"""From a model name or file to a ready Segmenter: bundled models, engine options, the choice of
CPU or CUDA segmenter. ``run``, ``eval``, ``bench`` and the Python API all load through here.

    seg = load_segmenter()                              # the bundled default, ONNX Runtime, CPU
    seg = load_segmenter("camvid", backend="torch")     # a bundled model by name
    seg = load_segmenter("runs/train/best.pt", backend="torch", device="cuda")
"""
from __future__ import annotations

from pathlib import Path

from ..engines import BACKENDS, DEFAULT_BACKEND, Engine, load_engine
from .segmenter import Segmenter
from .temporal import TemporalSpec, parse_temporal

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_MODEL = "camvid"
# Bundled models by name: the torch checkpoint, its ONNX export with normalization in the graph
# (uint8 frames in, logits out; tests/test_weights.py checks that they agree) and its CamVid test
# scores as ``drivesegrt eval --json`` wrote them (``drivesegrt models`` shows them). torch loads
# the checkpoint; ONNX Runtime, OpenVINO and TensorRT load the export.
BUNDLED = {
    # MobileSeg trained on CamVid (11 classes)
    "camvid": {"torch": WEIGHTS / "mobileseg_camvid.pt", "onnx": WEIGHTS / "mobileseg_camvid.onnx",
               "scores": WEIGHTS / "mobileseg_camvid.camvid_test.json"},
    # ESPNetv2 s=1.5 with the authors' public Cityscapes weights as they are (19 classes)
    "cityscapes": {"torch": WEIGHTS / "espnetv2_cityscapes.pt",
                   "onnx": WEIGHTS / "espnetv2_cityscapes.onnx",
                   "scores": WEIGHTS / "espnetv2_cityscapes.camvid_test.json"},
    # ESPNetv2 s=2.0 fine-tuned from the Cityscapes weights on CamVid (11 classes;
    # configs/espnetv2_camvid.yaml, training log espnetv2_camvid.train_log.jsonl)
    "camvid-espnetv2": {"torch": WEIGHTS / "espnetv2_camvid.pt",
                        "onnx": WEIGHTS / "espnetv2_camvid.onnx",
                        "scores": WEIGHTS / "espnetv2_camvid.camvid_test.json"},
}
# The (dataset, split) each bundled model's checkpoint was chosen on: scores there are not
# accuracy claims (eval says so).
SELECTED_ON = {"camvid": ("camvid", "val"), "camvid-espnetv2": ("camvid", "val")}


def model_path(model: str | Path | None = None, backend: str = DEFAULT_BACKEND) -> Path:
    """The file ``backend`` loads for ``model``: a bundled name (None: the default) or a path.

    >>> model_path(None, "torch").name
    'mobileseg_camvid.pt'
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    name = DEFAULT_MODEL if model is None or str(model) == "" else str(model)
    if name in BUNDLED:
        path = BUNDLED[name]["torch" if backend == "torch" else "onnx"]
        if not path.is_file():
            raise FileNotFoundError(f"bundled model {name!r} is missing its file {path} "
                                    f"(reinstall drivesegrt, or pass --model PATH)")
        return path
    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {name} (bundled models: "
                                f"{', '.join(BUNDLED)})")
    return path


def engine_options(backend: str, device: str = "cpu", threads: int = 0, fp16: bool = True,
                   cuda_graphs: bool = False) -> dict:
    """``load_engine`` options for ``backend`` on ``device``, as ``run`` uses them.

    threads: intra-op threads of ONNX Runtime / OpenVINO (0: the runtime's default). On CUDA the
    torch engine runs fp16 (``fp16``) in channels_last, optionally replaying a CUDA graph;
    ONNX Runtime and TensorRT take their precision from the model file."""
    options: dict = {}
    if backend == "onnxruntime" and threads:
        options["intra_op_threads"] = threads
    if backend == "openvino" and threads:
        options["threads"] = threads
    if backend == "torch" and device.startswith("cuda"):
        options.update(fp16=fp16, channels_last=True, cuda_graphs=cuda_graphs)
    return options


def open_engine(model: str | Path | None = None, backend: str = DEFAULT_BACKEND,
                device: str = "cpu", **options) -> Engine:
    """Load ``model`` (see :func:`model_path`) on ``backend``; a runtime that is not installed
    is a ValueError naming the backend."""
    path = model_path(model, backend)
    try:
        return load_engine(backend, str(path), device=device, **options)
    except ImportError as e:
        raise ValueError(f"backend {backend!r} is not available here ({e})") from None


def make_segmenter(engine: Engine, filter_mode: str = "linear", resize: str = "stretch",
                   remap: str | None = None, input_size: tuple[int, int] | None = None,
                   overlay_alpha: float | None = None, temporal: TemporalSpec | None = None,
                   confidence: bool = False) -> Segmenter:
    """The Segmenter for the engine's device: ``CudaSegmenter`` (pre/postprocess and the
    overlay blend on the GPU, ``overlay_alpha`` its opacity) when the engine runs on CUDA and
    torch can use it, else the CPU :class:`Segmenter` (``overlay_alpha`` unused: the publish
    stage blends; e.g. ONNX Runtime's CUDA EP beside a CPU-only torch takes numpy).
    ``temporal`` / ``confidence``: see Segmenter; the CUDA path has neither (ValueError)."""
    if engine.spec.device.startswith("cuda") and _torch_has_cuda():
        from .cuda.segmenter import CudaSegmenter

        if temporal is not None or confidence:
            wanted = "temporal smoothing" if temporal is not None else "confidence maps"
            raise ValueError(f"{wanted} is not available on the CUDA path (device "
                             f"{engine.spec.device}); use --device cpu")

        return CudaSegmenter(engine, filter_mode, resize, remap, input_size,
                             overlay_alpha=overlay_alpha)
    return Segmenter(engine, filter_mode, resize, remap, input_size, temporal, confidence)


def _torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def load_segmenter(model: str | Path | None = None, backend: str = DEFAULT_BACKEND,
                   device: str = "cpu", *, filter_mode: str = "linear", resize: str = "stretch",
                   remap: str | None = None, input_size: tuple[int, int] | None = None,
                   overlay_alpha: float | None = None, threads: int = 0, fp16: bool = True,
                   cuda_graphs: bool = False, temporal: str | None = None,
                   scene_cut: float = 40.0, confidence: bool = False) -> Segmenter:
    """A warmed-up Segmenter for ``model`` (a bundled name such as ``"camvid"``, a ``.pt``
    checkpoint or an ``.onnx`` file; None: the bundled default) on ``backend`` and ``device``.

    ``seg(frame)`` then maps an (H, W, 3) uint8 BGR frame to (H, W) uint8 class ids;
    ``seg.class_names`` and ``seg.palette`` name and color them. The other arguments are as in
    ``drivesegrt run`` (see config.yaml): ``temporal`` is ``--temporal``'s text
    (``"ema:0.5:flow"``), ``scene_cut`` its cut threshold, ``confidence`` makes results carry
    the top-class probability map. Close it with ``seg.close(); seg.engine.close()``.
    """
    spec = parse_temporal(temporal, scene_cut) if temporal is not None else None
    if threads and backend == "torch":       # other backends never import torch on the CPU
        import torch

        torch.set_num_threads(threads)
    engine = open_engine(model, backend, device,
                         **engine_options(backend, device, threads, fp16, cuda_graphs))
    try:
        seg = make_segmenter(engine, filter_mode, resize, remap, input_size, overlay_alpha,
                             spec, confidence)
        seg.warmup()
    except BaseException:
        engine.close()
        raise
    return seg
