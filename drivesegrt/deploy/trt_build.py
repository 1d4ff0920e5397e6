"""ONNX -> serialized TensorRT engine (TensorRT 10.x and 11.x), with an engine cache.

    drivesegrt build --model FILE.onnx [--precision fp32|fp16|int8] [--min NxCxHxW]
                     [--opt ...] [--max ...] [--workspace MB] [--cache-dir DIR] [--device N]

Precision comes from the ONNX file, as TensorRT 11 requires (strongly typed networks only):
fp32 from an fp32 export, fp16 from ``export --fp16``, int8 from ``calibrate`` (Q/DQ). Every
build is strongly typed; the one exception is ``--precision fp16`` on an fp32 ONNX, which
TensorRT 10.x still builds weakly typed with ``BuilderFlag.FP16`` (deprecated there, removed in
11, where it is an error that says to export with ``--fp16``).

Engine cache: ``<cache-dir>/<onnx stem>.<precision>.<key>.engine`` where key hashes the ONNX
sha256, TensorRT version, GPU name + compute capability, precision, the profile (min/opt/max)
and the workspace limit; a ``.json`` beside it records those fields and the model metadata. A
changed field gives another file name, so a mismatch rebuilds; a cached file TensorRT cannot
deserialize is rebuilt too. The timing cache (``timing.<trt>.<gpu>.cache``) lives beside them.

TensorRT is imported lazily: only this module and the tensorrt engine need it.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..meta import ModelMeta
from .onnx_meta import read_meta_file

PRECISIONS = ("fp32", "fp16", "int8")
NOT_INSTALLED = ("TensorRT is not installed (pip install drivesegrt[tensorrt] on a machine with "
                 "NVIDIA's index)")
DEFAULT_WORKSPACE_MB = 1024
DEFAULT_MAX_BATCH = 4


def import_tensorrt():
    """The ``tensorrt`` module, or ValueError with how to install it."""
    try:
        import tensorrt
    except ImportError:
        raise ValueError(NOT_INSTALLED) from None
    return tensorrt


def trt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


@dataclass(frozen=True)
class BuildRecipe:
    """What, besides the ONNX bytes and the machine, determines an engine."""
    precision: str                   # fp32 | fp16 | int8
    min_shape: tuple[int, ...]       # input shape, e.g. (1, 3, 360, 480)
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    workspace_mb: int


@dataclass(frozen=True)
class Target:
    """The build machine: TensorRT version and GPU."""
    trt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]

    @property
    def tag(self) -> str:
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu_name).strip("-").lower()
        return f"trt{self.trt_version}.{gpu}.sm{self.compute_capability[0]}{self.compute_capability[1]}"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_fields(onnx_sha256: str, target: Target, recipe: BuildRecipe) -> dict:
    return {"onnx_sha256": onnx_sha256, "tensorrt": target.trt_version, "gpu": target.gpu_name,
            "compute_capability": list(target.compute_capability),
            "precision": recipe.precision, "min": list(recipe.min_shape),
            "opt": list(recipe.opt_shape), "max": list(recipe.max_shape),
            "workspace_mb": recipe.workspace_mb}


def cache_key(onnx_sha256: str, target: Target, recipe: BuildRecipe) -> str:
    """16 hex digits identifying (ONNX, TensorRT, GPU, precision, profile, workspace)."""
    blob = json.dumps(cache_fields(onnx_sha256, target, recipe), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def engine_file(onnx_path: str | Path, cache_dir: str | Path, key: str, precision: str) -> Path:
    return Path(cache_dir) / f"{Path(onnx_path).stem}.{precision}.{key}.engine"


def parse_shape(text: str) -> tuple[int, ...]:
    """'1x3x360x480' -> (1, 3, 360, 480); ValueError naming the text otherwise."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"bad shape {text!r}; expected e.g. 1x3x360x480") from None
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"bad shape {text!r}; expected 4 positive dims, e.g. 1x3x360x480")
    return dims


def input_shape(meta: ModelMeta, batch: int, hw: tuple[int, int] | None = None) -> tuple:
    """The graph's input shape for ``batch`` frames: (N,3,H,W) or (N,H,W,3) per input_format."""
    h, w = hw or meta.input_size
    return (batch, h, w, 3) if meta.input_format == "uint8_nhwc_bgr" else (batch, 3, h, w)


def make_recipe(meta: ModelMeta, precision: str | None = None, min_shape=None, opt_shape=None,
                max_shape=None, workspace_mb: int = DEFAULT_WORKSPACE_MB) -> BuildRecipe:
    """Defaults: the ONNX's own precision; batch 1..DEFAULT_MAX_BATCH (opt 1) at input_size."""
    precision = precision or meta.precision
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    if workspace_mb < 1:
        raise ValueError(f"--workspace must be >= 1 MB, got {workspace_mb}")
    mn = tuple(min_shape) if min_shape else input_shape(meta, 1)
    op = tuple(opt_shape) if opt_shape else input_shape(meta, 1)
    mx = tuple(max_shape) if max_shape else input_shape(meta, DEFAULT_MAX_BATCH)
    if not all(a <= b <= c for a, b, c in zip(mn, op, mx)):
        raise ValueError(f"profile must satisfy min <= opt <= max per dim: {mn} {op} {mx}")
    return BuildRecipe(precision, mn, op, mx, int(workspace_mb))


def current_target(trt, device_index: int = 0) -> Target:
    import torch

    if not torch.cuda.is_available():
        raise ValueError("TensorRT needs a CUDA GPU, and torch.cuda.is_available() is False")
    return Target(trt.__version__, torch.cuda.get_device_name(device_index),
                  tuple(torch.cuda.get_device_capability(device_index)))


