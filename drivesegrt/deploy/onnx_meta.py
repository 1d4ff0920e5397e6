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
