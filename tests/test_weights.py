"""The bundled model: present, small, self-describing, and its ONNX export agrees with it."""
from __future__ import annotations

import numpy as np
from helpers import CAMVID

from drivesegrt.engines import load_engine
from drivesegrt.infer.build import BUNDLED, model_path
from drivesegrt.infer.segmenter import Segmenter
from drivesegrt.labels import CAMVID11, CITYSCAPES19
from drivesegrt.models.checkpoint import load_model
from drivesegrt.train.metrics import confusion_matrix, scores


def test_bundled_files_exist_and_are_small():
    for path in {p for files in BUNDLED.values() for p in files.values()}:
        assert path.is_file(), path
        assert path.stat().st_size < 20 * 2**20


def test_bundled_checkpoint_carries_camvid_metadata():
    model, meta = load_model(model_path(None, "torch"))
    assert meta.arch == "mobileseg" and meta.class_names == CAMVID11.class_names
    assert meta.input_size == (360, 480) and meta.ignore_index == 11
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_bundled_onnx_matches_checkpoint_and_segments_camvid(shared_data):
    """The .onnx (normalization in the graph) gives the .pt's class maps, and both segment
    CamVid test images far better than chance: a guard against shipping stale or broken
    weights (the README's test mIoU comes from `drivesegrt eval` on all 233 images)."""
    import cv2

    torch_seg = Segmenter(load_engine("torch", model_path(None, "torch")))
    onnx_seg = Segmenter(load_engine("onnxruntime", model_path(None, "onnxruntime")))
    assert onnx_seg.meta.input_format == "uint8_nhwc_bgr"
    images = sorted((CAMVID / "test").glob("*.png"))[::40]
    cm = np.zeros((11, 11), np.int64)
    agree = []
    for path in images:
        frame = cv2.imread(str(path))
        label = cv2.imread(str(CAMVID / "testannot" / path.name), cv2.IMREAD_UNCHANGED)
        a = torch_seg(frame)
        b = onnx_seg(frame)
        agree.append((a == b).mean())
        cm += confusion_matrix(a, label, 11)
    assert min(agree) > 0.999
    assert scores(cm)["miou"] > 0.45


def test_bundled_weights_total_at_most_20_mb():
    files = {p for entry in BUNDLED.values() for p in entry.values()}
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20


def test_bundled_cityscapes_is_espnetv2_with_the_cityscapes_label_set():
    model, meta = load_model(model_path("cityscapes", "torch"))
    assert meta.arch == "espnetv2" and meta.arch_kwargs["s"] == 1.5
    assert meta.label_set == "cityscapes19" and meta.class_names == CITYSCAPES19.class_names
    assert meta.palette == CITYSCAPES19.palette and meta.input_size == (360, 480)
    onnx_seg = Segmenter(load_engine("onnxruntime", model_path("cityscapes", "onnxruntime")))
    assert onnx_seg.meta.input_format == "uint8_nhwc_bgr"
    assert onnx_seg.class_names == CITYSCAPES19.class_names


def test_bundled_cityscapes_onnx_matches_its_checkpoint_and_the_public_weights(shared_data):
    """The shipped files are the authors' s=1.5 weights as they are: the checkpoint's logits
    equal the public checkpoint's (background dropped), and the ONNX export's class maps agree."""
    import cv2
    import torch

    from drivesegrt.models.espnetv2 import cityscapes_espnetv2

    weights = shared_data / "weights" / "espnetv2_cityscapes"
    model, meta = load_model(model_path("cityscapes", "torch"))
    public = cityscapes_espnetv2(1.5, weights)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = model(x)                                            # (1, 19, 32, 48)
    public.output_stride = meta.arch_kwargs["output_stride"]
    with torch.no_grad():
        theirs = public(x)
    assert torch.equal(ours, theirs)
    torch_seg = Segmenter(load_engine("torch", model_path("cityscapes", "torch")))
    onnx_seg = Segmenter(load_engine("onnxruntime", model_path("cityscapes", "onnxruntime")))
    for path in sorted((CAMVID / "test").glob("*.png"))[::120]:
        frame = cv2.imread(str(path))
        assert (torch_seg(frame) == onnx_seg(frame)).mean() > 0.999


def test_bundled_camvid_espnetv2_is_the_fine_tune_and_its_onnx_agrees(shared_data):
    """The fine-tuned ESPNetv2: CamVid classes, the config's architecture, its log's best
    epoch; the ONNX export gives the checkpoint's class maps."""
    import json

    import cv2

    from drivesegrt.infer.build import WEIGHTS
    from drivesegrt.models.checkpoint import read_checkpoint

    path = model_path("camvid-espnetv2", "torch")
    _, meta = load_model(path)
    assert meta.arch == "espnetv2" and meta.class_names == CAMVID11.class_names
    assert meta.arch_kwargs == {"s": 2.0, "pyramid_channels": 10, "output_stride": 2}
    log = [json.loads(line) for line in
           (WEIGHTS / "espnetv2_camvid.train_log.jsonl").read_text().splitlines()]
    best = [r for r in log if r.get("best")][-1]
    ckpt = read_checkpoint(path)
    assert (ckpt["epoch"], ckpt["val_miou"]) == (best["epoch"], best["val_miou"])
    torch_seg = Segmenter(load_engine("torch", path))
    onnx_seg = Segmenter(load_engine("onnxruntime", model_path("camvid-espnetv2", "onnxruntime")))
    for img in sorted((CAMVID / "test").glob("*.png"))[::120]:
        frame = cv2.imread(str(img))
        assert (torch_seg(frame) == onnx_seg(frame)).mean() > 0.999
