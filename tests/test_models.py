"""Model zoo: every registered model builds at tiny width, trains a step, keeps the expected output
size at odd input sizes, exports to ONNX that ONNX Runtime runs like torch; SegNet's
TensorRT-friendly unpooling equals torch's max_pool2d(return_indices) + max_unpool2d, ties included."""
from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import onnx_infer, tiny_net

from drivesegrt.models import MODELS, build_model
from drivesegrt.models.fcn import FCN_UPSAMPLE
from drivesegrt.models.realtime import UPSAMPLE_MODES as MOBILESEG_UPSAMPLE
from drivesegrt.models.unet import UNET_UPSAMPLE
from drivesegrt.models.upsample import (
    UPSAMPLE_MODES,
    Upsample,
    bed_of_nails_2x2,
    max_unpool_2x2,
)

NUM_CLASSES = 5
ODD = (37, 51)          # not a multiple of any stride; 5 pools need >= 32 pixels

ALLOWED_UPSAMPLE = {"mobileseg": MOBILESEG_UPSAMPLE, "fcn32s": FCN_UPSAMPLE,
                    "fcn16s": FCN_UPSAMPLE, "fcn8s": FCN_UPSAMPLE, "segnet": UPSAMPLE_MODES,
                    "unet": UNET_UPSAMPLE, "encdec": UPSAMPLE_MODES,
                    "espnetv2": ()}   # its bilinear (aligned corners) is part of its weights
# Models whose ONNX graph serves the input size it was exported at (resampling sizes constant).
FIXED_INPUT_SIZE = {"espnetv2"}

# Ops the ONNX-TensorRT parser imports (onnx-tensorrt docs/operators.md); no MaxUnpool, no Mod.
TRT_PARSABLE = {"Add", "AveragePool", "BatchNormalization", "Cast", "Concat", "Constant",
                "ConstantOfShape", "Conv", "ConvTranspose", "DepthToSpace", "Div", "Equal",
                "Gather", "GlobalAveragePool", "Identity", "MatMul", "MaxPool", "Mul", "Pad",
                "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Slice", "Sub", "Transpose",
                "Unsqueeze"}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def expected_size(name: str, h: int, w: int) -> tuple[int, int]:
    # mobileseg stops at stride 4 (postprocess upsamples); the classic models return full size
    return (math.ceil(h / 4), math.ceil(w / 4)) if name == "mobileseg" else (h, w)


def export_onnx(model: nn.Module, x: torch.Tensor, path) -> onnx.ModelProto:
    """TorchScript exporter (still in torch 2.13, deprecated), opset 17, dynamic N/H/W."""
    dyn = {0: "n", 2: "h", 3: "w"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": dyn, "y": dyn})
    return onnx.load(str(path))


def reference_unpool(y, x):
    """torch's own switches: what the TensorRT-friendly unpooling must reproduce."""
    _, idx = F.max_pool2d(x, 2, 2, return_indices=True)
    return F.max_unpool2d(y, idx, 2, 2, output_size=x.shape[-2:])


def tie_heavy(shape) -> torch.Tensor:
    # ReLU of rounded values: most windows hold several equal maxima (zeros and small integers)
    return torch.relu(torch.randn(shape).round())


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_backward_shape(name):
    model = tiny_net(name, NUM_CLASSES).train()
    x = torch.randn(2, 3, *ODD)
    y = model(x)                                          # (2, K, h, w)
    assert y.shape == (2, NUM_CLASSES, *expected_size(name, *ODD))
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: parameters without gradient: {missing[:3]}"


@pytest.mark.parametrize("name,mode", [(n, m) for n in MODELS for m in ALLOWED_UPSAMPLE[n]])
def test_every_upsample_choice_runs(name, mode):
    model = tiny_net(name, NUM_CLASSES, upsample=mode).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 33, 47))
    assert y.shape == (1, NUM_CLASSES, *expected_size(name, 33, 47))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name,mode", [("fcn8s", "max_unpool"), ("unet", "max_unpool"),
                                       ("segnet", "cubic"), ("encdec", "")])
def test_bad_upsample_is_a_value_error(name, mode):
    with pytest.raises(ValueError) as e:
        tiny_net(name, NUM_CLASSES, upsample=mode)
    assert str(e.value) == (f"upsample {mode!r} is not supported here; "
                            f"allowed: {', '.join(ALLOWED_UPSAMPLE[name])}")


def test_unknown_model_is_a_value_error():
    with pytest.raises(ValueError) as e:
        build_model("nope", 11)
    assert str(e.value) == ("unknown model 'nope'; "
                            "allowed: mobileseg, fcn32s, fcn16s, fcn8s, segnet, unet, encdec, espnetv2")


# every model at its default upsampling, and every upsampling choice once (encdec takes them all)
EXPORT_CASES = [(n, None) for n in MODELS] + [("encdec", m) for m in UPSAMPLE_MODES
                                               if m != "nearest"]