def _parser_errors(parser) -> str:
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = err.node_name() if hasattr(err, "node_name") else ""
        lines.append(f"{err.desc()}" + (f" (node {node})" if node else ""))
    return "; ".join(lines) or "no parser messages"


def _network_flags(trt, recipe: BuildRecipe, meta: ModelMeta) -> tuple[int, bool]:
    """(create_network flags, weak fp16) for this precision request on this TensorRT."""
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if recipe.precision == meta.precision:
        return strongly, False
    if recipe.precision == "fp16" and meta.precision == "fp32":
        if trt_major(trt) >= 11:
            raise ValueError("TensorRT 11 builds fp16 only from an fp16 ONNX: "
                             "drivesegrt export --fp16 (BuilderFlag.FP16 is gone)")
        return 0, True
    if recipe.precision == "int8":
        raise ValueError("INT8 engines are built from a Q/DQ ONNX only: run drivesegrt calibrate "
                         f"(this file is {meta.precision})")
    raise ValueError(f"cannot build {recipe.precision} from a {meta.precision} ONNX; export "
                     f"the precision you want")


def build_serialized(trt, onnx_path: Path, meta: ModelMeta, recipe: BuildRecipe,
                     timing_cache: Path, logger) -> bytes:
    """Parse ``onnx_path`` and build; ValueError with the parser's messages on failure."""
    flags, weak_fp16 = _network_flags(trt, recipe, meta)
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise ValueError(f"{onnx_path}: TensorRT cannot parse it: {_parser_errors(parser)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, recipe.workspace_mb << 20)
    if weak_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, recipe.min_shape, recipe.opt_shape, recipe.max_shape)
    if config.add_optimization_profile(profile) < 0:
        raise ValueError(f"{onnx_path}: invalid optimization profile {recipe}")
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file()
                                       else b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=True):
        cache = config.create_timing_cache(b"")     # stale/foreign cache: start a fresh one
        config.set_timing_cache(cache, ignore_mismatch=True)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ValueError(f"{onnx_path}: TensorRT build failed ({recipe.precision}, profile "
                         f"{recipe.min_shape}..{recipe.max_shape}); see the TensorRT log above")
    timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(serialized))


def build_engine(onnx_path: str | Path, *, precision: str | None = None, min_shape=None,
                 opt_shape=None, max_shape=None, workspace_mb: int = DEFAULT_WORKSPACE_MB,
                 cache_dir: str | Path | None = None, device_index: int = 0,
                 verbose: bool = False) -> tuple[Path, bool]:
    """Build (or reuse) the engine of ``onnx_path``; returns (engine file, reused).

    cache_dir defaults to the ONNX file's folder.
    """
    onnx_path = Path(onnx_path)
    meta = read_meta_file(onnx_path)
    recipe = make_recipe(meta, precision, min_shape, opt_shape, max_shape, workspace_mb)
    trt = import_tensorrt()
    target = current_target(trt, device_index)
    sha = sha256_file(onnx_path)
    key = cache_key(sha, target, recipe)
    cache_dir = Path(cache_dir) if cache_dir else onnx_path.parent
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = engine_file(onnx_path, cache_dir, key, recipe.precision)
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    if path.is_file() and load_serialized(trt, path, logger) is not None:
        return path, True
    data = build_serialized(trt, onnx_path, meta, recipe,
                            cache_dir / f"timing.{target.tag}.cache", logger)
    tmp = path.with_suffix(".engine.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    sidecar = {"key": key, **cache_fields(sha, target, recipe), "onnx": str(onnx_path),
               "meta": meta.to_dict()}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1, sort_keys=True))
    return path, False


def load_serialized(trt, path: Path, logger):
    """ICudaEngine of a serialized engine file, or None when TensorRT rejects it (e.g. built by
    another TensorRT version or GPU)."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    # The runtime must outlive the engine; keep it attached.
    return None if engine is None else (engine, runtime)


def read_engine_meta(path: str | Path) -> ModelMeta:
    """Metadata recorded beside a serialized engine (``<engine>.json``)."""
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        raise ValueError(f"{path}: no metadata file {sidecar.name} beside the engine; build it "
                         f"with 'drivesegrt build' or load the .onnx instead")
    try:
        data = json.loads(sidecar.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{sidecar}: not valid JSON ({e})") from None
    return ModelMeta.from_dict(data.get("meta"), where=str(sidecar))


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="ONNX file from export/calibrate")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default: the ONNX file's own precision")
    p.add_argument("--min", dest="min_shape", type=parse_shape, default=None,
                   help="profile min input shape, e.g. 1x3x360x480 (default batch 1)")
    p.add_argument("--opt", dest="opt_shape", type=parse_shape, default=None,
                   help="profile opt input shape (default batch 1)")
    p.add_argument("--max", dest="max_shape", type=parse_shape, default=None,
                   help=f"profile max input shape (default batch {DEFAULT_MAX_BATCH})")
    p.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MB,
                   help=f"builder workspace limit in MB (default {DEFAULT_WORKSPACE_MB})")
    p.add_argument("--cache-dir", default=None, help="engine cache folder (default: beside ONNX)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index")


def main(args) -> int:
    path, reused = build_engine(args.model, precision=args.precision, min_shape=args.min_shape,
                                opt_shape=args.opt_shape, max_shape=args.max_shape,
                                workspace_mb=args.workspace, cache_dir=args.cache_dir,
                                device_index=args.device, verbose=args.verbose)
    print(f"{'reused' if reused else 'built'} {path}", file=sys.stdout)
    return 0
