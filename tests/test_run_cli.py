"""`drivesegrt run` end to end on real files, bad inputs, truncated video, SIGTERM."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from conftest import CAMVID, CAMVID_CLIP, HIGHWAY_CLIP
from pipeline_helpers import (
    ROOT,
    make_tiny_checkpoint,
    read_jsonl,
    read_summary,
    run_cli,
    video_info,
)

from drivesegrt import cli

SUMMARY_KEYS = {"frames_in", "frames_out", "frames_dropped", "fps", "reconnects", "stages_ms",
                "latency_ms"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """One torch thread: the test machine's 2 cores are shared with the pipeline threads."""
    path = tmp_path_factory.mktemp("cfg") / "run.yaml"
    path.write_text("model:\n  threads: 1\n")
    return path


def run_inproc(capsys, *argv):
    rc = cli.main(["run", "--backend", "torch", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("clip, size, n", [(HIGHWAY_CLIP, (960, 540), 221),
                                           (CAMVID_CLIP, (480, 360), 101)])
def test_real_clip_end_to_end(shared_data, tmp_path, capsys, model, config, clip, size, n):
    out = tmp_path / "run"
    rc, stdout, _ = run_inproc(capsys, "--source", str(clip), "--model", str(model),
                               "--config", str(config), "--output", str(out), "--save-masks")
    assert rc == 0
    s = read_summary(out)
    assert SUMMARY_KEYS <= set(s)
    assert (s["frames_in"], s["frames_out"], s["frames_dropped"]) == (n, n, 0)
    assert video_info(out / "overlay.mp4") == (n, *size)
    assert "libx264" in s["outputs"]["video"]["encoder"]
    masks = sorted((out / "masks").iterdir())
    assert [p.name for p in masks[:2]] == ["000000.png", "000001.png"] and len(masks) == n
    m = cv2.imread(str(masks[-1]), cv2.IMREAD_UNCHANGED)
    assert m.shape == size[::-1] and m.dtype == np.uint8 and m.max() < 11
    assert len(read_jsonl(out / "frames.jsonl")) == n
    for stage in ("capture", "preprocess", "infer", "postprocess", "overlay", "write", "encode"):
        assert set(s["stages_ms"][stage]) == {"p50", "p95", "p99"}
    assert "FPS end-to-end" in stdout and "latency" in stdout


def test_image_folder_run(shared_data, tmp_path, capsys, model, config):
    names = sorted(p.name for p in (CAMVID / "test").glob("*.png"))[:4]
    src = tmp_path / "imgs"
    src.mkdir()
    for name in names:
        (src / name).symlink_to(CAMVID / "test" / name)
    out = tmp_path / "run"
    rc, _, _ = run_inproc(capsys, "--source", str(src), "--model", str(model), "--config",
                          str(config), "--output", str(out), "--save-masks", "--remap", "driving5")
    assert rc == 0
    stems = [n[:-4] for n in names]
    assert sorted(p.stem for p in (out / "masks").iterdir()) == stems
    assert sorted(p.stem for p in (out / "overlays").iterdir()) == stems
    assert not (out / "overlay.mp4").exists()
    m = cv2.imread(str(out / "masks" / f"{stems[0]}.png"), cv2.IMREAD_UNCHANGED)
    assert m.shape == (360, 480) and m.max() < 5           # driving5 ids
    assert read_summary(out)["model"]["classes"] == ["road", "sidewalk", "pole", "car", "other"]


def test_synthetic_default_source_and_max_frames(tmp_path, capsys, model, config):
    out = tmp_path / "run"
    rc, _, _ = run_inproc(capsys, "--model", str(model), "--config", str(config), "--output",
                          str(out), "--max-frames", "6", "--filter", "point", "--no-video")
    assert rc == 0
    s = read_summary(out)
    assert s["frames_out"] == 6 and s["source"]["kind"] == "synthetic"
    assert s["model"]["filter"] == "point" and not (out / "overlay.mp4").exists()


def _garbage(tmp_path, name, data=b"\x00\x01garbage" * 100):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("case, match", [
    ("missing_video", "source not found"),
    ("garbage_video", "cannot open as a video"),
    ("camera", "camera /dev/video97 does not open"),
    ("missing_model", "model file not found"),
    ("garbage_model", "not a readable drivesegrt checkpoint"),
    ("class_mismatch", "weights do not match architecture"),
    ("input_mismatch", "model.input_size"),
    ("backend", "model.backend.*allowed: 'torch', 'onnxruntime', 'openvino', 'tensorrt'"),
    ("config", "unknown config key postprocess.'filtr'"),
    ("config_value", "postprocess.filter.*allowed: 'linear', 'point'"),
    ("output", "output directory .* is not writable"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, model, case, match):
    import re

    import torch

    from drivesegrt.models.checkpoint import read_checkpoint

    args = {"--source": "synthetic:?frames=2", "--model": str(model), "--output": str(tmp_path / "o")}
    if case == "missing_video":
        args["--source"] = str(tmp_path / "nope.mp4")
    elif case == "garbage_video":
        args["--source"] = str(_garbage(tmp_path, "bad.mp4"))
    elif case == "camera":
        args["--source"] = "/dev/video97"
    elif case == "missing_model":
        args["--model"] = str(tmp_path / "nope.pt")
    elif case == "garbage_model":
        args["--model"] = str(_garbage(tmp_path, "bad.pt"))
    elif case == "class_mismatch":            # metadata says 5 classes, weights have 11
        obj = read_checkpoint(model)
        obj["meta"]["class_names"] = obj["meta"]["class_names"][:5]
        obj["meta"]["palette"] = obj["meta"]["palette"][:5]
        torch.save(obj, tmp_path / "m5.pt")
        args["--model"] = str(tmp_path / "m5.pt")
    elif case == "input_mismatch":
        cfg = tmp_path / "c.yaml"
        cfg.write_text("model:\n  input_size: [4, 4]\n")
        args["--config"] = str(cfg)
    elif case == "backend":
        args["--backend"] = "tflite"
    elif case == "config":
        cfg = tmp_path / "c.yaml"
        cfg.write_text("postprocess:\n  filtr: linear\n")
        args["--config"] = str(cfg)
    elif case == "config_value":
        args["--filter"] = "cubic"
    elif case == "output":
        (tmp_path / "file").write_text("x")
        args["--output"] = str(tmp_path / "file" / "run")
    rc, _, err = run_inproc(capsys, *[x for kv in args.items() for x in kv])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(match, lines[0]), lines[0]


def test_bad_input_real_process_no_traceback(tmp_path, model):
    r = run_cli("run", "--backend", "torch", "--source", str(tmp_path / "missing.mp4"), "--model", str(model),
                "--output", str(tmp_path / "o"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "source not found" in r.stderr


def test_truncated_video_publishes_decodable_frames(shared_data, tmp_path, capsys, model, config):
    data = HIGHWAY_CLIP.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    decodable = video_info(cut)[0]
    assert 0 < decodable < 221
    out = tmp_path / "run"
    rc, _, _ = run_inproc(capsys, "--source", str(cut), "--model", str(model), "--config",
                          str(config), "--output", str(out))
    assert rc == 0
    s = read_summary(out)
    assert s["frames_out"] == s["frames_in"] == decodable
    assert video_info(out / "overlay.mp4") == (decodable, 960, 540)


def test_sigterm_drains_and_finalizes(shared_data, tmp_path, model, config):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivesegrt", "run", "--backend", "torch", "--source", str(HIGHWAY_CLIP), "--model",
         str(model), "--config", str(config), "--output", str(out)],
        cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    jsonl = out / "frames.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if jsonl.exists() and len(jsonl.read_text().splitlines()) >= 20:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    s = read_summary(out)
    assert s["interrupted"] and 0 < s["frames_out"] < 221
    assert s["frames_in"] == s["frames_out"]
    assert video_info(out / "overlay.mp4") == (s["frames_out"], 960, 540)
