"""INT8 Q/DQ post-training quantization: recipe (symmetric, per-channel weights), ORT, TRT check."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import (
    CALIBRATION_LIST,
    CAMVID,
    ROOT,
    cli_main,
    random_frames,
    tiny_model,
    tiny_onnx,
)
from onnx import numpy_helper

from drivesegrt.deploy.export import export_onnx
from drivesegrt.deploy.onnx_meta import read_meta_file
from drivesegrt.deploy.quantize import (
    FrameReader,
    calibrate_ranges,
    calibration_images,
    narrow_convs,
    quantize_int8,
)
from drivesegrt.deploy.trt_check import check_tensorrt
from drivesegrt.preprocess import normalize


@pytest.fixture(scope="module")
def calib_images():
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid train images not found at {CAMVID / 'train'}")
    return calibration_images(CAMVID, CALIBRATION_LIST, num_images=4)


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("q") / "fp32.onnx")


def _inits(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_calibration_list_is_deterministic_and_complete():
    names = [ln for ln in CALIBRATION_LIST.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(names) == 100 and len(set(names)) == 100
    if (CAMVID / "train").is_dir():
        assert all((CAMVID / "train" / n).is_file() for n in names)


@pytest.mark.parametrize("method", ["entropy", "percentile", "minmax"])
def test_qdq_recipe(method, fp32_model, calib_images, tmp_path):
    out = tmp_path / f"int8_{method}.onnx"
    quantize_int8(fp32_model, out, calib_images, method=method)
    q = onnx.load(str(out))
    inits = _inits(q)
    ops = [n.op_type for n in q.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    per_channel = 0
    for n in q.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        assert len(n.input) == 3 and not np.any(inits[n.input[2]]), f"{n.name}: zero point != 0"
        assert inits[n.input[2]].dtype == np.int8
        scale = inits[n.input[1]]
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:     # a weight
            if scale.ndim == 1 and scale.size > 1:
                per_channel += 1
                assert any(a.name == "axis" and a.i == 0 for a in n.attribute)
        elif n.op_type == "QuantizeLinear":                             # an activation
            assert scale.ndim == 0, f"{n.name}: activation scale must be per tensor"
    assert per_channel > 10
    assert read_meta_file(out).precision == "int8"
    assert check_tensorrt(out) == []
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = read_meta_file(out)
    x = normalize(random_frames(2, meta.input_size), meta.mean, meta.std)
    y = sess.run(None, {"input": x})[0]
    assert y.shape == (2, 11, 16, 24) and np.isfinite(y).all()


def test_uint8_argmax_graph_keeps_normalization_float(calib_images, tmp_path):
    model, meta = tiny_model("mobileseg")
    fp32 = tmp_path / "u8.onnx"
    export_onnx(model, meta, fp32, uint8_input=True, argmax=True)
    out = tmp_path / "u8.int8.onnx"
    kept = quantize_int8(fp32, out, calib_images, method="minmax")
    assert "/ArgMax" in kept and any(k.startswith("/preprocess/") for k in kept)
    q = onnx.load(str(out))
    producers = {o: n for n in q.graph.node for o in n.output}
    for n in q.graph.node:
        if n.name.startswith("/preprocess/") or n.op_type == "ArgMax":
            src = producers.get(n.input[0])
            assert src is None or src.op_type != "DequantizeLinear", n.name
    assert check_tensorrt(out) == []
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    labels = sess.run(None, {"input": random_frames(1, meta.input_size)})[0]
    assert labels.dtype == np.int32 and labels.shape == (1, 16, 24)


def test_exclude_keeps_named_layer_float(fp32_model, calib_images, tmp_path):
    classifier = next(n.name for n in onnx.load(str(fp32_model)).graph.node
                      if n.op_type == "Conv" and "classifier" in n.name)
    out = tmp_path / "ex.onnx"
    quantize_int8(fp32_model, out, calib_images, method="minmax", exclude=[classifier])
    q = onnx.load(str(out))
    conv = next(n for n in q.graph.node if n.name == classifier)
    producers = {o: n for n in q.graph.node for o in n.output}
    assert conv.input[1] in _inits(q) and conv.input[1] not in producers   # float weight
    with pytest.raises(ValueError) as e:
        quantize_int8(fp32_model, out, calib_images, exclude=["nope"])
    assert str(e.value) == "--exclude: no node named 'nope' in the model"


def test_calibration_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        calibration_images(tmp_path / "missing")
    assert str(e.value) == f"calibration data folder not found: {tmp_path / 'missing'}"
    with pytest.raises(FileNotFoundError) as e:
        calibration_images(tmp_path, tmp_path / "nolist.txt")
    assert str(e.value) == f"calibration list not found: {tmp_path / 'nolist.txt'}"
    with pytest.raises(ValueError) as e:
        calibration_images(tmp_path)
    assert str(e.value) == f"{tmp_path}: no calibration images"


def test_cli_calibrate(fp32_model, calib_images, tmp_path, capsys):
    out = tmp_path / "cli.int8.onnx"
    rc = cli_main("calibrate", "--model", fp32_model, "--data", CAMVID, "--list",
                  CALIBRATION_LIST, "--num-images", 3, "--method", "minmax", "--out", out)
    printed = capsys.readouterr().out
    assert rc == 0 and "TensorRT op check: passed" in printed and "equalized" in printed
    assert printed.startswith(f"calibrating on 3 images from {CAMVID} (minmax; ")
    assert read_meta_file(out).precision == "int8"
    rc = cli_main("calibrate", "--model", fp32_model, "--data", CAMVID, "--num-images", 2,
                  "--method", "minmax", "--no-equalize", "--out", tmp_path / "plain.onnx")
    assert rc == 0 and "equalized" not in capsys.readouterr().out
    rc = cli_main("calibrate", "--model", out, "--data", CAMVID, "--num-images", 2,
                  "--out", tmp_path / "again.onnx")
    assert rc == 2
    assert capsys.readouterr().err == \
        f"drivesegrt: error: {out}: calibrate an fp32 export, not int8\n"
    assert not (tmp_path / "again.onnx").exists()


def test_uint8_activations_for_the_cpu(fp32_model, calib_images, tmp_path):
    """--activations uint8: asymmetric uint8 activations (ORT's fast x86 kernels), int8
    symmetric per-channel weights; the TensorRT check says it is not for TensorRT."""
    out = tmp_path / "u8.onnx"
    kept = quantize_int8(fp32_model, out, calib_images, method="minmax", activations="uint8")
    q = onnx.load(str(out))
    inits = _inits(q)
    act_types, weight_types = set(), set()
    for n in q.graph.node:
        if n.op_type == "DequantizeLinear":
            (weight_types if n.input[0] in inits else act_types).add(inits[n.input[2]].dtype)
    assert act_types == {np.dtype(np.uint8)} and weight_types == {np.dtype(np.int8)}
    assert any("zero point" in p for p in check_tensorrt(out))
    stem = narrow_convs(onnx.load(str(fp32_model)))
    assert stem and set(stem) <= set(kept)          # narrow convs run fp32 on the CPU
    producers = {o: n for n in q.graph.node for o in n.output}
    for n in q.graph.node:
        if n.name in stem:
            assert n.input[1] in inits and n.input[1] not in producers, n.name
    everything = quantize_int8(fp32_model, tmp_path / "all.onnx", calib_images, method="minmax",
                               activations="uint8", narrow_float=0)
    assert not set(stem) & set(everything)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = read_meta_file(out)
    x = normalize(random_frames(2, meta.input_size), meta.mean, meta.std)
    assert np.isfinite(sess.run(None, {"input": x})[0]).all()
    with pytest.raises(ValueError) as e:
        quantize_int8(fp32_model, tmp_path / "x.onnx", calib_images, activations="int4")
    assert str(e.value) == "activations 'int4'; allowed: int8, uint8"


def test_resize_keeps_its_input_scale(fp32_model, calib_images, tmp_path):
    """Interpolation stays inside its input's range: the Q after a Resize reuses the scale and
    zero point of the DQ before it."""
    out = tmp_path / "rs.onnx"
    quantize_int8(fp32_model, out, calib_images, method="minmax")
    q = onnx.load(str(out))
    inits = _inits(q)
    producers = {o: n for n in q.graph.node for o in n.output}
    consumers = {i: n for n in q.graph.node for i in n.input}
    resizes = [n for n in q.graph.node if n.op_type == "Resize"]
    assert resizes
    for n in resizes:
        dq, qn = producers[n.input[0]], consumers[n.output[0]]
        assert (dq.op_type, qn.op_type) == ("DequantizeLinear", "QuantizeLinear")
        assert inits[dq.input[1]] == inits[qn.input[1]] and inits[dq.input[2]] == inits[qn.input[2]]


def _noise_images(folder, n: int, hw=(40, 60)) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(random_frames(n, hw, seed=3)):
        paths.append(folder / f"n{i:03d}.png")
        cv2.imwrite(str(paths[-1]), img)
    return paths


@pytest.mark.parametrize("method", ["percentile", "entropy", "minmax"])
def test_streamed_calibration_equals_onnxruntime_all_at_once(fp32_model, tmp_path, method):
    """calibrate_ranges reads one image at a time; ONNX Runtime's calibrator (what
    quantize_static ran before) holds all of them. Same ranges and histograms, bit for bit."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepped = tmp_path / "prepped.onnx"
    quant_pre_process(str(fp32_model), str(prepped), skip_symbolic_shape=True)
    proto = onnx.load(str(fp32_model))
    reader = FrameReader(proto.graph.input[0].name, read_meta_file(fp32_model),
                         _noise_images(tmp_path / "imgs", 5))
    streamed = calibrate_ranges(prepped, reader, method, 99.999, tmp_path)
    reader.rewind()
    ort_calibrator = create_calibrator(
        prepped, sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
        augmented_model_path=str(tmp_path / "ort_augmented.onnx"),
        calibrate_method={"percentile": CalibrationMethod.Percentile,
                          "entropy": CalibrationMethod.Entropy,
                          "minmax": CalibrationMethod.MinMax}[method],
        extra_options={"percentile": 99.999})
    ort_calibrator.collect_data(reader)
    reference = ort_calibrator.compute_data()
    assert sorted(streamed.keys()) == sorted(reference.keys()) and len(reference.keys()) > 20
    for name in reference.keys():
        a, b = streamed[name], reference[name]
        assert np.array_equal(a.range_value, b.range_value), name
        assert np.asarray(a.lowest).dtype == np.asarray(b.lowest).dtype == np.float32
        if method != "minmax":
            assert np.array_equal(a.hist, b.hist), name


