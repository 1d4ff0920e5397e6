"""INT8 post-training quantization to an explicit Q/DQ ONNX (ONNX Runtime CPU and TensorRT).

    drivesegrt calibrate --model FILE.onnx --data DIR --out FILE.int8.onnx
        [--method entropy|percentile|minmax] [--num-images N] [--list calibration/camvid_train.txt]
        [--video FILE --video-frames N] [--exclude NODE ...] [--activations int8|uint8]
        [--no-equalize] [--narrow-float N] [--ops TYPE,...]

Recipe (what TensorRT's explicit quantization needs, see ../calibration/README.md):
activation equalization first (``drivesegrt.deploy.equalize``, exact in fp32; ``--no-equalize`` skips
it), then QuantFormat.QDQ; int8 activations and weights, both symmetric (zero point 0); weights
per channel (Conv axis 0), activations per tensor; biases left in float (TensorRT's
DequantizeLinear takes int8, not int32); a Resize keeps its input's scale. Calibration images go
through the pipeline's preprocessing: resize to ``meta.input_size`` and
``preprocess.normalize`` (or raw uint8 BGR when the graph normalizes itself). In-graph
normalization and the argmax tail always stay float; with ``--activations uint8`` (the CPU
recipe) so do convolutions writing fewer than NARROW_CHANNELS channels.

Memory does not grow with the number of images: ranges are computed by
:func:`calibrate_ranges`, which feeds ONNX Runtime's own calibrator math one image at a time
(its ``quantize_static`` would keep every image's activations for the entropy and percentile
methods until the end: N images, N x the activation size) and gets the very same ranges; the
quantizer then reads them as a calibration cache.
"""
from __future__ import annotations

import dataclasses
import inspect
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import numpy_helper

from ..files import image_paths
from ..preprocess import preprocess
from .equalize import activation_ranges
from .equalize import equalize as equalize_channels
from .onnx_graph import links
from .onnx_meta import load_onnx, read_meta, write_meta

METHODS = ("entropy", "percentile", "minmax")
DEFAULT_PERCENTILE = 99.999
# Node-name prefixes (torch module paths) that stay float: in-graph uint8 normalization.
FLOAT_PREFIXES = ("/preprocess/",)
# Ops after the logits: the argmax tail is integer work, never quantized.
FLOAT_OPS = ("ArgMax", "ArgMin")
# uint8 (CPU) recipe: convolutions writing fewer channels than this stay float: ONNX Runtime's
# x86 QLinearConv is slower than its fp32 NCHWc Conv on so few channels (bundled model: the
# 3->8 stem and the 8-channel depthwise; benchmarks/RESULTS.md, "INT8 on the CPU").
NARROW_CHANNELS = 16


def calibration_images(data: str | Path, list_file: str | Path | None = None,
                       num_images: int | None = None) -> list[Path]:
    """Image paths for calibration, in a deterministic order.

    data: a folder of images, or a CamVid root (its ``train/`` is used). list_file: names (one a
    line, ``#`` comments) relative to that folder; without it, all images in name order.
    num_images: keep the first N.
    """
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"calibration data folder not found: {data}")
    if (data / "train").is_dir():
        data = data / "train"
    if list_file is not None:
        list_file = Path(list_file)
        if not list_file.is_file():
            raise FileNotFoundError(f"calibration list not found: {list_file}")
        names = [ln.strip() for ln in list_file.read_text().splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
        paths = [data / n for n in names]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{list_file}: {len(missing)} listed image(s) not in {data} "
                                    f"(first: {missing[0].name})")
    else:
        paths = image_paths(data)
    if num_images is not None:
        if num_images < 1:
            raise ValueError(f"--num-images must be >= 1, got {num_images}")
        paths = paths[:num_images]
    if not paths:
        raise ValueError(f"{data}: no calibration images")
    return paths


