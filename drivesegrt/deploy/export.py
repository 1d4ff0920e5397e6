"""Checkpoint -> ONNX: dynamic batch, metadata embedded, optional in-graph normalization and argmax.

    drivesegrt export --model CKPT --out FILE.onnx [--uint8-input] [--argmax] [--fp16]
                      [--dynamic-hw] [--opset 17] [--exporter torchscript|dynamo] [--check-trt]

Graph I/O (names ``input`` and ``logits`` | ``labels``):

- input, default: (N, 3, H, W) float32 normalized RGB (``meta.input_format = "float_nchw"``).
- input, ``--uint8-input``: (N, H, W, 3) uint8 BGR frames; BGR->RGB, /255, mean/std and NCHW
  happen inside the graph (``"uint8_nhwc_bgr"``). The uint8 tensor is cast to float first, so
  UINT8 only appears at the network input, as TensorRT requires.
- output, default: (N, C, h, w) float32 logits (``meta.output = "logits"``).
- output, ``--argmax``: (N, h, w) **int32** class ids (``"labels"``): ONNX ArgMax (int64; TensorRT
  lowers it to TopK, first maximum) then a Cast to int32, a type every backend returns natively.
- ``--fp16``: weights and activations in float16, graph I/O kept float32/uint8/int32
  (``meta.precision = "fp16"``); TensorRT 11 builds it as a strongly typed fp16 network.

Exporter: torch 2.13's TorchScript exporter (``dynamo=False``) is the default: it honours
``opset_version`` exactly and takes about a second for the zoo models. The dynamo exporter
(``--exporter dynamo``) also works for them but emits opset 18 (its down-conversion to 17
fails on Resize/Reduce axes) and takes ~10x longer.
"""
from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from ..meta import ModelMeta
from ..models import FIXED_SIZE_EXPORT
from .onnx_meta import write_meta

EXPORTERS = ("torchscript", "dynamo")
MIN_OPSET = 17


class Normalize(nn.Module):
    """(N, H, W, 3) uint8 BGR -> (N, 3, H, W) float32 normalized RGB, as ``preprocess.normalize``."""

    def __init__(self, mean, std):
        super().__init__()
        std_t = torch.tensor(std, dtype=torch.float32)
        mean_t = torch.tensor(mean, dtype=torch.float32)
        # Same constants and order of operations as preprocess.normalize (x * scale - shift).
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).view(1, 3, 1, 1))
        self.register_buffer("shift", (mean_t / std_t).view(1, 3, 1, 1))

    def forward(self, x):
        x = x.float()                        # (N, H, W, 3) BGR; cast first: UINT8 only at I/O
        x = x.permute(0, 3, 1, 2)            # (N, 3, H, W) BGR
        x = x[:, [2, 1, 0]]                  # (N, 3, H, W) RGB
        return x * self.scale - self.shift


class DeployGraph(nn.Module):
    """What gets exported: [Normalize] -> model -> [argmax as int32]."""

    def __init__(self, model: nn.Module, meta: ModelMeta, uint8_input: bool, argmax: bool):
        super().__init__()
        self.preprocess = Normalize(meta.mean, meta.std) if uint8_input else None
        self.model = model
        self.argmax = argmax

    def forward(self, x):
        if self.preprocess is not None:
            x = self.preprocess(x)           # (N, 3, H, W) float32
        y = self.model(x)                    # (N, C, h, w) logits
        if self.argmax:
            y = torch.argmax(y, dim=1).to(torch.int32)   # (N, h, w) class ids
        return y


def _sample_input(meta: ModelMeta, uint8_input: bool) -> torch.Tensor:
    h, w = meta.input_size
    if uint8_input:
        return torch.zeros((1, h, w, 3), dtype=torch.uint8)
    return torch.zeros((1, 3, h, w), dtype=torch.float32)