RSS_PROBE = """
import resource, sys
from pathlib import Path
from drivesegrt.deploy.quantize import quantize_int8
model, out, *images = sys.argv[1:]
quantize_int8(model, out, [Path(p) for p in images], method="percentile")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)   # KiB on Linux
"""


def test_calibration_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """Peak RSS of calibrating 8 vs 32 images (each run in its own process): the same, give
    or take allocator noise. Holding every image's activations (ONNX Runtime's percentile
    calibrator) costs about 7 MiB more per image for this model, 170 MiB for the 24 extra."""
    model = tiny_onnx(tmp_path / "m.onnx", input_size=(128, 192))
    images = [str(p) for p in _noise_images(tmp_path / "imgs", 32)]
    peak_kib = {}
    for n in (8, 32):
        r = subprocess.run([sys.executable, "-c", RSS_PROBE, str(model),
                            str(tmp_path / f"q{n}.onnx"), *images[:n]], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        peak_kib[n] = int(r.stdout.strip().splitlines()[-1])
    assert peak_kib[32] - peak_kib[8] < 25 * 1024, peak_kib


def test_espnetv2_quantizes(calib_images, tmp_path):
    """ESPNetv2 (PReLU as Relu/Sub/Mul/Add, grouped and dilated convs, pooling pyramids),
    uint8 graph input: a runnable Q/DQ file; ``op_types=("Conv",)`` quantizes fewer tensors
    (only what the convolutions read: the element-wise PReLU pieces stay float)."""
    fp32 = tiny_onnx(tmp_path / "esp.onnx", "espnetv2", uint8_input=True)
    out = tmp_path / "esp.u8.onnx"
    quantize_int8(fp32, out, calib_images[:2], method="percentile", activations="uint8",
                  equalize=False)
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node) > 50
    assert read_meta_file(out).precision == "int8"
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": random_frames(1, read_meta_file(out).input_size)})[0]
    assert y.shape[1] == 11 and np.isfinite(y).all()
    convs = tmp_path / "esp.conv.onnx"
    quantize_int8(fp32, convs, calib_images[:2], method="minmax", activations="uint8",
                  equalize=False, op_types=("Conv",))
    count = {path: sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)
             for path in (out, convs)}
    assert 0 < count[convs] < count[out]