def video_frames(path: str | Path, count: int) -> list[np.ndarray]:
    """``count`` evenly spaced uint8 HxWx3 BGR frames of a video file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not cap.isOpened() or total < 1:
            raise ValueError(f"{path}: unreadable video")
        frames = []
        for idx in np.linspace(0, total - 1, num=min(count, total)).round().astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(idx))
            ok, frame = cap.read()
            if ok:
                frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise ValueError(f"{path}: no frames could be read")
    return frames


class FrameReader:
    """ONNX Runtime CalibrationDataReader: one (1, ...) batch per frame, made by the pipeline's
    own ``preprocess`` (stretch to ``meta.input_size``): (1, 3, H, W) float32 normalized RGB,
    or (1, H, W, 3) uint8 BGR for graphs that normalize themselves."""

    def __init__(self, input_name: str, meta, images: list[Path], frames=()):
        self.input_name = input_name
        self.meta = meta
        self.sources = list(images) + list(frames)
        self._next = 0

    def _load(self, src) -> np.ndarray:
        if isinstance(src, np.ndarray):
            img = src
        else:
            img = cv2.imread(str(src), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"{src}: unreadable image")
        m = self.meta
        batch, _ = preprocess(img, m.input_size, m.mean, m.std, "stretch", m.input_format)
        return np.ascontiguousarray(batch)

    def get_next(self) -> dict | None:
        if self._next >= len(self.sources):
            return None
        batch = self._load(self.sources[self._next])
        self._next += 1
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._next = 0


def float_nodes(model: onnx.ModelProto, extra=()) -> list[str]:
    """Names of nodes kept in float: in-graph normalization, the argmax tail, and ``extra``."""
    names = {n.name for n in model.graph.node}
    unknown = [e for e in extra if e not in names]
    if unknown:
        raise ValueError(f"--exclude: no node named {unknown[0]!r} in the model")
    keep = [n.name for n in model.graph.node
            if n.name.startswith(FLOAT_PREFIXES) or n.op_type in FLOAT_OPS]
    return sorted(set(keep) | set(extra))


def narrow_convs(model: onnx.ModelProto, min_channels: int = NARROW_CHANNELS) -> list[str]:
    """Names of the Conv nodes that write fewer than ``min_channels`` output channels."""
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in shapes
            and shapes[n.input[1]][0] < min_channels]


def _share_resize_scales(model: onnx.ModelProto) -> int:
    """Give each ``DQ -> Resize -> Q`` the same scale and zero point on both sides, in place:
    interpolation cannot leave its input's range, so the output needs no range of its own.
    Returns the number of Resize nodes changed."""
    g = model.graph
    init = {i.name: i for i in g.initializer}
    producer, consumers = links(g)
    changed = 0
    for n in (n for n in g.node if n.op_type == "Resize"):
        dq = producer.get(n.input[0])
        users = consumers.get(n.output[0], [])
        if (dq is None or dq.op_type != "DequantizeLinear" or len(users) != 1
                or users[0].op_type != "QuantizeLinear"):
            continue
        pairs = list(zip(dq.input[1:3], users[0].input[1:3]))
        if len(pairs) != 2 or not all(a in init and b in init for a, b in pairs):
            continue
        for a, b in pairs:
            init[b].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init[a]), b))
        changed += 1
    return changed


def _float_logits(model: onnx.ModelProto) -> None:
    """Drop the Q->DQ pair on the logits (graph output or ArgMax input), in place: int8 logits
    only add rounding (and argmax ties) and save no compute."""
    g = model.graph
    outputs = {o.name for o in g.output}
    producer, consumers = links(g)
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:
        y = dq.output[0]
        users = consumers.get(y, [])
        if not (y in outputs or (users and all(u.op_type in FLOAT_OPS for u in users))):
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or len(consumers[q.output[0]]) != 1:
            continue
        x = q.input[0]
        for n in g.node:   # consumers of y read x instead; a graph output keeps its name y
            n.input[:] = [x if i == y else i for i in n.input]
        if y in outputs:
            for n in g.node:
                n.input[:] = [y if i == x else i for i in n.input]
                n.output[:] = [y if o == x else o for o in n.output]
        g.node.remove(q)
        g.node.remove(dq)
    used = {i for n in g.node for i in n.input}
    unused = [init for init in g.initializer if init.name not in used]
    for init in unused:          # the dropped pair's scale and zero point
        g.initializer.remove(init)


def calibrate_ranges(model_path: str | Path, reader: FrameReader, method: str,
                     percentile: float, workdir: str | Path):
    """ONNX Runtime's calibration of ``model_path`` (the model ``quantize_static`` is given)
    on ``reader``'s frames, with memory bounded by one frame's activations: returns its
    ``TensorsData``, the same ranges ``quantize_static`` computes itself.

    minmax: ORT's calibrator already merges per chunk of frames (exact). entropy and
    percentile: ORT builds each tensor's histogram once over all frames' values (edges from
    their overall range), so the frames are read twice: first each tensor's overall min and
    max, then its histogram over exactly those edges, summed frame by frame (counting is per
    value, so the sum equals ORT's); ORT's own collector then turns the histograms into ranges.
    """
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        HistogramCollector,
        create_calibrator,
    )
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    calib = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
             "minmax": CalibrationMethod.MinMax}[method]
    # The op types and options quantize_static hands its calibrator.
    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    calibrator = create_calibrator(
        Path(model_path), op_types,
        augmented_model_path=str(Path(workdir) / "augmented.onnx"), calibrate_method=calib,
        extra_options={"percentile": percentile, "max_intermediate_outputs": 16})
    reader.rewind()
    if method == "minmax":
        calibrator.collect_data(reader)
        return calibrator.compute_data()
    session = calibrator.infer_session
    names = [o.name for o in session.get_outputs()
             if o.name in calibrator.tensors_to_calibrate]
    symmetric = calibrator.symmetric           # percentile: histogram of |x| (ORT's default)

    def frames():
        reader.rewind()
        for feed in iter(reader.get_next, None):
            yield dict(zip(names, session.run(names, feed)))

    def merge(into: dict, n: str, value, fn) -> None:
        into[n] = fn(into[n], value) if n in into else value

    lo, hi, abs_lo, abs_hi = {}, {}, {}, {}
    for acts in frames():                        # pass 1: each tensor's overall range
        for n, a in acts.items():
            merge(lo, n, np.nanmin(a), np.minimum)
            merge(hi, n, np.nanmax(a), np.maximum)
            if symmetric:
                merge(abs_lo, n, np.abs(a).min(), np.minimum)
                merge(abs_hi, n, np.abs(a).max(), np.maximum)
    span = {}
    for n in names:
        if symmetric:       # ORT: np.histogram(|x|, bins), edges over |x|'s own min..max
            span[n] = (abs_lo[n], abs_hi[n])
        else:               # ORT: np.histogram(x, bins, range=(-t, t)), t = max |x|
            t = np.array(max(abs(lo[n]), abs(hi[n])), dtype=lo[n].dtype)
            span[n] = (-t, t)
    bins = calibrator.num_bins
    hist, edges = {}, {}
    for acts in frames():                        # pass 2: histograms over those edges
        for n, a in acts.items():
            h, edges[n] = np.histogram(np.abs(a) if symmetric else a, bins, range=span[n])
            merge(hist, n, h, np.add)
    collector = HistogramCollector(
        method=calibrator.method, symmetric=symmetric, num_bins=bins,
        num_quantized_bins=calibrator.num_quantized_bins, percentile=calibrator.percentile,
        scenario=calibrator.scenario)
    for n in names:         # the tuples ORT's collect_absolute_value / collect_value store
        collector.histogram_dict[n] = (
            (hist[n], edges[n].astype(lo[n].dtype), lo[n], hi[n]) if symmetric
            else (hist[n], edges[n], lo[n], hi[n], span[n][1]))
    calibrator.collector = collector
    return calibrator.compute_data()


def quantize_int8(model_path: str | Path, out: str | Path, images: list[Path], *,
                  method: str = "percentile", frames=(), exclude=(),
                  percentile: float = DEFAULT_PERCENTILE, activations: str = "int8",
                  equalize: bool = True, narrow_float: int | None = None,
                  op_types: tuple[str, ...] = ()) -> list[str]:
    """Write the Q/DQ int8 version of ``model_path`` (fp32 ONNX from ``export``) to ``out``.

    equalize: first rescale the channels between ``Conv -> Relu -> Conv`` pairs to even ranges
    on the calibration frames (``drivesegrt.deploy.equalize``; exact in fp32).
    narrow_float: convolutions writing fewer channels than this stay float; default
    NARROW_CHANNELS for uint8 activations, 0 (none) for int8.

    activations: ``int8`` symmetric (zero point 0; what TensorRT consumes, the default) or
    ``uint8`` asymmetric (ONNX Runtime's fast U8S8 kernels on x86 CPUs; TensorRT rejects it).

    op_types: quantize only these operator types (e.g. ``("Conv",)``: int8 convolutions, float
    in between, for graphs whose element-wise tails, such as ESPNetv2's PReLU written as
    Relu/Sub/Mul/Add, lose accuracy when every step is requantized); default: every type ONNX
    Runtime quantizes.

    Returns the names of the nodes kept in float. The output keeps the metadata with
    ``precision = "int8"``.
    """
    import onnxruntime
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise ValueError(f"calibrate needs an onnxruntime whose quantize_static takes "
                         f"calibration_cache_path (installed: {onnxruntime.__version__}); "
                         f"pip install -U onnxruntime")
    from onnxruntime.quantization.calibrate import save_tensors_data

    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; allowed: {', '.join(METHODS)}")
    if activations not in ("int8", "uint8"):
        raise ValueError(f"activations {activations!r}; allowed: int8, uint8")
    proto = load_onnx(model_path)
    meta = read_meta(proto, where=str(model_path))
    if meta.precision != "fp32":
        raise ValueError(f"{model_path}: calibrate an fp32 export, not {meta.precision}")
    keep_float = float_nodes(proto, exclude)
    if narrow_float is None:
        narrow_float = NARROW_CHANNELS if activations == "uint8" else 0
    if narrow_float < 0:
        raise ValueError(f"--narrow-float must be >= 0, got {narrow_float}")
    keep_float = sorted(set(keep_float) | set(narrow_convs(proto, narrow_float)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    reader = FrameReader(proto.graph.input[0].name, meta, images, frames)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(model_path)
        if equalize:
            source = Path(tmp) / "equalized.onnx"
            equalize_channels(proto, activation_ranges(proto, iter(reader.get_next, None)))
            reader.rewind()
            onnx.save(proto, str(source))
        prepped = Path(tmp) / "prepped.onnx"
        # ORT's recommended pre-processing: shape inference + graph optimization (BN folding).
        quant_pre_process(str(source), str(prepped), skip_symbolic_shape=True)
        ranges = calibrate_ranges(prepped, reader, method, percentile, tmp)
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)       # quantize_static reads it instead of calibrating
        quantize_static(
            str(prepped), str(out), None, quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8, per_channel=True,
            op_types_to_quantize=list(op_types) or None,
            calibrate_method=ranges.calibration_method, nodes_to_exclude=keep_float,
            extra_options={"ActivationSymmetric": activations == "int8", "WeightSymmetric": True,
                           "QuantizeBias": False},
            calibration_cache_path=cache)
    result = onnx.load(str(out))
    _share_resize_scales(result)
    _float_logits(result)
    write_meta(result, dataclasses.replace(meta, precision="int8"))
    onnx.save(result, str(out))
    return keep_float


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="fp32 ONNX from 'drivesegrt export'")
    p.add_argument("--data", required=True,
                   help="folder of calibration images, or a CamVid root (uses its train/)")
    p.add_argument("--out", required=True, help="output Q/DQ ONNX (e.g. model.int8.onnx)")
    p.add_argument("--method", choices=METHODS, default="percentile",
                   help="activation range calibration (default percentile: best on CamVid val)")
    p.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE,
                   help="percentile for --method percentile (default 99.999)")
    p.add_argument("--num-images", type=int, default=None, help="use the first N images")
    p.add_argument("--list", default=None,
                   help="file of image names relative to --data (e.g. calibration/camvid_train.txt)")
    p.add_argument("--video", default=None, help="also calibrate on frames of this video")
    p.add_argument("--video-frames", type=int, default=20,
                   help="evenly spaced frames taken from --video (default 20)")
    p.add_argument("--activations", choices=["int8", "uint8"], default="int8",
                   help="int8: symmetric, for TensorRT (default); uint8: asymmetric, the x86 "
                        "CPU recipe for ONNX Runtime's and OpenVINO's faster u8 kernels "
                        "(TensorRT cannot build it)")
    p.add_argument("--no-equalize", dest="equalize", action="store_false",
                   help="skip activation equalization (on by default: exact in fp32, evens "
                        "the per-channel ranges that per-tensor int8 scales share)")
    p.add_argument("--narrow-float", type=int, default=None, metavar="N",
                   help="keep convolutions writing fewer than N channels in fp32 (default: "
                        f"{NARROW_CHANNELS} with --activations uint8, where ONNX Runtime's int8 "
                        "kernels are slower there; 0 otherwise; for OpenVINO use 0: its int8 "
                        "kernels are fast on narrow layers too)")
    p.add_argument("--ops", default="", metavar="TYPE,...",
                   help="quantize only these ONNX operator types, e.g. Conv (default: all that "
                        "ONNX Runtime quantizes)")
    p.add_argument("--exclude", nargs="*", default=[],
                   help="node names to keep in float (sensitive layers)")


def main(args) -> int:
    from .trt_check import check_tensorrt

    images = calibration_images(args.data, args.list, args.num_images)
    frames = video_frames(args.video, args.video_frames) if args.video else []
    print(f"calibrating on {len(images)} images"
          f"{f' + {len(frames)} video frames' if frames else ''} from {args.data} "
          f"({args.method}; memory of one image at a time)", flush=True)
    kept = quantize_int8(args.model, args.out, images, method=args.method, frames=frames,
                         exclude=args.exclude, percentile=args.percentile,
                         activations=args.activations, equalize=args.equalize,
                         narrow_float=args.narrow_float,
                         op_types=tuple(t for t in args.ops.split(",") if t))
    print(f"wrote {args.out}: int8 Q/DQ, {args.method} calibration on {len(images)} images"
          f"{f' + {len(frames)} video frames' if frames else ''}; "
          f"{len(kept)} node(s) kept in float; {args.activations} activations"
          f"{'; equalized' if args.equalize else ''}")
    problems = check_tensorrt(args.out)
    for line in problems:
        print(f"TensorRT: {line}")
    if not problems:
        print("TensorRT op check: passed")
    return 0