@pytest.mark.parametrize("name,mode", EXPORT_CASES)
def test_onnx_export_matches_torch(name, mode, tmp_path):
    model = tiny_net(name, NUM_CLASSES, **({"upsample": mode} if mode else {})).eval()
    graph = export_onnx(model, torch.randn(1, 3, *ODD), tmp_path / f"{name}.onnx")
    ops = [n.op_type for n in graph.graph.node]
    assert "MaxUnpool" not in ops
    assert all(len(n.output) == 1 for n in graph.graph.node if n.op_type == "MaxPool")
    assert set(ops) <= TRT_PARSABLE, f"not TensorRT-parsable: {set(ops) - TRT_PARSABLE}"
    second = (2, 3, *ODD) if name in FIXED_INPUT_SIZE else (2, 3, 64, 96)
    for shape in ((1, 3, *ODD), second):                # dynamic axes: a second size and batch
        x = torch.randn(shape)
        with torch.no_grad():
            ref = model(x).numpy()
        out = onnx_infer(tmp_path / f"{name}.onnx", x.numpy())
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() < 1e-4


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 4, 9, 13), (2, 2, 16, 7), (1, 1, 3, 2)])
@pytest.mark.parametrize("kind", ["random", "ties", "zeros"])
def test_max_unpool_equals_torch(shape, kind):
    x = {"random": torch.randn(shape), "ties": tie_heavy(shape),
         "zeros": torch.zeros(shape)}[kind]                # (N, C, H, W)
    pooled = F.max_pool2d(x, 2, 2)                         # (N, C, H//2, W//2), floored
    y = torch.randn_like(pooled)
    out = max_unpool_2x2(y, x, pooled)
    assert out.shape == x.shape
    assert torch.equal(out, reference_unpool(y, x))


def test_max_unpool_ties_mixed_windows():
    # hand-made windows: all equal, max twice in the bottom row, max at each single corner
    x = torch.tensor([[1., 1., 0., 2., 0., 0., 5., 0.],
                      [1., 1., 2., 2., 0., 0., 0., 5.]]).reshape(1, 1, 2, 8)
    pooled = F.max_pool2d(x, 2, 2)
    y = torch.arange(1., 5.).reshape(1, 1, 1, 4)
    expected = torch.tensor([[1., 0., 0., 2., 3., 0., 4., 0.],
                             [0., 0., 0., 0., 0., 0., 0., 0.]]).reshape(1, 1, 2, 8)
    assert torch.equal(max_unpool_2x2(y, x, pooled), expected)
    assert torch.equal(reference_unpool(y, x), expected)


class PoolUnpool(nn.Module):
    """x (N, C, H, W) -> scaled pooled values put back at the first-max switches."""

    def forward(self, x):
        pooled = F.max_pool2d(x, 2, 2)
        return max_unpool_2x2(pooled * 2 + 1, x, pooled)


def test_max_unpool_onnx_keeps_first_max(tmp_path):
    graph = export_onnx(PoolUnpool(), tie_heavy((1, 3, 9, 13)), tmp_path / "unpool.onnx")
    ops = [n.op_type for n in graph.graph.node]
    assert "MaxUnpool" not in ops and set(ops) <= TRT_PARSABLE
    assert all(len(n.output) == 1 for n in graph.graph.node if n.op_type == "MaxPool")
    for shape in ((1, 3, 9, 13), (2, 3, 12, 7)):
        x = tie_heavy(shape)
        pooled = F.max_pool2d(x, 2, 2)
        expected = reference_unpool(pooled * 2 + 1, x).numpy()
        assert np.array_equal(onnx_infer(tmp_path / "unpool.onnx", x.numpy()), expected)


def test_default_upsampling():
    # SegNet unpools with the switches of each of its five encoder stages
    model = tiny_net("segnet", NUM_CLASSES)
    assert [up.mode for up in model.ups] == ["max_unpool"] * 5
    assert tiny_net("encdec", NUM_CLASSES).ups[0].mode == "nearest"
    assert tiny_net("fcn8s", NUM_CLASSES).final_up.mode == "transposed"
    assert tiny_net("unet", NUM_CLASSES).ups[0].mode == "transposed"


def test_bed_of_nails_places_top_left():
    y = torch.tensor([[1., 2.], [3., 4.]]).reshape(1, 1, 2, 2)
    out = bed_of_nails_2x2(y, (5, 4))                      # odd height: a zero row at the bottom
    expected = torch.zeros(1, 1, 5, 4)
    expected[..., 0:4:2, 0::2] = y
    assert torch.equal(out, expected)


def test_transposed_bilinear_init_interpolates():
    # FCN's upsampling starts as bilinear interpolation: a constant map stays constant inside
    up = Upsample("transposed", 3, factor=8, kernel=16, bilinear_init=True)
    out = up(torch.ones(1, 3, 4, 5), (32, 40))             # (1, 3, 32, 40)
    assert torch.allclose(out[..., 8:-8, 8:-8], torch.ones(1, 3, 16, 24))


def test_max_unpool_without_switches_is_a_value_error():
    with pytest.raises(ValueError) as e:
        Upsample("max_unpool", 4)(torch.ones(1, 4, 2, 2), (4, 4))
    assert str(e.value) == "upsample 'max_unpool' needs the encoder's pooling switches"
