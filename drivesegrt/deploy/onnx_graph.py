"""Walking an ONNX graph: who produces and who reads each tensor, and node attributes."""
from __future__ import annotations

import onnx


def links(graph: onnx.GraphProto) -> tuple[dict, dict]:
    """``(producer, consumers)``: tensor name -> the node writing it, and -> the nodes reading it
    (in graph order; a node reading a tensor twice is listed twice)."""
    producer = {o: n for n in graph.node for o in n.output if o}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    return producer, consumers


def attr(node: onnx.NodeProto, name: str, default=None):
    """The value of ``node``'s attribute ``name`` (strings decoded), or ``default``."""
    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default
