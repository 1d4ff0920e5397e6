"""``drivesegrt convert`` (public ESPNetv2 weights -> checkpoint) and ``drivesegrt models``
(the bundled models with their classes, size and the scores eval wrote next to them)."""
from __future__ import annotations

import json

import pytest
import torch
from helpers import SHARED

from drivesegrt import cli
from drivesegrt.infer.build import BUNDLED, DEFAULT_MODEL
from drivesegrt.labels import CAMVID11, CITYSCAPES19
from drivesegrt.models.checkpoint import load_model
from drivesegrt.models.espnetv2 import cityscapes_espnetv2

WEIGHTS = SHARED / "weights" / "espnetv2_cityscapes"


def test_models_lists_every_bundled_model_with_its_eval_scores(tmp_path, capsys):
    out = tmp_path / "models.json"
    assert cli.main(["models", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = {r["name"]: r for r in json.loads(out.read_text())["models"]}
    assert list(rows) == list(BUNDLED) and rows[DEFAULT_MODEL]["default"]
    assert rows["camvid"]["classes"] == list(CAMVID11.class_names)
    assert rows["cityscapes"]["classes"] == list(CITYSCAPES19.class_names)
    for name, r in rows.items():
        written = json.loads(BUNDLED[name]["scores"].read_text())
        assert r["scores"]["miou"] == written["miou"] and written["model"] == name
        assert (written["dataset"], written["split"], written["images"]) == ("camvid", "test", 233)
        assert r["params"] > 100_000 and 0.1 < r["gflops"] < 10
        assert r["input_size"] == [360, 480]
    assert rows["cityscapes"]["scores"]["label_map"] == "cityscapes19-camvid11"
    assert rows["camvid"]["scores"]["label_map"] is None
    cs = rows["cityscapes"]["scores"]["miou"]
    assert (f"  score        camvid test mIoU {100 * cs:.1f} (233 images, zero-shot through "
            f"cityscapes19-camvid11; onnxruntime fp32)") in printed.splitlines()


def test_convert_writes_the_public_weights_as_a_19_class_checkpoint(tmp_path, capsys):
    if not WEIGHTS.is_dir():
        pytest.skip(f"ESPNetv2 Cityscapes weights not found at {WEIGHTS}")
    out = tmp_path / "cs.pt"
    assert cli.main(["convert", "--espnetv2-cityscapes",
                     str(WEIGHTS / "espnetv2_s_0.5_city_1024x512.pth"), "--s", "0.5",
                     "--input-size", "96", "128", "--output-stride", "1", "--out", str(out)]) == 0
    assert capsys.readouterr().out == \
        f"wrote {out} (espnetv2 s=0.5, cityscapes19, input 96x128)\n"
    model, meta = load_model(out)
    assert meta.label_set == "cityscapes19" and meta.input_size == (96, 128)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(model(x), cityscapes_espnetv2(0.5, WEIGHTS)(x))


def test_convert_with_the_wrong_width_is_a_clear_error(tmp_path, capsys):
    if not WEIGHTS.is_dir():
        pytest.skip(f"ESPNetv2 Cityscapes weights not found at {WEIGHTS}")
    src = WEIGHTS / "espnetv2_s_0.5_city_1024x512.pth"
    assert cli.main(["convert", "--espnetv2-cityscapes", str(src), "--s", "1.0",
                     "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"drivesegrt: error: {src}: does not match ESPNetv2 s=1.0 (")
    assert not (tmp_path / "x.pt").exists()
