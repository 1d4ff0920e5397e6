"""Walking an ONNX graph: who produces and who reads each tensor."""
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
