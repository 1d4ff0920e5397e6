"""The public Python API: the README's snippet runs verbatim, and the package says what it is."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

import drivesegrt as ds

ROOT = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_snippet_runs_verbatim(shared_data, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)                 # the snippet's paths are relative to the checkout
    out = ROOT / "runs" / "api-demo"
    shutil.rmtree(out, ignore_errors=True)
    namespace: dict = {}
    try:
        exec(compile(readme_snippet(), "README.md", "exec"), namespace)
        frame, labels, vis, seg = (namespace[k] for k in ("frame_bgr", "labels", "vis", "seg"))
        assert labels.shape == frame.shape[:2] and labels.dtype == np.uint8
        assert vis.shape == frame.shape and vis.dtype == np.uint8 and not np.array_equal(vis, frame)
        assert labels.max() < len(seg.class_names) == len(seg.palette)
        assert (labels == seg.class_names.index("Road")).mean() > 0.2   # a CamVid street
        summary = namespace["summary"]
        assert summary["frames_in"] == summary["frames_out"] == 30 and summary["error"] is None
        assert json.loads((out / "summary.json").read_text())["frames_out"] == 30
        assert (out / "overlay.mp4").stat().st_size > 0
        printed = capsys.readouterr().out.splitlines()
        assert printed[0].split(" (")[0] in seg.class_names
        assert printed[-1].startswith("30 ")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_overlay_is_runs_overlay_without_hud():
    seg = ds.load_segmenter()
    frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    labels = seg(frame)
    ref = ds.Overlay(seg.class_names, seg.palette, 0.5, legend=True, hud=False)(frame, labels)
    assert np.array_equal(ds.overlay(frame, labels, seg), ref)
    assert np.array_equal(ds.overlay(frame, labels, seg, alpha=0.0, legend=False), frame)
    seg.close()
    seg.engine.close()


def test_run_rejects_unknown_options():
    import pytest

    with pytest.raises(ValueError, match=r"^unknown run option 'frames'; allowed: "):
        ds.run(source="synthetic:?frames=2", frames=3)


def test_package_exports_and_version():
    assert set(ds.__all__) >= {"load_segmenter", "overlay", "run", "__version__", "Segmenter"}
    assert all(hasattr(ds, name) for name in ds.__all__)
    assert re.fullmatch(r"\d+\.\d+\.\d+", ds.__version__)
    help_text = subprocess.run([sys.executable, "-c", "import drivesegrt as ds; help(ds)"],
                               capture_output=True, text=True, check=True).stdout
    assert "load_segmenter(" in help_text and "overlay(" in help_text and "run(" in help_text


def test_version_and_bare_command_print_and_do_not_run(tmp_path):
    cli = [sys.executable, "-m", "drivesegrt"]
    v = subprocess.run([*cli, "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert (v.returncode, v.stdout.strip()) == (0, f"drivesegrt {ds.__version__}")
    bare = subprocess.run(cli, capture_output=True, text=True, cwd=tmp_path)
    assert bare.returncode == 0 and bare.stdout.startswith("usage: drivesegrt")
    assert "commands:" in bare.stdout and not (tmp_path / "runs").exists()


def test_enum_flags_show_their_choices():
    out = subprocess.run([sys.executable, "-m", "drivesegrt", "run", "-h"], capture_output=True,
                         text=True, check=True).stdout
    for flag, values in [("--backend", "{torch,onnxruntime,openvino,tensorrt,auto}"),
                         ("--filter", "{linear,point}"), ("--resize", "{stretch,letterbox}"),
                         ("--remap", "{camvid11,cityscapes19,driving5}"),
                         ("--device", "{cpu,cuda,cuda:N}"), ("--codec", "{auto,h264,mp4v}")]:
        assert f"{flag} {values}" in out, flag
    for flag in ("--threads", "--input-size", "--no-legend", "--no-hud"):
        assert flag in out


def test_flags_for_config_keys_reach_the_config():
    import argparse

    from drivesegrt.run import add_arguments, load_run_config

    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = load_run_config(p.parse_args(["--threads", "1", "--input-size", "512x1024",
                                        "--no-legend", "--no-hud", "--codec", "mp4v",
                                        "--backend", "openvino", "--remap", "driving5"]))
    assert (cfg.model.threads, cfg.model.input_size, cfg.overlay.legend, cfg.overlay.hud,
            cfg.sinks.video_codec, cfg.model.backend, cfg.postprocess.remap) == \
        (1, (512, 1024), False, False, "mp4v", "openvino", "driving5")
    defaults = load_run_config(p.parse_args([]))
    assert (defaults.overlay.legend, defaults.overlay.hud, defaults.model.backend) == \
        (True, True, ds.DEFAULT_BACKEND)


def test_usage_errors_are_one_line_exit_2():
    cases = [(["run", "--backend", "tflite"],
              "drivesegrt: error: run: argument --backend: invalid choice: 'tflite' (choose from "
              "'torch', 'onnxruntime', 'openvino', 'tensorrt', 'auto') (see 'drivesegrt run -h')"),
             (["run", "--input-size", "12"],
              "drivesegrt: error: run: argument --input-size: '12': expected HxW, e.g. 360x480 "
              "(see 'drivesegrt run -h')"),
             (["--bogus"], "drivesegrt: error: unrecognized arguments: --bogus "
                           "(see 'drivesegrt -h')")]
    for argv, line in cases:
        r = subprocess.run([sys.executable, "-m", "drivesegrt", *argv], capture_output=True,
                           text=True)
        assert (r.returncode, r.stderr, r.stdout) == (2, line + "\n", ""), argv
