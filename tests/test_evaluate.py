"""``drivesegrt eval`` on real CamVid test images and generated fixtures, tiny random models."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from helpers import CAMVID, cli_main, make_camvid, make_cityscapes, tiny_checkpoint

from drivesegrt.data.splits import open_split
from drivesegrt.labels import CAMVID11, CITYSCAPES19, DRIVING5
from drivesegrt.models.checkpoint import load_model
from drivesegrt.train import evaluate
from drivesegrt.train.train import evaluate as train_evaluate

N_IMAGES = 2


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Two tiny random-weight checkpoints at CamVid's own size (360x480)."""
    tmp = tmp_path_factory.mktemp("ckpt")
    return [tiny_checkpoint(tmp / f"m{s}.pt", input_size=(360, 480), seed=s) for s in (0, 1)]


def run_eval(*argv) -> int:
    return cli_main("eval", *argv)


def test_single_model_json_contract_and_png(ckpts, tmp_path, shared_data, capsys):
    path = ckpts[0]
    out, png = tmp_path / "scores.json", tmp_path / "cm.png"
    assert run_eval("--model", path, "--backend", "torch", "--data", CAMVID, "--split", "test", "--max-images",
                    N_IMAGES, "--json", out, "--confusion", png) == 0
    r = json.loads(out.read_text())
    for key in ("miou", "pixel_acc", "mean_class_acc", "per_class_iou", "images"):
        assert key in r
    assert r["images"] == N_IMAGES and r["backend"] == "torch" and r["split"] == "test"
    assert list(r["per_class_iou"]) == list(CAMVID11.class_names)
    assert all(v is None or 0.0 <= v <= 1.0 for v in r["per_class_iou"].values())
    assert 0.0 <= r["miou"] <= 1.0 and 0.0 <= r["pixel_acc"] <= 1.0
    table = capsys.readouterr().out
    assert "Pedestrian" in table and "mIoU" in table and "agreement" not in table
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 200 and img.std() > 5


def test_scores_match_an_independent_evaluation(ckpts, shared_data, tmp_path):
    """At the model's own input size, eval (Segmenter, linear filter) must give the val-loop's
    numbers (torch bilinear upsample of logits + argmax)."""
    path = ckpts[0]
    model, meta = load_model(path)
    out = tmp_path / "s.json"
    assert run_eval("--model", path, "--backend", "torch", "--data", CAMVID, "--max-images", N_IMAGES,
                    "--json", out) == 0
    ours = json.loads(out.read_text())
    split = open_split(CAMVID, "test")
    from drivesegrt.data.camvid import SegmentationDataset
    ds = SegmentationDataset(split.pairs[:N_IMAGES], split.labels, label_fn=split.read_label)
    ref = train_evaluate(model, ds, meta, torch.device("cpu"))
    assert ours["pixel_acc"] == pytest.approx(ref["pixel_acc"], abs=2e-3)
    assert ours["miou"] == pytest.approx(ref["miou"], abs=5e-3)


def test_several_models_one_table_with_agreement(ckpts, tmp_path, shared_data, capsys):
    a, b = ckpts
    out, png = tmp_path / "cmp.json", tmp_path / "cm.png"
    assert run_eval("--model", a, "--model", b, "--model", a, "--backend", "torch",
                    "--data", CAMVID, "--max-images", N_IMAGES, "--filter", "point",
                    "--json", out, "--confusion", png) == 0
    r = json.loads(out.read_text())
    assert r["reference"] == str(a) and len(r["results"]) == 3
    first, other, same = r["results"]
    assert first["agreement"] == 1.0 and same["agreement"] == 1.0
    assert same["miou"] == first["miou"] and same["per_class_iou"] == first["per_class_iou"]
    assert 0.0 <= other["agreement"] < 1.0
    assert all(x["filter"] == "point" for x in r["results"])
    table = capsys.readouterr().out
    assert "agreement vs 1st" in table and "m1.pt [torch]" in table
    assert [p.name for p in sorted(tmp_path.glob("cm-*.png"))] == ["cm-1.png", "cm-2.png",
                                                                   "cm-3.png"]


def test_agreement_is_the_fraction_of_identical_pixels(ckpts, shared_data):
    from drivesegrt.data.camvid import read_image
    from drivesegrt.engines import load_engine
    from drivesegrt.infer.segmenter import Segmenter

    entries = evaluate.plan_entries([str(c) for c in ckpts], ["torch"])
    split = open_split(CAMVID, "test")
    split = type(split)(split.name, split.split, split.pairs[:1], split.labels, split.read_label)
    for e in entries:
        e.segmenter = Segmenter(load_engine(e.backend, str(e.path)))
    pixels = evaluate.evaluate(entries, split)
    image = read_image(split.pairs[0][0])
    preds = [e.segmenter(image) for e in entries]
    assert pixels == image.shape[0] * image.shape[1]
    assert entries[1].agree == np.count_nonzero(preds[0] == preds[1])
    assert entries[0].cm.sum() == np.count_nonzero(split.read_label(split.pairs[0][1]) != 11)


