"""ONNX export: numerics vs PyTorch through ONNX Runtime, metadata, options, TensorRT op check."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import onnx
import pytest
import torch
from helpers import (
    camvid_images,
    cli_main,
    onnx_infer,
    random_frames,
    tiny_checkpoint,
    tiny_model,
)
from onnx import TensorProto, helper

from drivesegrt.deploy.export import export_onnx
from drivesegrt.deploy.onnx_meta import read_meta_file
from drivesegrt.deploy.trt_check import check_tensorrt, load_rules
from drivesegrt.models import available_models
from drivesegrt.preprocess import normalize


def _agreement(a, b) -> float:
    return float((np.asarray(a) == np.asarray(b)).mean())


@pytest.mark.parametrize("name", available_models())
def test_export_matches_torch(name, tmp_path):
    model, meta = tiny_model(name)
    out = tmp_path / f"{name}.onnx"
    new_meta = export_onnx(model, meta, out)
    assert new_meta == dataclasses.replace(meta, input_format="float_nchw", output="logits",
                                           precision="fp32")
    assert read_meta_file(out) == new_meta
    proto = onnx.load(str(out))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    for batch in (1, 3):   # dynamic batch
        x = torch.randn(batch, 3, *meta.input_size)
        with torch.no_grad():
            ref = model(x).numpy()
        got = onnx_infer(out, x.numpy())
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-4
        assert _agreement(got.argmax(1), ref.argmax(1)) >= 0.9999
    assert check_tensorrt(out) == []


@pytest.mark.parametrize("name", available_models())
def test_export_uint8_input_argmax(name, tmp_path):
    model, meta = tiny_model(name)
    out = tmp_path / f"{name}_u8_argmax.onnx"
    new_meta = export_onnx(model, meta, out, uint8_input=True, argmax=True)
    assert (new_meta.input_format, new_meta.output) == ("uint8_nhwc_bgr", "labels")
    frames = random_frames(2, meta.input_size)
    with torch.no_grad():
        ref = model(torch.from_numpy(normalize(frames, meta.mean, meta.std))).argmax(1).numpy()
    got = onnx_infer(out, frames)
    assert got.dtype == np.int32 and got.shape == ref.shape
    assert _agreement(got, ref) >= 0.9999
    assert check_tensorrt(out) == []


def test_export_dynamic_hw(tmp_path):
    model, meta = tiny_model("mobileseg")
    out = tmp_path / "dyn.onnx"
    export_onnx(model, meta, out, dynamic_hw=True, argmax=True)
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        ref = model(x).argmax(1).numpy()
    assert _agreement(onnx_infer(out, x.numpy()), ref) >= 0.9999


def test_export_dynamo_exporter(tmp_path):
    model, meta = tiny_model("mobileseg")
    out = tmp_path / "dynamo.onnx"
    export_onnx(model, meta, out, exporter="dynamo")
    x = torch.randn(2, 3, *meta.input_size)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(onnx_infer(out, x.numpy()) - ref).max() <= 1e-4
    assert read_meta_file(out).precision == "fp32"
    assert check_tensorrt(out) == []


def test_fp16_variant_agrees_on_camvid(tmp_path):
    """fp16 weights/activations, fp32 I/O; argmax agreement with fp32 >= 99.9 % on CamVid."""
    model, meta = tiny_model("mobileseg", input_size=(360, 480))
    fp32, fp16 = tmp_path / "fp32.onnx", tmp_path / "fp16.onnx"
    export_onnx(model, meta, fp32)
    assert export_onnx(model, meta, fp16, fp16=True).precision == "fp16"
    proto = onnx.load(str(fp16))
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(i.data_type == TensorProto.FLOAT16 for i in proto.graph.initializer)
    frames = np.stack([cv2.resize(cv2.imread(str(p)), (480, 360)) for p in camvid_images(3)])
    x = normalize(frames, meta.mean, meta.std)
    agree = _agreement(onnx_infer(fp16, x).argmax(1), onnx_infer(fp32, x).argmax(1))
    print(f"fp16 vs fp32 argmax agreement: {agree:.5f}")
    assert agree >= 0.999
    assert check_tensorrt(fp16) == []


def test_export_rejects_old_opset(tmp_path):
    model, meta = tiny_model("mobileseg")
    with pytest.raises(ValueError, match="opset 13"):
        export_onnx(model, meta, tmp_path / "x.onnx", opset=13)


# --- TensorRT op check on hand-built graphs ---------------------------------------------------

def _graph(nodes, inputs, outputs, initializers=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, dtype=TensorProto.FLOAT, shape=(1, 4, 8, 8)):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_trt_check_rejects_maxunpool():
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool1", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("MaxUnpool", ["y", "idx"], ["z"], name="unpool1",
                              kernel_shape=[2, 2], strides=[2, 2])]
    problems = check_tensorrt(_graph(nodes, [_vi("x")], [_vi("z")]))
    assert any("unpool1" in p and "MaxUnpool" in p and "not supported" in p for p in problems)
    assert any("pool1 (MaxPool)" in p and "Indices" in p for p in problems)


def test_trt_check_attributes_and_types():
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    nodes = [helper.make_node("Cast", ["x"], ["xf"], name="cast_in", to=TensorProto.FLOAT),
             helper.make_node("Resize", ["xf", "", "scales"], ["r"], name="resize_cubic",
                              mode="cubic"),
             helper.make_node("Cast", ["r"], ["r8"], name="to_u8", to=TensorProto.UINT8),
             helper.make_node("Cast", ["r8"], ["out"], name="back", to=TensorProto.FLOAT)]
    problems = check_tensorrt(_graph(nodes, [_vi("x", TensorProto.UINT8)],
                                     [_vi("out", shape=(1, 4, 16, 16))], [scales]))
    assert any("resize_cubic" in p and "mode='cubic'" in p for p in problems)
    assert any("r8" in p and "UINT8" in p and "to_u8" in p for p in problems)
    assert not any("cast_in" in p for p in problems)   # UINT8 at the network input is fine


def test_trt_check_qdq_zero_point_and_custom_domain():
    init = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
            helper.make_tensor("zp", TensorProto.INT8, [], [3])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q1"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"], name="dq1"),
             helper.make_node("FusedConv", ["dq"], ["y"], name="ms1", domain="com.microsoft")]
    model = _graph(nodes, [_vi("x")], [_vi("y")], init)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    problems = check_tensorrt(model)
    assert any("q1" in p and "zero point" in p for p in problems)
    assert any("dq1" in p and "zero point" in p for p in problems)
    assert any("ms1" in p and "com.microsoft" in p for p in problems)


def test_trt_ops_file_names_its_version():
    rules = load_rules()
    assert rules["tensorrt_version"] and "operators.md" in rules["source"]
    assert rules["ops"]["MaxUnpool"]["supported"] is False
    assert rules["ops"]["Conv"]["supported"] is True


# --- CLI ---------------------------------------------------------------------------------------

def test_cli_export_and_check(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "m.onnx"
    assert cli_main("export", "--model", ckpt, "--out", out, "--argmax", "--uint8-input",
                    "--check-trt") == 0
    assert "TensorRT op check: passed" in capsys.readouterr().out
    assert read_meta_file(out).output == "labels"


def test_cli_export_missing_checkpoint(tmp_path, capsys):
    assert cli_main("export", "--model", tmp_path / "nope.pt", "--out", tmp_path / "x.onnx") == 2
    err = capsys.readouterr().err
    assert err == f"drivesegrt: error: model file not found: {tmp_path / 'nope.pt'}\n"
    assert not (tmp_path / "x.onnx").exists()
