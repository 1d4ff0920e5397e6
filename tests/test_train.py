"""A 2-step training of a tiny model on a handful of real CamVid images, resume, and the
checkpoint it writes being accepted by ``drivesegrt eval`` and ``drivesegrt run``."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import yaml
from helpers import CAMVID, TINY_KWARGS

from drivesegrt import cli
from drivesegrt.models.checkpoint import load_model, read_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """Run ``drivesegrt train --max-steps 2`` once; (config path, out dir, stdout)."""
    tmp = tmp_path_factory.mktemp("train")
    cfg = {
        "model": {"name": "mobileseg", "kwargs": TINY_KWARGS["mobileseg"]},
        "data": {"dataset": "camvid", "root": str(CAMVID), "crop": [96, 128],
                 "max_train_images": 4, "max_val_images": 2},
        "loss": {"class_weights": "median_frequency", "dice_weight": 0.5},
        "epochs": 3, "batch_size": 2, "seed": 1, "threads": 1,
        "out_dir": str(tmp / "run"), "device": "cpu",
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = cli.main(["train", "--config", str(path), "--max-steps", "2"])
    assert code == 0
    return path, tmp / "run"


def log_records(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_two_steps_write_loadable_checkpoints(trained):
    _, out = trained
    records = log_records(out)
    assert len(records) == 1 and records[0]["step"] == 2 and records[0]["epoch"] == 1
    assert 0.0 <= records[0]["val_miou"] <= 1.0
    for name in ("best.pt", "last.pt"):
        model, meta = load_model(out / name)
        assert meta.arch == "mobileseg" and meta.arch_kwargs == TINY_KWARGS["mobileseg"]
        assert meta.num_classes == 11 and meta.input_size == (96, 128)
    assert read_checkpoint(out / "last.pt")["train"]["step"] == 2
    assert json.loads((out / "config.json").read_text())["data"]["max_train_images"] == 4


def test_resume_continues_the_step_count(trained, capsys):
    path, out = trained
    before = read_checkpoint(out / "last.pt")
    assert cli.main(["train", "--config", str(path), "--resume", "--max-steps", "4"]) == 0
    assert "resumed from" in capsys.readouterr().out
    records = log_records(out)
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["step"] for r in records] == [2, 4]
    after = read_checkpoint(out / "last.pt")
    assert after["epoch"] == 2 and after["train"]["step"] == 4
    assert any((a != b).any() for a, b in zip(before["state_dict"].values(),
                                              after["state_dict"].values()))


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys, shared_data):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"root": str(CAMVID)}, "out_dir": str(tmp_path / "o"),
                                   "model": {"kwargs": TINY_KWARGS["mobileseg"]}}))
    assert cli.main(["train", "--config", str(cfg), "--resume"]) == 2
    assert capsys.readouterr().err == \
        f"drivesegrt: error: model file not found: {tmp_path / 'o' / 'last.pt'}\n"


def test_bad_dataset_root_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"root": str(tmp_path / "nope")},
                                   "out_dir": str(tmp_path / "o")}))
    assert cli.main(["train", "--config", str(cfg)]) == 2
    assert capsys.readouterr().err == \
        f"drivesegrt: error: CamVid folder not found: {tmp_path / 'nope' / 'train'}\n"


def test_eval_accepts_the_trained_checkpoint(trained, tmp_path):
    _, out = trained
    scores_path = tmp_path / "s.json"
    assert cli.main(["eval", "--model", str(out / "best.pt"), "--backend", "torch",
                     "--data", str(CAMVID),
                     "--split", "val", "--max-images", "2", "--json", str(scores_path)]) == 0
    r = json.loads(scores_path.read_text())
    assert r["images"] == 2 and 0.0 <= r["miou"] <= 1.0
    # the training loop's val mIoU used the same 2 val images at full size; eval resizes to the
    # checkpoint's 96x128 input size first, so the numbers are close, not identical
    best = [rec for rec in log_records(out) if rec.get("best")][-1]
    assert r["miou"] == pytest.approx(best["val_miou"], abs=0.05)


def test_run_accepts_the_checkpoint_and_its_masks_score_like_eval(trained, tmp_path):
    """`drivesegrt run --save-masks` on CamVid test images gives masks whose scores equal
    `drivesegrt eval`'s exactly: both go through the same Segmenter."""
    from drivesegrt.data.splits import open_split
    from drivesegrt.train.metrics import confusion_matrix, scores

    _, out = trained
    split = open_split(CAMVID, "test")
    pairs = split.pairs[:2]
    source = tmp_path / "images"
    source.mkdir()
    for img, _ in pairs:
        (source / img.name).symlink_to(img)
    run_dir = tmp_path / "run"
    assert cli.main(["run", "--backend", "torch", "--source", str(source), "--model", str(out / "best.pt"),
                     "--output", str(run_dir), "--save-masks"]) == 0
    cm = 0
    for img, lab in pairs:
        mask = cv2.imread(str(run_dir / "masks" / f"{img.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask is not None and mask.shape == (360, 480) and mask.dtype == np.uint8
        cm = cm + confusion_matrix(mask, split.read_label(lab), 11)
    from_masks = scores(cm, split.labels.class_names)
    scores_path = tmp_path / "s.json"
    assert cli.main(["eval", "--model", str(out / "best.pt"), "--backend", "torch",
                     "--data", str(CAMVID),
                     "--max-images", "2", "--json", str(scores_path)]) == 0
    from_eval = json.loads(scores_path.read_text())
    for key in ("miou", "pixel_acc", "mean_class_acc", "per_class_iou"):
        assert from_eval[key] == from_masks[key], key


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, shared_data):
    """``drivesegrt train --max-steps 2`` of ESPNetv2 s=0.5 initialised from the authors'
    Cityscapes checkpoint, classifier re-mapped to CamVid; (out dir, stdout)."""
    weights = shared_data / "weights" / "espnetv2_cityscapes" / "espnetv2_s_0.5_city_1024x512.pth"
    if not weights.is_file():
        pytest.skip(f"ESPNetv2 Cityscapes weights not found at {weights}")
    tmp = tmp_path_factory.mktemp("finetune")
    cfg = {
        "model": {"name": "espnetv2", "kwargs": {"s": 0.5, "pyramid_channels": 10,
                                                 "output_stride": 2},
                  "init": "cityscapes", "init_weights": str(weights),
                  "freeze": ["base_net.level1"], "input_size": [96, 128]},
        "data": {"dataset": "camvid", "root": str(CAMVID), "crop": [64, 96],
                 "max_train_images": 4, "max_val_images": 1},
        "loss": {"label_stride": 2}, "optim": {"lr": 1e-4},
        "epochs": 1, "batch_size": 2, "seed": 0, "threads": 1,
        "out_dir": str(tmp / "run"), "device": "cpu",
    }
    path = tmp / "finetune.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["train", "--config", str(path), "--max-steps", "2"]) == 0
    return tmp / "run", weights


def test_finetune_from_cityscapes_writes_a_checkpoint_run_and_eval_accept(finetuned, tmp_path,
                                                                          capsys):
    import torch

    out, weights = finetuned
    model, meta = load_model(out / "best.pt")
    assert meta.arch == "espnetv2" and meta.label_set == "camvid11"
    assert meta.input_size == (96, 128) and meta.num_classes == 11
    assert meta.arch_kwargs == {"s": 0.5, "pyramid_channels": 10, "output_stride": 2}
    # frozen: the stem is still the Cityscapes one, bit for bit; the rest has moved
    source = torch.load(weights, map_location="cpu", weights_only=True)
    state = model.state_dict()
    assert all(torch.equal(state[k], source[k]) for k in source
               if k.startswith("base_net.level1.") and not k.endswith(("running_mean",
                                                                       "running_var",
                                                                       "num_batches_tracked")))
    assert not torch.equal(state["base_net.level4.0.proj_1x1.conv.weight"],
                           source["base_net.level4.0.proj_1x1.conv.weight"])
    scores_path = tmp_path / "s.json"
    assert cli.main(["eval", "--model", str(out / "best.pt"), "--backend", "torch",
                     "--data", str(CAMVID), "--max-images", "1", "--json",
                     str(scores_path)]) == 0
    r = json.loads(scores_path.read_text())
    assert r["label_map"] is None and r["miou"] > 0.1      # it starts from a street model
    source_dir = tmp_path / "images"
    source_dir.mkdir()
    img = sorted((CAMVID / "test").glob("*.png"))[0]
    (source_dir / img.name).symlink_to(img)
    assert cli.main(["run", "--backend", "torch", "--source", str(source_dir), "--model",
                     str(out / "best.pt"), "--output", str(tmp_path / "run"),
                     "--save-masks"]) == 0
    mask = cv2.imread(str(tmp_path / "run" / "masks" / f"{img.stem}.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (360, 480) and mask.max() <= 10


@pytest.mark.parametrize("model,line", [
    ({"name": "espnetv2", "init": "cityscapes"},
     "config keys 'model.init' and 'model.init_weights' go together"),
    ({"name": "mobileseg", "init": "cityscapes", "init_weights": "w.pth"},
     "config key 'model.init': 'cityscapes' needs model.name 'espnetv2', got 'mobileseg'"),
    ({"name": "mobileseg", "kwargs": TINY_KWARGS["mobileseg"], "freeze": ["nothing"]},
     "config key 'model.freeze': 'nothing' names no parameters"),
])
def test_bad_model_section_is_a_clear_error(model, line, tmp_path, capsys, shared_data):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": model, "data": {"root": str(CAMVID)},
                                   "out_dir": str(tmp_path / "o")}))
    assert cli.main(["train", "--config", str(cfg)]) == 2
    assert capsys.readouterr().err == f"drivesegrt: error: {line}\n"


