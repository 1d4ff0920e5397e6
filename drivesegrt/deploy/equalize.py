"""Activation equalization before INT8 calibration: an exact fp32 rewrite of an ONNX graph that
evens out the per-channel ranges of the tensors between two convolutions.

Per-tensor activation scales serve a tensor whose channels span 0..0.1 and 0..40 badly: the small
channels get a handful of int8 steps. Between ``Conv1 -> Relu -> Conv2`` the channels can be
rescaled for free, because ReLU is positively homogeneous (relu(x / s) = relu(x) / s for s > 0):
divide Conv1's output channel i (weights and bias) by s_i and multiply Conv2's input channel i by
s_i; the network's output is unchanged up to float rounding.

How s is chosen (a_i: the channel's largest activation on calibration frames):
- every consumer is depthwise: its weights are quantized per channel, so scaling them costs
  nothing; s_i = a_i / max(a) makes every channel's range equal.
- a consumer mixes channels (group 1): its weights are quantized per *output* channel, so a large
  s_i widens the range its other inputs share; s_i = sqrt(a_i / w_i) (w_i: the largest weight on
  input channel i) splits the difficulty between activation and weight, as SmoothQuant
  (Xiao et al., 2023) does; cross-layer equalization (Nagel et al., 2019) is the data-free form.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .onnx_graph import attr, links

EPS = 1e-8


def equalizable(model: onnx.ModelProto) -> list[tuple]:
    """(conv1, relu, [consumer convs]) triples whose middle tensor may be rescaled per channel."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    producer, consumers = links(g)
    uses = {name: len(users) for name, users in consumers.items()}
    outputs = {o.name for o in g.output}
    found = []
    for relu in (n for n in g.node if n.op_type == "Relu"):
        conv1 = producer.get(relu.input[0])
        if (conv1 is None or conv1.op_type != "Conv"
                or len(consumers.get(relu.input[0], [])) != 1 or relu.input[0] in outputs
                or relu.output[0] in outputs):
            continue
        params = conv1.input[1:]
        users = consumers.get(relu.output[0], [])
        if not users or any(p not in inits or uses[p] != 1 for p in params):
            continue
        if all(c.op_type == "Conv" and c.input[0] == relu.output[0] and c.input[1] in inits
               and uses[c.input[1]] == 1 for c in users):
            found.append((conv1, relu, users))
    return found


def equalize(model: onnx.ModelProto, act_max: dict[str, np.ndarray]) -> int:
    """Rescale every equalizable ``Conv -> Relu -> Conv`` in place; ``act_max`` maps each Relu
    output name to its per-channel maximum on calibration data. Returns the number rescaled."""
    g = model.graph
    init = {i.name: i for i in g.initializer}
    arrays: dict[str, np.ndarray] = {}       # the weights and biases rescaled so far

    def array(name: str) -> np.ndarray:
        return arrays[name] if name in arrays else numpy_helper.to_array(init[name])

    done = 0
    for conv1, relu, users in equalizable(model):
        a = np.asarray(act_max.get(relu.output[0]), dtype=np.float64)
        w1 = array(conv1.input[1])
        channels = w1.shape[0]
        if a.shape != (channels,):
            continue
        depthwise = []
        for c in users:
            w2 = array(c.input[1])
            depthwise.append(attr(c, "group", 1) == channels == w2.shape[0] and w2.shape[1] == 1)
        if not all(dw or attr(c, "group", 1) == 1 for dw, c in zip(depthwise, users)):
            continue
        live = a > EPS
        if not live.any():
            continue
        if all(depthwise):
            s = a / a[live].max()
        else:
            w_in = np.zeros(channels)
            for dw, c in zip(depthwise, users):
                w2 = np.abs(array(c.input[1]))
                per_in = w2.reshape(channels, -1).max(1) if dw else w2.max(axis=(0, 2, 3))
                w_in = np.maximum(w_in, per_in)
            s = np.sqrt(a / np.maximum(w_in, EPS))
            s /= np.exp(np.log(s[live]).mean())        # geometric mean 1: weights keep their size
        s = np.where(live, s, 1.0)
        shape = (channels,) + (1,) * (w1.ndim - 1)
        arrays[conv1.input[1]] = (w1 / s.reshape(shape)).astype(w1.dtype)
        if len(conv1.input) > 2:
            arrays[conv1.input[2]] = (array(conv1.input[2]) / s).astype(w1.dtype)
        for dw, c in zip(depthwise, users):
            w2 = array(c.input[1])
            view = (channels, 1, 1, 1) if dw else (1, channels, 1, 1)
            arrays[c.input[1]] = (w2 * s.reshape(view)).astype(w2.dtype)
        done += 1
    for name, value in arrays.items():
        init[name].CopyFrom(numpy_helper.from_array(value, name))
    return done


def activation_ranges(model: onnx.ModelProto, batches) -> dict[str, np.ndarray]:
    """Per-channel max of every equalizable Relu output over ``batches`` (ORT input dicts)."""
    import onnxruntime as ort

    names = [relu.output[0] for _, relu, _ in equalizable(model)]
    if not names:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n)
                              for n in names if n not in known)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    out: dict[str, np.ndarray] = {}
    for feed in batches:
        for name, value in zip(names, sess.run(names, feed)):
            m = value.max(axis=(0, 2, 3))
            out[name] = m if name not in out else np.maximum(out[name], m)
    return out
