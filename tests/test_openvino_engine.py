"""OpenVinoEngine: same ONNX files and I/O formats as ONNX Runtime, checked against torch and ORT."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from helpers import HIGHWAY_CLIP, camvid_images, random_frames, read_summary, tiny_model

from drivesegrt import cli
from drivesegrt.deploy.export import export_onnx
from drivesegrt.deploy.quantize import quantize_int8
from drivesegrt.engines import load_engine
from drivesegrt.infer.build import model_path
from drivesegrt.preprocess import normalize

pytest.importorskip("openvino", reason="openvino not installed (pip install '.[openvino]')")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, meta = tiny_model("segnet")          # max-pool indices + unpooling: the hard graph
    d = tmp_path_factory.mktemp("ov")
    export_onnx(model, meta, d / "logits.onnx", dynamic_hw=True)
    export_onnx(model, meta, d / "labels.onnx", uint8_input=True, argmax=True)
    return model, meta, d


def test_logits_engine_matches_torch_and_follows_the_batch_shape(exported):
    model, meta, d = exported
    with load_engine("openvino", d / "logits.onnx", threads=1) as eng:
        spec = eng.spec
        assert (spec.backend, spec.device, spec.precision) == ("openvino", "cpu", "fp32")
        assert spec.providers[0].startswith("OpenVINO") and spec.meta.class_names == meta.class_names
        h, w = meta.input_size
        for n, size in [(2, (h, w)), (1, (h, w)), (1, (2 * h, 2 * w))]:   # recompiles per shape
            x = normalize(random_frames(n, size, seed=n), meta.mean, meta.std)
            out = eng.infer(x)
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy()
            assert out.shape == ref.shape and np.abs(out - ref).max() <= 1e-4
        first = eng.infer(x)
        eng.infer(normalize(random_frames(1, (2 * h, 2 * w), seed=9), meta.mean, meta.std))
        assert np.array_equal(first, eng.infer(x))     # outputs are copies, not the engine's buffer


def test_labels_engine_takes_uint8_frames(exported):
    _, meta, d = exported
    eng = load_engine("openvino", d / "labels.onnx")
    ort_eng = load_engine("onnxruntime", d / "labels.onnx")
    assert (eng.spec.input_format, eng.spec.output) == ("uint8_nhwc_bgr", "labels")
    frames = random_frames(3, meta.input_size)
    labels = eng.infer(frames)
    assert labels.shape == (3, *meta.input_size) and labels.dtype == np.int32
    assert (labels == ort_eng.infer(frames)).mean() >= 0.9999
    with pytest.raises(ValueError, match="labels.onnx: expects uint8_nhwc_bgr"):
        eng.infer(np.zeros((1, 3, 64, 96), np.float32))


def test_cuda_is_refused_by_name(exported):
    """File errors (missing, corrupt, no metadata, unknown options) are tested for both ONNX
    backends in test_onnxruntime_engine.py."""
    _, _, d = exported
    with pytest.raises(ValueError, match="backend openvino cannot run on device 'cuda': cpu only"):
        load_engine("openvino", d / "logits.onnx", device="cuda")


def test_bundled_model_fp32_and_int8_agree_with_onnxruntime(shared_data, tmp_path):
    """Real CamVid test frames through the bundled ONNX: OpenVINO fp32 gives ORT's classes; the
    symmetric Q/DQ file (the TensorRT recipe) runs as int8 and stays close to fp32."""
    import cv2

    int8 = tmp_path / "bundled.int8.onnx"
    calib = [p for p in sorted((shared_data / "camvid" / "train").glob("*.png"))[::60]]
    quantize_int8(model_path(None, "onnxruntime"), int8, calib)
    fp32_ov = load_engine("openvino", model_path(None, "openvino"))
    h, w = fp32_ov.spec.input_size
    frames = np.stack([cv2.resize(cv2.imread(str(p)), (w, h)) for p in camvid_images(4)])
    ref = load_engine("onnxruntime", model_path(None, "onnxruntime")).infer(frames).argmax(1)
    assert (fp32_ov.infer(frames).argmax(1) == ref).mean() >= 0.9999
    int8_ov = load_engine("openvino", int8)
    assert int8_ov.spec.precision == "int8"
    int8_labels = int8_ov.infer(frames).argmax(1)
    int8_ort = load_engine("onnxruntime", int8).infer(frames).argmax(1)
    assert (int8_labels == ref).mean() >= 0.95
    assert (int8_labels == int8_ort).mean() >= 0.97    # same Q/DQ graph, different int8 kernels


def test_cli_run_and_eval_with_openvino(shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["run", "--backend", "openvino", "--source", str(HIGHWAY_CLIP),
                   "--max-frames", "20", "--output", str(out), "--save-masks"])
    assert rc == 0
    s = read_summary(out)
    assert (s["frames_in"], s["frames_out"]) == (20, 20)
    assert len(list((out / "masks").iterdir())) == 20
    capsys.readouterr()
    rc = cli.main(["eval", "--model", str(model_path(None, "onnxruntime")), "--model",
                   str(model_path(None, "openvino")), "--backend", "onnxruntime", "--backend", "openvino",
                   "--data", str(shared_data / "camvid"), "--max-images", "3"])
    table = capsys.readouterr().out
    assert rc == 0
    agreement = next(line for line in table.splitlines() if line.startswith("agreement vs 1st"))
    assert [float(v) for v in agreement.split()[-2:]][1] >= 99.99    # OpenVINO vs ORT fp32


def test_missing_openvino_is_one_line_exit_2(monkeypatch, capsys, shared_data):
    monkeypatch.setitem(sys.modules, "openvino", None)       # as if not installed
    rc = cli.main(["eval", "--model", str(model_path(None, "openvino")), "--backend", "openvino",
                   "--data", str(shared_data / "camvid"), "--max-images", "1"])
    assert rc == 2
    assert capsys.readouterr().err == \
        "drivesegrt: error: OpenVINO is not installed (pip install 'drivesegrt[openvino]')\n"