def test_torch_and_onnx_variants_in_one_table(ckpts, tmp_path, shared_data, capsys):
    """Issue 4 item 7: the checkpoint and its ONNX exports (fp32, fp16, uint8 input + argmax in
    the graph) scored through the same Segmenter, agreement vs the torch reference."""
    from drivesegrt.deploy.export import export_onnx

    path = ckpts[0]
    model, meta = load_model(path)
    fp32, fp16, fused = tmp_path / "m.onnx", tmp_path / "m.fp16.onnx", tmp_path / "m.u8.onnx"
    export_onnx(model, meta, fp32)
    export_onnx(model, meta, fp16, fp16=True)
    export_onnx(model, meta, fused, uint8_input=True, argmax=True)
    out = tmp_path / "cmp.json"
    assert run_eval("--model", path, "--model", fp32, "--model", fp16, "--model", fused,
                    "--backend", "torch", *["--backend", "onnxruntime"] * 3,
                    "--data", CAMVID, "--max-images", 1, "--json", out) == 0
    ref, onnx32, onnx16, onnxu8 = json.loads(out.read_text())["results"]
    assert [r["backend"] for r in (ref, onnx32, onnx16, onnxu8)] == \
        ["torch", "onnxruntime", "onnxruntime", "onnxruntime"]
    assert onnx16["precision"] == "fp16"
    assert onnx32["agreement"] >= 0.9999
    assert onnx16["agreement"] >= 0.99
    assert onnxu8["agreement"] >= 0.999
    assert abs(onnx32["miou"] - ref["miou"]) < 1e-3
    assert "m.fp16.onnx [onnxruntime fp16]" in capsys.readouterr().out


def test_cityscapes_layout(tmp_path):
    root = make_cityscapes(tmp_path / "cs", split="val")
    path = tiny_checkpoint(tmp_path / "cs.pt", labels=CITYSCAPES19, input_size=(32, 32))
    out = tmp_path / "s.json"
    assert run_eval("--model", path, "--backend", "torch", "--data", root, "--split", "val", "--json", out) == 0
    r = json.loads(out.read_text())
    assert r["dataset"] == "cityscapes" and r["images"] == 4
    assert list(r["per_class_iou"]) == list(CITYSCAPES19.class_names)


# --- errors: one line, exit 2, naming the file ------------------------------------------------

def fixture_camvid(root, n=2):
    return make_camvid(root, split="test", n=n, hw=(36, 48))


@pytest.fixture
def tiny(tmp_path):
    return tiny_checkpoint(tmp_path / "t.pt", input_size=(32, 32))


def expect_error(capsys, *argv, line: str):
    """eval exits 2 and its last stderr line (progress bars come first) is ``line``."""
    assert run_eval(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"drivesegrt: error: {line}"


def test_missing_dataset_folder(tiny, tmp_path, capsys):
    expect_error(capsys, "--model", tiny, "--backend", "torch", "--data", tmp_path / "gone",
                 line=f"dataset folder not found: {tmp_path / 'gone'}")


def test_missing_model_and_missing_bundled_model(tmp_path, capsys, monkeypatch):
    from drivesegrt.infer import build

    data = fixture_camvid(tmp_path / "cv")
    expect_error(capsys, "--model", tmp_path / "no.pt", "--data", data,
                 line=f"model file not found: {tmp_path / 'no.pt'} (bundled models: "
                      f"{', '.join(build.BUNDLED)})")
    absent = tmp_path / "weights" / "absent.onnx"
    monkeypatch.setitem(build.BUNDLED, "camvid", {"torch": absent, "onnx": absent,
                                                  "scores": absent})
    expect_error(capsys, "--data", data,
                 line=f"bundled model 'camvid' is missing its file {absent} "
                      f"(reinstall drivesegrt, or pass --model PATH)")


def test_label_out_of_range(tiny, tmp_path, capsys):
    data = fixture_camvid(tmp_path / "cv")
    bad = np.zeros((36, 48), np.uint8)
    bad[5, 5] = 200
    cv2.imwrite(str(data / "testannot" / "f1.png"), bad)
    expect_error(capsys, "--model", tiny, "--backend", "torch", "--data", data,
                 line=f"{data / 'testannot' / 'f1.png'}: label id 200 out of range "
                      f"(0..10, void 11)")


def test_count_and_size_mismatch(tiny, tmp_path, capsys):
    data = fixture_camvid(tmp_path / "cv", n=3)
    cv2.imwrite(str(data / "testannot" / "f0.png"), np.zeros((30, 48), np.uint8))
    expect_error(capsys, "--model", tiny, "--backend", "torch", "--data", data,
                 line=f"{data / 'testannot' / 'f0.png'}: label size 48x30 differs from its "
                      f"image 48x36")
    (data / "testannot" / "f2.png").unlink()
    expect_error(capsys, "--model", tiny, "--backend", "torch", "--data", data,
                 line=f"{data}: 3 images in test/ but 2 labels in testannot/")


def test_model_for_another_label_set(tmp_path, capsys):
    data = fixture_camvid(tmp_path / "cv")
    d5 = tiny_checkpoint(tmp_path / "d5.pt", labels=DRIVING5, input_size=(32, 32))
    expect_error(capsys, "--model", d5, "--backend", "torch", "--data", data,
                 line=f"{d5}: model classes (5: road, sidewalk, pole, car, ...) differ "
                      f"from the camvid label set (11: Sky, Building, Pole, Road, ...), and no "
                      f"label map joins driving5 to camvid11")


def test_backend_count_mismatch(tiny, tmp_path, capsys):
    data = fixture_camvid(tmp_path / "cv")
    expect_error(capsys, "--model", tiny, "--model", tiny, "--model", tiny, "--backend", "torch",
                 "--backend", "torch", "--data", data,
                 line="2 --backend values for 3 --model values; give one for all or one per "
                      "model")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (no GPU on this machine)")
def test_cuda_scores_match_cpu(ckpts, tmp_path, shared_data):
    path = ckpts[0]
    results = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.json"
        assert run_eval("--model", path, "--backend", "torch", "--device", device, "--data", CAMVID,
                        "--max-images", N_IMAGES, "--json", out) == 0
        results[device] = json.loads(out.read_text())
    assert results["cuda"]["miou"] == pytest.approx(results["cpu"]["miou"], abs=1e-3)
    assert results["cuda"]["pixel_acc"] == pytest.approx(results["cpu"]["pixel_acc"], abs=1e-3)
