"""ESPNetv2: the authors' Cityscapes checkpoints load strictly at every width and give their
logits; any input size; the fused pyramid equals the plain one (eval and training); the ONNX
export passes the TensorRT op check and runs like torch; 19 classes = 20 minus background."""
from __future__ import annotations

import copy
import re

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from helpers import CAMVID, SHARED

from drivesegrt.deploy.export import export_onnx
from drivesegrt.deploy.trt_check import check_tensorrt
from drivesegrt.labels import CITYSCAPES19
from drivesegrt.meta import ModelMeta
from drivesegrt.models import build_model
from drivesegrt.models.espnetv2 import (
    BACKGROUND,
    CITYSCAPES_CLASSES,
    CITYSCAPES_WEIGHTS,
    PYRAMID_MIN_SIZE,
    PYRAMID_SCALES,
    WIDTHS,
    ESPNetv2,
    PyramidPool,
    adaptive_avg_pool,
    cityscapes_espnetv2,
    drop_background,
    init_from_cityscapes,
    load_cityscapes_weights,
    prelu,
)
from drivesegrt.preprocess import normalize

WEIGHTS = SHARED / "weights" / "espnetv2_cityscapes"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# The authors' own model (EdgeNets 2b232d3, model/segmentation/espnetv2.py) on CamVid test image
# 0001TP_008550.png resized to 384x512 (cv2 linear) and normalized as above: the 20 logits'
# spatial means, and the logits at three pixels (row, col).
REFERENCE = {
    0.5: {"mean": [0.33695, 0.16612, 6.13461, 1.14435, -0.37248, 2.32508, -0.72773, 0.47227,
                   2.95988, -1.74677, -0.67252, 0.16794, -2.44906, 1.47634, 1.73901, -1.42982,
                   -2.03512, -2.40565, -2.56658, -2.98235],
          (0, 0): [0.1571, -0.7781, 4.88, 2.7404, 1.3703, 1.1733, -1.8017, 0.9287, 1.7611,
                   -1.2844, -3.44, 1.1654, -3.2616, 2.5211, 2.0243, 1.4709, 0.7274, -4.5748,
                   -2.7781, -3.2284],
          (200, 300): [-5.1552, -4.24, 6.1692, -0.7933, -0.5639, 5.3784, 3.5642, 1.8446, 7.0206,
                       -2.0184, 0.8306, -0.0287, -1.2421, -0.42, 0.9694, -1.3348, -2.6147,
                       -2.4022, -2.5084, -3.3456],
          (383, 511): [4.4558, 4.6221, 1.7343, 2.2264, 0.2132, 0.8615, -4.6988, -2.716, 1.4647,
                       2.4771, -5.3417, 1.546, -1.5789, 3.0255, 0.1736, -1.8455, -3.7218,
                       -0.5977, 0.2677, -2.725]},
    2.0: {"mean": [0.9801, 1.1913, 5.39765, -0.89694, -1.36771, 1.4257, -0.94082, 0.7, 3.32715,
                   -1.40878, 2.09541, 1.52731, -0.50405, -0.50355, -0.49965, -3.04206, -2.733,
                   -0.76221, -2.34876, -1.90992],
          (0, 0): [-0.1926, -0.9311, 4.3998, -0.1815, -1.1915, -0.3061, -0.6285, 0.3506, 0.9914,
                   -2.9636, 0.1126, 3.2053, -0.2086, 2.1528, 0.982, -0.1698, 0.0709, -1.4679,
                   -2.6932, -1.6134],
          (200, 300): [-2.4013, -2.0306, 4.8222, -0.2427, 0.1404, 1.0605, -0.129, 1.352, 7.3453,
                       -0.5364, 0.9913, 1.4788, 0.428, -0.3219, -0.9072, -2.4115, -5.5106, 0.418,
                       -1.794, -1.9476],
          (383, 511): [6.9582, 4.24, 1.0986, 0.4725, 1.5305, -0.8048, -5.5327, -0.1139, -0.3094,
                       1.2231, -1.2755, 0.7055, -1.1529, 2.0081, -1.9159, -2.9804, -2.6942,
                       -0.4931, 0.9013, -1.5361]},
}


