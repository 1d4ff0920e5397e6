"""`drivesegrt run` end to end on real files, bad inputs, truncated video, SIGTERM."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import cv2
import numpy as np
import pytest
from helpers import (
    CAMVID,
    CAMVID_CLIP,
    HIGHWAY_CLIP,
    ROOT,
    LiveRun,
    cli_main,
    damaged_copy,
    ffmpeg_frame_md5s,
    read_jsonl,
    read_summary,
    run_cli,
    tiny_checkpoint,
    video_info,
)

SUMMARY_KEYS = {"frames_in", "frames_out", "frames_dropped", "fps", "reconnects", "stages_ms",
                "latency_ms"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", input_size=(360, 480))


def run_inproc(capsys, *argv):
    """``drivesegrt run --backend torch ARGV`` in this process: (exit code, stdout, stderr)."""
    rc = cli_main("run", "--backend", "torch", *argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("clip, size, n", [(HIGHWAY_CLIP, (960, 540), 221),
                                           (CAMVID_CLIP, (480, 360), 101)])
def test_real_clip_end_to_end(shared_data, tmp_path, capsys, model, one_thread_config, clip,
                              size, n):
    out = tmp_path / "run"
    rc, stdout, _ = run_inproc(capsys, "--source", clip, "--model", model, "--config",
                               one_thread_config, "--output", out, "--save-masks")
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


def test_image_folder_run(shared_data, tmp_path, capsys, model, one_thread_config):
    names = sorted(p.name for p in (CAMVID / "test").glob("*.png"))[:4]
    src = tmp_path / "imgs"
    src.mkdir()
    for name in names:
        (src / name).symlink_to(CAMVID / "test" / name)
    out = tmp_path / "run"
    rc, _, _ = run_inproc(capsys, "--source", src, "--model", model, "--config", one_thread_config,
                          "--output", out, "--save-masks", "--remap", "driving5")
    assert rc == 0
    stems = [n[:-4] for n in names]
    assert sorted(p.stem for p in (out / "masks").iterdir()) == stems
    assert sorted(p.stem for p in (out / "overlays").iterdir()) == stems
    assert not (out / "overlay.mp4").exists()
    m = cv2.imread(str(out / "masks" / f"{stems[0]}.png"), cv2.IMREAD_UNCHANGED)
    assert m.shape == (360, 480) and m.max() < 5           # driving5 ids
    assert read_summary(out)["model"]["classes"] == ["road", "sidewalk", "pole", "car", "other"]


def test_synthetic_default_source_and_max_frames(tmp_path, capsys, model, one_thread_config):
    out = tmp_path / "run"
    rc, _, _ = run_inproc(capsys, "--model", model, "--config", one_thread_config, "--output", out,
                          "--max-frames", 6, "--filter", "point", "--no-video")
    assert rc == 0
    s = read_summary(out)
    assert s["frames_out"] == 6 and s["source"]["kind"] == "synthetic"
    assert s["model"]["filter"] == "point" and not (out / "overlay.mp4").exists()


def _garbage(tmp_path, name, data=b"\x00\x01garbage" * 100):
    p = tmp_path / name
    p.write_bytes(data)
    return p


# The whole error line, as a regular expression; {tmp} stands for the test's tmp_path.
@pytest.mark.parametrize("case, line", [
    ("missing_video", r"source not found: {tmp}/nope\.mp4"),
    ("garbage_video", r"{tmp}/bad\.mp4: cannot open as a video \(unknown or corrupt format\)"),
    ("camera", r"camera /dev/video97 does not open \(no such device\)"),
    ("missing_model", r"model file not found: {tmp}/nope\.pt \(bundled models: camvid, cityscapes, camvid-espnetv2\)"),
    ("garbage_model", r"{tmp}/bad\.pt: not a readable drivesegrt checkpoint \(UnpicklingError: .+\)"),
    ("class_mismatch", r"{tmp}/m5\.pt: weights do not match architecture 'mobileseg' with 5 "
                       r"classes \(Error\(s\) in loading state_dict for MobileSeg:\)"),
    ("input_mismatch", r"config key 'model\.input_size': must be \[height, width\] >= 8, "
                       r"got \(4, 4\)"),
    ("backend", r"config key 'model\.backend': 'tflite' is not allowed; "
                r"allowed: 'torch', 'onnxruntime', 'openvino', 'tensorrt', 'auto'"),
    ("config", r"unknown config key postprocess\.'filtr'; allowed keys: filter, remap"),
    ("config_value", r"config key 'postprocess\.filter': 'cubic' is not allowed; "
                     r"allowed: 'linear', 'point'"),
    ("output", r"output directory {tmp}/file/run is not writable \(Not a directory\)"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, model, case, line):
    import re

    import torch

    from drivesegrt.models.checkpoint import read_checkpoint

    args = {"--backend": "torch", "--source": "synthetic:?frames=2", "--model": model,
            "--output": tmp_path / "o"}
    config = {"input_mismatch": "model:\n  input_size: [4, 4]\n",
              "backend": "model:\n  backend: tflite\n",
              "config": "postprocess:\n  filtr: linear\n",
              "config_value": "postprocess:\n  filter: cubic\n"}
    if case in config:
        args["--config"] = tmp_path / "c.yaml"
        args["--config"].write_text(config[case])
        if case == "backend":
            del args["--backend"]                  # the flag would override the file
    elif case == "missing_video":
        args["--source"] = tmp_path / "nope.mp4"
    elif case == "garbage_video":
        args["--source"] = _garbage(tmp_path, "bad.mp4")
    elif case == "camera":
        args["--source"] = "/dev/video97"
    elif case == "missing_model":
        args["--model"] = tmp_path / "nope.pt"
    elif case == "garbage_model":
        args["--model"] = _garbage(tmp_path, "bad.pt")
    elif case == "class_mismatch":            # metadata says 5 classes, weights have 11
        obj = read_checkpoint(model)
        obj["meta"]["class_names"] = obj["meta"]["class_names"][:5]
        obj["meta"]["palette"] = obj["meta"]["palette"][:5]
        torch.save(obj, tmp_path / "m5.pt")
        args["--model"] = tmp_path / "m5.pt"
    elif case == "output":
        (tmp_path / "file").write_text("x")
        args["--output"] = tmp_path / "file" / "run"
    assert cli_main("run", *[x for kv in args.items() for x in kv]) == 2
    err = capsys.readouterr().err
    expected = "drivesegrt: error: " + line.format(tmp=re.escape(str(tmp_path))) + "\n"
    assert re.fullmatch(expected, err), err


def test_bad_input_real_process_no_traceback(tmp_path, model):
    r = run_cli("run", "--backend", "torch", "--source", tmp_path / "missing.mp4", "--model",
                model, "--output", tmp_path / "o")
    assert r.returncode == 2
    assert r.stderr == f"drivesegrt: error: source not found: {tmp_path / 'missing.mp4'}\n"
    assert not (tmp_path / "o").exists()


def test_truncated_video_publishes_decodable_frames(shared_data, tmp_path, capsys, model,
                                                    one_thread_config):
    data = HIGHWAY_CLIP.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    decodable = video_info(cut)[0]
    assert 0 < decodable < 221
    out = tmp_path / "run"
    rc, _, _ = run_inproc(capsys, "--source", cut, "--model", model, "--config",
                          one_thread_config, "--output", out)
    assert rc == 0
    s = read_summary(out)
    assert s["frames_out"] == s["frames_in"] == decodable
    assert video_info(out / "overlay.mp4") == (decodable, 960, 540)


def test_sigterm_drains_and_finalizes(shared_data, tmp_path, model, one_thread_config):
    out = tmp_path / "run"
    run = LiveRun("run", "--backend", "torch", "--source", HIGHWAY_CLIP, "--model", model,
                  "--config", one_thread_config, "--output", out)
    try:
        run.wait_for_frames(out / "frames.jsonl", 20, timeout=120)
        run.proc.send_signal(signal.SIGTERM)
        rc = run.finish()
    finally:
        run.kill()
    assert rc == 130, run.stderr
    assert "Traceback" not in run.stderr
    s = read_summary(out)
    assert s["interrupted"] and 0 < s["frames_out"] < 221
    assert s["frames_in"] == s["frames_out"]
    assert video_info(out / "overlay.mp4") == (s["frames_out"], 960, 540)


def test_damaged_video_publishes_every_decodable_frame(shared_data, tmp_path, one_thread_config):
    """The issue's case: 200 KB overwritten at 50 % of the highway clip. OpenCV's reader gave
    up at frame 111 (exit 0, no word); now every frame FFmpeg decodes is published in order,
    the rest counted in frames_corrupt and named in one line at the end."""
    damaged = damaged_copy(HIGHWAY_CLIP, tmp_path / "damaged.mp4")
    decodable = len(ffmpeg_frame_md5s(damaged))
    assert 150 < decodable < 221
    out = tmp_path / "run"
    r = run_cli("run", "--source", damaged, "--output", out, "--config", one_thread_config)
    assert r.returncode == 0, r.stderr
    assert r.stderr == (f"drivesegrt: warning: {damaged}: {221 - decodable} corrupt frame(s) could "
                        f"not be decoded and were skipped (frames_corrupt in summary.json)\n")
    s = read_summary(out)
    assert (s["frames_in"], s["frames_out"], s["frames_corrupt"]) == (decodable, decodable,
                                                                      221 - decodable)
    assert [rec["index"] for rec in read_jsonl(out / "frames.jsonl")] == list(range(decodable))
    assert video_info(out / "overlay.mp4") == (decodable, 960, 540)
    assert f"corrupt {221 - decodable}" in r.stdout


@pytest.mark.timeout(120)
def test_endless_source_on_a_terminal_shows_a_bar_without_total(tmp_path):
    """``synthetic:?frames=0`` (endless) with stderr on a terminal: the progress bar has no
    total (a tqdm without one has no truth value: the run crashed at start), the run goes on
    until Ctrl-C, then finalizes."""
    out = tmp_path / "run"
    cmd, env = [sys.executable, "-m", "drivesegrt", "run", "--source",
                "synthetic:?w=64&h=48&frames=0", "--output", str(out)], dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    controller, terminal = pty.openpty()
    # 24 x 100 characters: a new pty has 0 columns, and tqdm fits its bar into none.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=terminal, stdout=terminal,
                            stderr=terminal)
    os.close(terminal)
    screen = b""
    try:
        deadline = time.monotonic() + 90
        jsonl = out / "frames.jsonl"
        while not (jsonl.exists() and jsonl.read_text().count("\n") >= 5):   # running
            screen += _read_terminal(controller)
            assert time.monotonic() < deadline and proc.poll() is None, screen.decode()
        proc.send_signal(signal.SIGINT)
        while proc.poll() is None:
            screen += _read_terminal(controller)
        screen += _read_terminal(controller)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    text = screen.decode(errors="replace")
    assert rc == 130, text
    assert "Traceback" not in text
    assert re.search(r"drivesegrt run: \d+frame", text)       # a count, no "n/total"
    s = read_summary(out)
    assert s["interrupted"] and s["frames_out"] == s["frames_in"] > 0
    assert len(read_jsonl(out / "frames.jsonl")) == s["frames_out"]
    assert video_info(out / "overlay.mp4") == (s["frames_out"], 64, 48)


def _read_terminal(fd: int) -> bytes:
    """What the terminal shows within 0.2 s (b"" once it closed with the process)."""
    try:
        return os.read(fd, 65536) if select.select([fd], [], [], 0.2)[0] else b""
    except OSError:                          # EIO: no process holds the terminal any more
        return b""


def test_bundled_cityscapes_model_end_to_end_with_its_19_class_legend(shared_data, tmp_path,
                                                                       one_thread_config):
    """`drivesegrt run --model cityscapes` on a highway frame: 19 Cityscapes classes in the
    summary and masks, the overlay legend drawn with all 19 Cityscapes colors, and the road
    ahead labelled road."""
    from drivesegrt.labels import CITYSCAPES19

    cap = cv2.VideoCapture(str(HIGHWAY_CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, frame = cap.read()
    cap.release()
    assert ok
    src = tmp_path / "imgs"
    src.mkdir()
    cv2.imwrite(str(src / "highway.png"), frame)
    out = tmp_path / "run"
    proc = run_cli("run", "--model", "cityscapes", "--source", src, "--config", one_thread_config,
                   "--output", out, "--save-masks")
    assert proc.returncode == 0, proc.stderr
    assert read_summary(out)["model"]["classes"] == list(CITYSCAPES19.class_names)
    mask = cv2.imread(str(out / "masks" / "highway.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (540, 960) and mask.max() <= 18
    assert (mask[460:530, 100:600] == CITYSCAPES19.class_names.index("road")).mean() > 0.99
    overlay = cv2.imread(str(out / "overlays" / "highway.jpg")).astype(int)
    row = int(22 * 540 / 900) + 4                # the legend's row height at this frame height
    for i, rgb in enumerate(CITYSCAPES19.palette):
        swatch = overlay[4 + i * row + 2: 4 + i * row + row - 8, 6: row - 4]   # inside the box
        assert np.abs(swatch.mean((0, 1)) - rgb[::-1]).max() < 30, CITYSCAPES19.class_names[i]