def test_distillation_from_a_teacher_checkpoint(trained, tmp_path, capsys):
    path, out = trained
    cfg = yaml.safe_load(path.read_text())
    cfg["distill"] = {"teacher": str(out / "best.pt"), "weight": 1.0, "temperature": 2.0}
    cfg["out_dir"] = str(tmp_path / "student")
    student = tmp_path / "student.yaml"
    student.write_text(yaml.safe_dump(cfg))
    assert cli.main(["train", "--config", str(student), "--max-steps", "2"]) == 0
    assert f"teacher {out / 'best.pt'}: logits of 4 training images" in capsys.readouterr().out
    model, meta = load_model(tmp_path / "student" / "best.pt")
    assert meta.arch == "mobileseg" and meta.num_classes == 11
    assert log_records(tmp_path / "student")[0]["step"] == 2


def test_a_teacher_of_another_label_set_is_a_clear_error(tmp_path, capsys, shared_data):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": "mobileseg", "kwargs": TINY_KWARGS["mobileseg"]},
        "data": {"root": str(CAMVID), "crop": [96, 128], "max_train_images": 1,
                 "max_val_images": 1},
        "distill": {"teacher": "cityscapes"}, "out_dir": str(tmp_path / "o"), "threads": 1}))
    assert cli.main(["train", "--config", str(cfg), "--max-steps", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "drivesegrt: error: config key 'distill.teacher': 'cityscapes' predicts cityscapes19, "
        "the training data is camvid11")