@pytest.fixture(scope="module")
def weights_dir():
    if not WEIGHTS.is_dir():
        pytest.skip(f"ESPNetv2 Cityscapes weights not found at {WEIGHTS}")
    return WEIGHTS


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _checkpoint(weights_dir, s: float):
    return weights_dir / CITYSCAPES_WEIGHTS.format(s=float(s))


def _key_list(path) -> dict[str, tuple[int, ...]]:
    """keys_s*.txt: 'name [d0, d1, ...] dtype' per line after a '#' header."""
    keys = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"(\S+) \[([\d, ]*)\] (?:float32|int64)", line.strip())
        if m:
            keys[m.group(1)] = tuple(int(d) for d in m.group(2).split(",") if d.strip())
    return keys


@pytest.mark.parametrize("s", [0.5, 2.0])
def test_layout_matches_the_published_key_lists(s, weights_dir):
    listed = _key_list(weights_dir / f"keys_s{s}.txt")
    assert len(listed) == 526
    ours = {k: tuple(v.shape) for k, v in ESPNetv2(CITYSCAPES_CLASSES, s).state_dict().items()}
    assert ours == listed


@pytest.mark.parametrize("s", list(WIDTHS))
def test_every_width_loads_strictly(s, weights_dir):
    path = _checkpoint(weights_dir, s)
    model = build_model("espnetv2", CITYSCAPES_CLASSES, s=s)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    assert load_cityscapes_weights(ESPNetv2(CITYSCAPES_CLASSES, s), path).s == s


