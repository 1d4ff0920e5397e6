"""TensorRT compatibility check of an ONNX graph, without TensorRT.

The rules are data: ``trt_ops.json`` holds TensorRT's ONNX operator support list (from
onnx-tensorrt's docs/operators.md; the file names the TensorRT version) with the constraints that
can be checked statically: supported op and input type, allowed attribute values, MaxPool without
its Indices output, build-time constant inputs (axes, K), Q/DQ zero points of 0, UINT8 only at
network inputs/outputs and INT8 only through Q/DQ. ``check_tensorrt`` returns the problems as
one line each, naming the node; an empty list means the graph passes.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .onnx_graph import attr, links
from .onnx_meta import load_onnx

OPS_FILE = Path(__file__).with_name("trt_ops.json")

# ONNX element type -> the type names used in NVIDIA's table.
TYPE_NAMES = {
    TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
    TensorProto.DOUBLE: "DOUBLE", TensorProto.INT32: "INT32", TensorProto.INT64: "INT64",
    TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8", TensorProto.BOOL: "BOOL",
    TensorProto.INT4: "INT4", TensorProto.FLOAT8E4M3FN: "FP8", TensorProto.FLOAT4E2M1: "FP4",
    TensorProto.INT16: "INT16", TensorProto.UINT16: "UINT16", TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64", TensorProto.STRING: "STRING",
}


@lru_cache(maxsize=1)
def load_rules() -> dict:
    """The parsed ``trt_ops.json``."""
    return json.loads(OPS_FILE.read_text())


def _node_label(node: onnx.NodeProto, index: int) -> str:
    name = node.name or f"#{index} (output {node.output[0] if node.output else '?'})"
    return f"node {name} ({node.op_type})"


class _Graph:
    """Types, constants and producers of one (shape-inferred) graph."""

    def __init__(self, model: onnx.ModelProto):
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # inference is best effort: missing types only skip type checks
            pass
        g = model.graph
        self.types: dict[str, int] = {}
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.HasField("tensor_type"):
                self.types[vi.name] = vi.type.tensor_type.elem_type
        self.constants: dict[str, onnx.TensorProto] = {}
        for init in g.initializer:
            self.types[init.name] = init.data_type
            self.constants[init.name] = init
        for node in g.node:
            if node.op_type == "Constant" and node.output:
                for a in node.attribute:
                    if a.name == "value":
                        self.constants[node.output[0]] = a.t
                        self.types[node.output[0]] = a.t.data_type
        self.producer, self.consumers = links(g)
        self.io = {vi.name for vi in list(g.input) + list(g.output)}

    def value(self, name: str) -> np.ndarray | None:
        t = self.constants.get(name)
        return None if t is None else numpy_helper.to_array(t)


def _check_node(node: onnx.NodeProto, label: str, rule: dict, graph: _Graph) -> list[str]:
    problems = []
    if not rule.get("supported", False):
        return [f"{label}: not supported by TensorRT"]
    data_in = node.input[0] if node.input else ""
    if data_in and data_in in graph.types and rule.get("types"):
        tname = TYPE_NAMES.get(graph.types[data_in], str(graph.types[data_in]))
        if tname not in rule["types"] and graph.types[data_in] != TensorProto.UNDEFINED:
            problems.append(f"{label}: input type {tname} not supported "
                            f"(TensorRT: {', '.join(rule['types'])})")
    for name, spec in rule.get("attributes", {}).items():
        value = attr(node, name, spec["default"])
        if value not in spec["allowed"]:
            problems.append(f"{label}: {name}={value!r} not supported (TensorRT: "
                            f"{', '.join(map(str, spec['allowed']))})")
    for name in rule.get("forbidden_attributes", ()):
        if attr(node, name) is not None:
            problems.append(f"{label}: attribute {name} not supported")
    for name in rule.get("ones_attributes", ()):
        value = attr(node, name)
        if value and any(v != 1 for v in value):
            problems.append(f"{label}: {name}={list(value)} not supported (must be all ones)")
    if "spatial_dims" in rule:
        kernel = attr(node, "kernel_shape")
        if kernel is not None and len(kernel) not in rule["spatial_dims"]:
            problems.append(f"{label}: {len(kernel)}D pooling not supported (2D or 3D only)")
    if "max_outputs" in rule:
        used = [o for o in node.output if o]
        if len(used) > rule["max_outputs"]:
            what = "Indices output" if node.op_type == "MaxPool" else f"output {used[-1]!r}"
            problems.append(f"{label}: {what} not supported by TensorRT")
    for idx in rule.get("const_inputs", ()):
        if idx < len(node.input) and node.input[idx] and node.input[idx] not in graph.constants:
            problems.append(f"{label}: input {idx} ({node.input[idx]}) must be a build-time "
                            f"constant (initializer or Constant)")
    for idx, limit in rule.get("max_const_input", {}).items():
        v = graph.value(node.input[int(idx)]) if int(idx) < len(node.input) else None
        if v is not None and np.any(v > limit):
            problems.append(f"{label}: input {idx} = {v.tolist()} exceeds TensorRT's limit {limit}")
    zp = rule.get("zero_point_input")
    if zp is not None and zp < len(node.input) and node.input[zp]:
        v = graph.value(node.input[zp])
        if v is None:
            problems.append(f"{label}: zero point {node.input[zp]} must be a constant 0")
        elif np.any(v != 0):
            problems.append(f"{label}: zero point {node.input[zp]} is not 0 "
                            f"(TensorRT needs symmetric quantization)")
    return problems


def _check_types(model: onnx.ModelProto, graph: _Graph, rules: dict) -> list[str]:
    """UINT8 only at network I/O; quantized types only between QuantizeLinear and DequantizeLinear."""
    problems = []
    io_only = {t for t, n in TYPE_NAMES.items() if n in rules["io_only_types"]}
    quantized = {t for t, n in TYPE_NAMES.items() if n in rules["quantized_types"]}
    for name, etype in graph.types.items():
        if etype in io_only and name not in graph.io:
            producer = graph.producer.get(name)
            where = f"produced by node {producer.name or producer.op_type}" if producer else \
                "an initializer"
            problems.append(f"tensor {name} ({where}): {TYPE_NAMES[etype]} is only supported as "
                            f"a network input or output")
        if etype in quantized:
            producer = graph.producer.get(name)
            users = graph.consumers.get(name, [])
            if producer is None or producer.op_type == "Constant":   # weights, zero points
                ok = all(u.op_type in ("QuantizeLinear", "DequantizeLinear") for u in users)
            else:
                ok = producer.op_type == "QuantizeLinear" and \
                    all(u.op_type == "DequantizeLinear" for u in users)
            if not ok or name in graph.io:
                problems.append(f"tensor {name}: {TYPE_NAMES[etype]} only supported between "
                                f"QuantizeLinear and DequantizeLinear (explicit quantization)")
    return problems


def check_tensorrt(model: onnx.ModelProto | str | os.PathLike) -> list[str]:
    """Problems that stop TensorRT (per ``trt_ops.json``) from building ``model``; [] if none.

    Each problem is one line naming the node or tensor, e.g.
    ``"node pool1 (MaxPool): Indices output not supported by TensorRT"``.
    """
    if not isinstance(model, onnx.ModelProto):
        model = load_onnx(model)
    rules = load_rules()
    problems = []
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not \
                rules["opset_min"] <= opset.version <= rules["opset_max"]:
            problems.append(f"opset {opset.version} outside TensorRT {rules['tensorrt_version']}"
                            f"'s checked range {rules['opset_min']}..{rules['opset_max']}")
    graph = _Graph(model)
    for i, node in enumerate(model.graph.node):
        label = _node_label(node, i)
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{label}: custom domain {node.domain!r} is not in TensorRT's ONNX "
                            f"operator list (needs a plugin)")
            continue
        rule = rules["ops"].get(node.op_type)
        if rule is None:
            problems.append(f"{label}: not in TensorRT's ONNX operator list")
            continue
        problems += _check_node(node, label, rule, graph)
    problems += _check_types(model, graph, rules)
    return problems