def _torchscript_export(graph, x, out, output_name, uint8_input, dynamic_hw, opset):
    h_ax, w_ax = (1, 2) if uint8_input else (2, 3)
    in_axes = {0: "batch"}
    out_axes = {0: "batch"}
    if dynamic_hw:
        in_axes.update({h_ax: "height", w_ax: "width"})
        out_axes.update({1: "out_height", 2: "out_width"} if output_name == "labels"
                        else {2: "out_height", 3: "out_width"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # TorchScript exporter deprecation
        torch.onnx.export(graph, (x,), str(out), input_names=["input"],
                          output_names=[output_name], opset_version=opset, dynamo=False,
                          dynamic_axes={"input": in_axes, output_name: out_axes},
                          do_constant_folding=True)


def _dynamo_export(graph, x, out, output_name, uint8_input, dynamic_hw, opset):
    dim = torch.export.Dim
    shapes = {0: dim("batch", min=1, max=1024)}
    if dynamic_hw:
        h_ax, w_ax = (1, 2) if uint8_input else (2, 3)
        shapes.update({h_ax: dim.DYNAMIC, w_ax: dim.DYNAMIC})
    program = torch.onnx.export(graph, (x,), input_names=["input"], output_names=[output_name],
                                opset_version=opset, dynamo=True, dynamic_shapes=(shapes,),
                                verbose=False, optimize=True)
    program.save(str(out))


def _to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """float32 weights/activations -> float16, I/O types kept (Casts at the graph edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(model, keep_io_types=True)
    _sort_nodes(model.graph)   # the converter appends its input Casts after their consumers
    return model


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` topologically (stable: keeps the original order where it can)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or dangling input at node {rest[0].name}")
        pending = rest
    copies = [onnx.NodeProto() for _ in ordered]
    for dst, src in zip(copies, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(copies)


def export_onnx(model: nn.Module, meta: ModelMeta, out: str | Path, *, uint8_input: bool = False,
                argmax: bool = False, fp16: bool = False, dynamic_hw: bool = False,
                opset: int = 17, exporter: str = "torchscript") -> ModelMeta:
    """Export ``model`` (eval mode, CPU) to ``out`` and return the metadata embedded there.

    model: (N, 3, H, W) normalized float -> (N, C, h, w) logits. See the module docstring for
    the graph I/O each option gives. Batch is always dynamic; H/W only with ``dynamic_hw``
    (otherwise fixed to ``meta.input_size``).
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} too old; drivesegrt exports opset >= {MIN_OPSET}")
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; allowed: {', '.join(EXPORTERS)}")
    if dynamic_hw and meta.arch in FIXED_SIZE_EXPORT:
        raise ValueError(f"{meta.arch} exports at a fixed input size (its graph holds sizes "
                         f"computed from it): export without dynamic H/W, one file per size")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    graph = DeployGraph(model, meta, uint8_input, argmax).eval()
    output_name = "labels" if argmax else "logits"
    x = _sample_input(meta, uint8_input)
    run = _torchscript_export if exporter == "torchscript" else _dynamo_export
    with torch.no_grad():
        run(graph, x, out, output_name, uint8_input, dynamic_hw, opset)

    proto = onnx.load(str(out))
    if fp16:
        proto = _to_fp16(proto)
    new_meta = dataclasses.replace(
        meta, input_format="uint8_nhwc_bgr" if uint8_input else "float_nchw",
        output="labels" if argmax else "logits", precision="fp16" if fp16 else "fp32")
    write_meta(proto, new_meta)
    proto.producer_name = "drivesegrt"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return new_meta


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="checkpoint (.pt) to export")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--uint8-input", action="store_true",
                   help="graph input (N,H,W,3) uint8 BGR; normalization inside the graph")
    p.add_argument("--argmax", action="store_true",
                   help="graph output (N,h,w) int32 class ids instead of logits")
    p.add_argument("--fp16", action="store_true", help="float16 weights/activations, I/O kept")
    p.add_argument("--dynamic-hw", action="store_true", help="dynamic input height/width")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    p.add_argument("--exporter", choices=EXPORTERS, default="torchscript",
                   help="torch exporter (default torchscript, i.e. dynamo=False)")
    p.add_argument("--check-trt", action="store_true",
                   help="check the graph against TensorRT's ONNX operator support list")


def main(args) -> int:
    from ..models.checkpoint import load_model
    from .trt_check import check_tensorrt

    model, meta = load_model(args.model)
    new_meta = export_onnx(model, meta, args.out, uint8_input=args.uint8_input,
                           argmax=args.argmax, fp16=args.fp16, dynamic_hw=args.dynamic_hw,
                           opset=args.opset, exporter=args.exporter)
    print(f"wrote {args.out} ({new_meta.arch}, input {new_meta.input_format}, "
          f"output {new_meta.output}, {new_meta.precision})")
    if args.check_trt:
        problems = check_tensorrt(args.out)
        for line in problems:
            print(f"TensorRT: {line}", file=sys.stderr)
        if problems:
            print(f"{args.out}: {len(problems)} TensorRT compatibility problem(s)", file=sys.stderr)
            return 1
        print("TensorRT op check: passed")
    return 0
