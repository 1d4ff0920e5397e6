"""Read and write the drivesegrt metadata of ONNX files (``metadata_props["drivesegrt"]``).

Shared by export, quantize, the ONNX Runtime and TensorRT engines; imports neither torch nor
onnxruntime.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx

from ..meta import ONNX_META_KEY, ModelMeta


def load_onnx(path: str | os.PathLike, load_external_data: bool = True) -> onnx.ModelProto:
    """The ModelProto of ``path``; FileNotFoundError/ValueError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as e:  # protobuf raises DecodeError, onnx raises its own types
        with open(path, "rb") as f:
            if f.read(2) == b"PK":   # torch.save's zip container
                raise ValueError(f"{path}: a PyTorch checkpoint, not ONNX; use --backend torch, "
                                 f"or 'drivesegrt export' it to ONNX") from None
        raise ValueError(f"{path}: not a readable ONNX model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None


def is_onnx_file(path: str | os.PathLike) -> bool:
    """True when ``path`` parses as an ONNX model with a graph (for error messages that
    say what a file is when it was given to the wrong loader)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf's DecodeError, onnx's own types: not an ONNX file
        return False
    return model.ir_version > 0 and len(model.graph.node) > 0


def read_meta(model: onnx.ModelProto, where: str) -> ModelMeta:
    """The ModelMeta embedded by ``export``; ValueError naming ``where`` when absent or bad."""
    for prop in model.metadata_props:
        if prop.key == ONNX_META_KEY:
            return ModelMeta.from_json(prop.value, where=where)
    raise ValueError(f"{where}: no drivesegrt metadata (metadata_props[{ONNX_META_KEY!r}]); "
                     f"export it with 'drivesegrt export'")


def write_meta(model: onnx.ModelProto, meta: ModelMeta) -> None:
    """Embed (or replace) the metadata in ``model`` in place."""
    keep = [p for p in model.metadata_props if p.key != ONNX_META_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, meta.to_json()


def read_meta_file(path: str | os.PathLike) -> ModelMeta:
    """Metadata of an ONNX file without loading its weights."""
    return read_meta(load_onnx(path, load_external_data=False), where=str(path))


# What the graph's first input and output may be for each declared format: element types
# (onnx.TensorProto) and the rank and channel axis of the input.
_T = onnx.TensorProto
_INPUT_TYPES = {"float_nchw": (_T.FLOAT, _T.FLOAT16), "uint8_nhwc_bgr": (_T.UINT8,)}
_CHANNEL_AXIS = {"float_nchw": 1, "uint8_nhwc_bgr": 3}
_OUTPUT = {"logits": ((_T.FLOAT, _T.FLOAT16), 4), "labels": ((_T.INT32, _T.INT64, _T.UINT8), 3)}


def check_graph_io(model: onnx.ModelProto, meta: ModelMeta, where: str) -> tuple[int, int] | None:
    """Check the graph's first input and output against ``meta`` (input_format, output);
    ValueError naming ``where`` and both sides when they disagree. Returns the input's fixed
    (H, W), or None when height or width is dynamic."""
    if meta.input_format not in _INPUT_TYPES:
        raise ValueError(f"{where}: unknown input_format {meta.input_format!r}; allowed: "
                         f"{', '.join(_INPUT_TYPES)}")
    if meta.output not in _OUTPUT:
        raise ValueError(f"{where}: unknown output {meta.output!r}; allowed: {', '.join(_OUTPUT)}")
    inputs = [i for i in model.graph.input
              if i.name not in {t.name for t in model.graph.initializer}]
    if not inputs or not model.graph.output:
        raise ValueError(f"{where}: the graph has no input or no output")
    x, y = inputs[0].type.tensor_type, model.graph.output[0].type.tensor_type
    if x.elem_type not in _INPUT_TYPES[meta.input_format]:
        raise ValueError(f"{where}: metadata declares input {meta.input_format} but the graph "
                         f"takes {_type_name(x.elem_type)} input")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in x.shape.dim]
    axis = _CHANNEL_AXIS[meta.input_format]
    if len(dims) != 4 or dims[axis] not in (3, None):
        raise ValueError(f"{where}: metadata declares input {meta.input_format} but the graph "
                         f"input has shape {_shape(dims)}")
    types, rank = _OUTPUT[meta.output]
    if y.elem_type not in types or (y.HasField("shape") and len(y.shape.dim) != rank):
        kind = _type_name(y.elem_type)
        raise ValueError(f"{where}: metadata declares output {meta.output} but the graph "
                         f"returns {kind} of rank {len(y.shape.dim)}")
    hw = [dims[i] for i in ((2, 3) if axis == 1 else (1, 2))]
    return None if None in hw else (hw[0], hw[1])


def _type_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def _shape(dims) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"
