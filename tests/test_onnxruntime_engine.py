"""OnnxRuntimeEngine: metadata from the file, providers, I/O formats, errors naming the file."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import torch
from helpers import random_frames, tiny_model

from drivesegrt.deploy.export import export_onnx
from drivesegrt.engines import load_engine
from drivesegrt.engines.onnxruntime_engine import OnnxRuntimeEngine
from drivesegrt.preprocess import normalize


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, meta = tiny_model("mobileseg")
    d = tmp_path_factory.mktemp("ort")
    export_onnx(model, meta, d / "logits.onnx")
    export_onnx(model, meta, d / "labels.onnx", uint8_input=True, argmax=True)
    return model, meta, d


def test_logits_engine(exported):
    model, meta, d = exported
    with load_engine("onnxruntime", d / "logits.onnx", device="cpu", intra_op_threads=1) as eng:
        spec = eng.spec
        assert (spec.backend, spec.device, spec.precision) == ("onnxruntime", "cpu", "fp32")
        assert spec.providers == ("CPUExecutionProvider",)
        assert spec.meta.class_names == meta.class_names and spec.input_size == meta.input_size
        x = normalize(random_frames(2, meta.input_size), meta.mean, meta.std)
        out = eng.infer(x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert out.shape == ref.shape and np.abs(out - ref).max() <= 1e-4


def test_labels_engine_takes_uint8_frames(exported):
    _, meta, d = exported
    eng = OnnxRuntimeEngine.load(str(d / "labels.onnx"))
    assert (eng.spec.input_format, eng.spec.output) == ("uint8_nhwc_bgr", "labels")
    labels = eng.infer(random_frames(3, meta.input_size))
    assert labels.shape == (3, 16, 24) and labels.dtype == np.int32
    with pytest.raises(ValueError, match="uint8_nhwc_bgr"):
        eng.infer(np.zeros((1, 3, 64, 96), np.float32))


def test_cuda_request_without_cuda_ep_is_refused(exported):
    """No silent CPU fallback: asking for CUDA where this onnxruntime cannot provide it is
    bad input naming the backend and the device."""
    import onnxruntime as ort

    _, _, d = exported
    if "CUDAExecutionProvider" in ort.get_available_providers():
        eng = load_engine("onnxruntime", d / "logits.onnx", device="cuda")
        assert eng.spec.providers[0] == "CUDAExecutionProvider"
        return
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError) as e:
            load_engine("onnxruntime", d / "logits.onnx", device=device)
        assert str(e.value) == (f"backend onnxruntime cannot run on device {device!r}: this "
                                f"onnxruntime build has no CUDA execution provider (install "
                                f"onnxruntime-gpu, or use --device cpu)")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_errors_name_the_file(tmp_path, exported, backend):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="openvino not installed")
    with pytest.raises(FileNotFoundError) as e:
        load_engine(backend, tmp_path / "missing.onnx")
    assert str(e.value) == f"ONNX file not found: {tmp_path / 'missing.onnx'}"
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x00not an onnx file")
    with pytest.raises(ValueError) as e:
        load_engine(backend, bad)
    # the parser's own reason (protobuf's words) follows in parentheses
    assert re.fullmatch(rf"{re.escape(str(bad))}: not a readable ONNX model \(.+\)", str(e.value))
    _, _, d = exported
    proto = onnx.load(str(d / "logits.onnx"))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ValueError) as e:
        load_engine(backend, bare)
    assert str(e.value) == (f"{bare}: no drivesegrt metadata (metadata_props['drivesegrt']); "
                            f"export it with 'drivesegrt export'")
    with pytest.raises(ValueError) as e:
        load_engine(backend, d / "logits.onnx", colour="blue")
    assert str(e.value) == f"{backend} engine: unknown options ['colour']"