@pytest.fixture(scope="module")
def camvid_input():
    path = CAMVID / "test" / "0001TP_008550.png"
    if not path.is_file():
        pytest.skip(f"CamVid test image not found at {path}")
    image = cv2.resize(cv2.imread(str(path)), (512, 384), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(normalize(image, MEAN, STD))              # (1, 3, 384, 512)


@pytest.mark.parametrize("s", [0.5, 2.0])
def test_logits_equal_the_authors(s, weights_dir, camvid_input):
    model = cityscapes_espnetv2(s, weights_dir, background=True)
    with torch.no_grad():
        y = model(camvid_input)[0]                                   # (20, 384, 512)
    ref = REFERENCE[s]
    assert y.shape == (CITYSCAPES_CLASSES, 384, 512)
    assert torch.allclose(y.mean((1, 2)), torch.tensor(ref["mean"]), atol=1e-4)
    for (r, c) in [(0, 0), (200, 300), (383, 511)]:
        assert torch.allclose(y[:, r, c], torch.tensor(ref[(r, c)]), atol=2e-4), (r, c)


@pytest.fixture(scope="module")
def small(weights_dir):
    """The smallest checkpoint, 19 classes."""
    return cityscapes_espnetv2(0.5, weights_dir)


@pytest.mark.parametrize("hw", [(360, 480), (352, 480), (97, 131)])
def test_any_input_size(small, hw):
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        y = small(x)
        half = copy.deepcopy(small)
        half.output_stride = 2
        y_half = half(x)
    assert y.shape == (2, BACKGROUND, *hw)
    assert y_half.shape == (2, BACKGROUND, (hw[0] + 1) // 2, (hw[1] + 1) // 2)
    assert torch.isfinite(y).all()
    # the full-size logits are the half-size ones resized, as the authors trained them
    up = F.interpolate(y_half, size=hw, mode="bilinear", align_corners=True)
    assert torch.allclose(up, y, atol=1e-5)


def test_nineteen_classes_are_twenty_minus_background(weights_dir):
    full = cityscapes_espnetv2(1.0, weights_dir, background=True)
    x = torch.randn(1, 3, 360, 480)
    with torch.no_grad():
        y20 = full(x)
        y19 = drop_background(full)(x)
    assert y20.shape[1] == CITYSCAPES_CLASSES and y19.shape[1] == BACKGROUND
    assert torch.allclose(y19, y20[:, :BACKGROUND], atol=1e-5)
    # and the 19-class weights are a model of their own in the registry
    rebuilt = build_model("espnetv2", BACKGROUND, s=1.0, pyramid_channels=10)
    rebuilt.load_state_dict(full.state_dict(), strict=True)
    with pytest.raises(ValueError, match="expected 20 output channels, got 19"):
        drop_background(full)


def test_init_from_cityscapes_maps_the_classifier_and_loads_the_rest(weights_dir):
    """Every layer but the classifier is the checkpoint's; each new class's classifier row is
    the mean of its sources' rows; a class without a source keeps its fresh weights."""
    path = weights_dir / CITYSCAPES_WEIGHTS.format(s=0.5)
    source = torch.load(path, map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    model = ESPNetv2(3, 0.5, pyramid_channels=10)
    fresh = model.classifier.weight[2].clone()
    init_from_cityscapes(model, path, [[0], [13, 14, 15], []])
    state = model.state_dict()
    head = "bu_dec_l4.merge_layer.3."
    assert all(torch.equal(state[k], v) for k, v in source.items() if not k.startswith(head))
    w, b = source[head + "weight"], source[head + "bias"]
    assert torch.equal(state[head + "weight"][0], w[0])
    assert torch.allclose(state[head + "weight"][1], w[[13, 14, 15]].mean(0))
    assert torch.allclose(state[head + "bias"][1], b[[13, 14, 15]].mean(0))
    assert torch.equal(state[head + "weight"][2], fresh)
    with pytest.raises(ValueError, match="need pyramid_channels=10, the model has 1"):
        init_from_cityscapes(ESPNetv2(3, 0.5), path, [[0], [1], [2]])
    with pytest.raises(ValueError, match="does not match ESPNetv2 s=1.0"):
        init_from_cityscapes(ESPNetv2(3, 1.0, pyramid_channels=10), path, [[0], [1], [2]])
    with pytest.raises(ValueError, match="2 class sources for a model with 3 classes"):
        init_from_cityscapes(model, path, [[0], [1]])


def test_onnx_export_passes_the_tensorrt_check_and_runs_like_torch(small, tmp_path):
    hw = (360, 480)
    meta = ModelMeta.for_label_set("espnetv2", CITYSCAPES19, input_size=hw,
                                   arch_kwargs={"s": 0.5, "pyramid_channels": 10})
    out = tmp_path / "espnetv2.onnx"
    export_onnx(small, meta, out)
    assert check_tensorrt(out) == []
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    # per-channel PRelu and per-branch Gather are what make naive exports slow
    assert not ops & {"PRelu", "Gather", "ScatterND", "Transpose"}, ops
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        ref = small(x).numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    assert got.shape == ref.shape == (2, BACKGROUND, *hw)
    # bilinear resizes round their coordinates differently in ONNX Runtime and torch
    assert np.abs(got - ref).max() <= 1e-3 * max(1.0, np.abs(ref).max())
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.999


def test_onnx_export_uint8_argmax_passes_the_tensorrt_check(small, tmp_path):
    meta = ModelMeta.for_label_set("espnetv2", CITYSCAPES19, input_size=(97, 131))
    out = tmp_path / "labels.onnx"
    export_onnx(small, meta, out, uint8_input=True, argmax=True)
    assert check_tensorrt(out) == []
    frames = np.random.default_rng(0).integers(0, 256, (1, 97, 131, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = small(torch.from_numpy(normalize(frames, MEAN, STD))).argmax(1).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"input": frames})[0]
    assert got.dtype == np.int32 and (got == ref).mean() > 0.999


@pytest.mark.parametrize("src,dst", [((24, 32), (5, 5)), ((45, 60), (23, 30)),
                                     ((68, 90), (45, 60)), ((270, 360), (180, 240)),
                                     ((3, 4), (5, 5)), ((12, 16), (6, 8)), ((7, 9), (7, 3))])
def test_adaptive_avg_pool_equals_torch(src, dst):
    x = torch.randn(2, 3, *src)
    assert torch.allclose(adaptive_avg_pool(x, dst), F.adaptive_avg_pool2d(x, dst), atol=1e-6)


def test_prelu_is_bit_exact():
    x = torch.randn(2, 4, 5, 6)
    x[0, :, 0, 0] = 0.0
    a = torch.tensor([0.25, -0.7, 2.5, 0.0])
    assert torch.equal(prelu(x, a), F.prelu(x, a))


def _plain_pyramid(pp: PyramidPool, x):
    """The pyramid as published: branches concatenated, BN + PReLU, channel shuffle, the
    grouped conv, the 1x1 conv [+ BN + PReLU]; torch's own pooling and resizing."""
    x = pp.projection_layer(x)
    h, w = x.shape[-2:]
    branches = []
    for scale, stage in zip(PYRAMID_SCALES, pp.stages, strict=True):
        size = (max(int(np.ceil(h * scale)), PYRAMID_MIN_SIZE),
                max(int(np.ceil(w * scale)), PYRAMID_MIN_SIZE))
        if scale > 1:
            y = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
            y = F.adaptive_avg_pool2d(stage(y), (h, w))
        elif scale < 1:
            y = stage(F.adaptive_avg_pool2d(x, size))
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=True)
        else:
            y = stage(x)
        branches.append(y)
    y = pp.merge_layer[0](torch.cat(branches, 1))                     # (N, 5p, h, w)
    n, c = y.shape[:2]
    y = y.reshape(n, len(branches), c // len(branches), h, w).transpose(1, 2).reshape(n, c, h, w)
    y = pp.merge_layer[3](pp.merge_layer[2](y))
    return y if pp.br is None else pp.br(y)


@pytest.mark.parametrize("hw", [(12, 16), (23, 30), (45, 60)])
@pytest.mark.parametrize("training", [False, True])
def test_fused_pyramid_equals_the_plain_one(hw, training):
    pp = PyramidPool(32, 10, 48)
    for m in pp.modules():      # non-trivial statistics and slopes
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
        if isinstance(m, torch.nn.PReLU):
            m.weight.data.uniform_(-0.5, 1.5)
    ref = copy.deepcopy(pp)
    pp.train(training)
    ref.train(training)
    x = torch.randn(2, 32, *hw)
    assert torch.allclose(pp(x), _plain_pyramid(ref, x), atol=1e-5)
    ours, theirs = pp.state_dict(), ref.state_dict()
    for k in ours:                                                   # running statistics too
        assert torch.allclose(ours[k].float(), theirs[k].float(), atol=1e-6), k


def test_bad_options_and_files_are_clear_errors(weights_dir, tmp_path):
    with pytest.raises(ValueError, match=r"s=0.75 not supported; allowed: 0.5, 1.0, 1.5, 2.0"):
        ESPNetv2(20, s=0.75)
    with pytest.raises(ValueError, match="output_stride 4"):
        ESPNetv2(20, s=1.0, output_stride=4)
    with pytest.raises(ValueError, match="build with num_classes=20"):
        load_cityscapes_weights(ESPNetv2(19, s=1.0), _checkpoint(weights_dir, 1.0))
    with pytest.raises(ValueError, match=r"s_0.5_city.*does not match ESPNetv2 s=1.0"):
        load_cityscapes_weights(ESPNetv2(20, s=1.0), _checkpoint(weights_dir, 0.5))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_cityscapes_weights(ESPNetv2(20, s=1.0), tmp_path / "nope.pth")


def test_dynamic_size_export_is_refused_and_bench_exports_one_file_per_size(small, tmp_path):
    from drivesegrt.bench.engines import Artifacts
    from drivesegrt.models.checkpoint import save_checkpoint

    meta = ModelMeta.for_label_set("espnetv2", CITYSCAPES19, input_size=(96, 128),
                                   arch_kwargs={"s": 0.5, "pyramid_channels": 10})
    with pytest.raises(ValueError) as e:
        export_onnx(small, meta, tmp_path / "dyn.onnx", dynamic_hw=True)
    assert str(e.value) == ("espnetv2 exports at a fixed input size (its graph holds sizes "
                            "computed from it): export without dynamic H/W, one file per size")
    ckpt = tmp_path / "espnetv2.pt"
    save_checkpoint(ckpt, small, meta)
    art = Artifacts(str(ckpt), tmp_path / "art", None)
    for hw in ((96, 128), (128, 256)):
        sess = ort.InferenceSession(str(art.onnx(hw=hw)), providers=["CPUExecutionProvider"])
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            ref = small(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.shape == ref.shape and (got.argmax(1) == ref.argmax(1)).mean() > 0.999
    assert art.onnx(hw=(96, 128)) != art.onnx(hw=(128, 256))
