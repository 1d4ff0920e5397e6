"""Engine choice by measurement: ``drivesegrt run --backend auto`` and ``bench --pick``."""
from __future__ import annotations

import json
import shutil

import pytest
from helpers import HIGHWAY_CLIP, read_summary, run_cli, tiny_onnx

from drivesegrt.infer.build import model_path
from drivesegrt.infer.pick import MIN_AGREEMENT, int8_variants, pick, sample_frames

BUNDLED = model_path(None, "onnxruntime")
INT8 = BUNDLED.with_name(BUNDLED.stem + ".ov-int8.onnx")


def test_int8_variants_are_the_calibrated_files_next_to_the_model(tmp_path):
    model = tmp_path / "net.onnx"
    for name in ("net.onnx", "net.int8.onnx", "net.ov-int8.onnx", "net.fp16.onnx",
                 "other.int8.onnx", "net.int8.onnx.bak"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in int8_variants(model)] == ["net.int8.onnx", "net.ov-int8.onnx"]


def test_sample_frames_reads_the_video_else_generates():
    frames = sample_frames(str(HIGHWAY_CLIP), 3)
    assert [f.shape for f in frames] == [(540, 960, 3)] * 3
    made = sample_frames("http://127.0.0.1:9/live.ts", 2)        # a stream is not opened
    assert len(made) == 2 and made[0].shape == (540, 960, 3) and made[0].std() > 10


def test_pick_checks_every_runtime_and_int8_file_and_takes_the_fastest_agreeing():
    pytest.importorskip("openvino", reason="openvino not installed (pip install '.[openvino]')")
    choice, tried = pick(BUNDLED, sample_frames(str(HIGHWAY_CLIP), 2), seconds=0.2)
    got = [(c.backend, c.path.name) for c in tried]
    assert got == [("onnxruntime", BUNDLED.name), ("openvino", BUNDLED.name),
                   ("onnxruntime", INT8.name), ("openvino", INT8.name)]
    assert tried[0].agreement == 1.0 and tried[1].agreement > 0.9999   # fp32 on both
    assert all(MIN_AGREEMENT <= c.agreement < 1.0 for c in tried[2:])  # int8: close, not equal
    assert all(c.passed and c.ms > 0 for c in tried)
    assert choice.ms == min(c.ms for c in tried)


def test_a_variant_that_disagrees_is_never_timed_or_chosen(tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copy(BUNDLED, model)
    # random weights, same metadata and I/O: a calibration gone wrong
    tiny_onnx(tmp_path / "m.bad-int8.onnx", input_size=(360, 480), uint8_input=True)
    choice, tried = pick(model, sample_frames(str(HIGHWAY_CLIP), 2), seconds=0.1)
    bad = [c for c in tried if c.path.name == "m.bad-int8.onnx"]
    assert len(bad) == 2 and all(c.agreement < MIN_AGREEMENT and c.ms is None for c in bad)
    assert "not timed" in bad[0].describe()
    assert choice.path == model


def test_run_backend_auto_says_what_it_chose_and_runs_it(tmp_path):
    out = tmp_path / "run"
    r = run_cli("run", "--source", HIGHWAY_CLIP, "--backend", "auto", "--max-frames", "6",
                "--output", out)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "backend auto:" in ln]
    assert len(lines) == 5, r.stderr                     # 4 candidates, then the choice
    chosen = lines[-1].split("chose ", 1)[1]
    backend, path = chosen.split(" ", 1)
    summary = read_summary(out)
    assert summary["frames_out"] == 6
    assert summary["model"]["backend"] == backend and summary["model"]["path"] == path


@pytest.mark.parametrize("args, message", [
    (("--model", str(model_path(None, "torch"))), "is not an .onnx file"),
])
def test_run_backend_auto_refuses_what_it_cannot_choose_for(tmp_path, args, message):
    r = run_cli("run", "--source", HIGHWAY_CLIP, "--backend", "auto", "--max-frames", "2",
                "--output", tmp_path / "run", *args)
    assert r.returncode == 2
    assert r.stderr.startswith("drivesegrt: error: ") and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bench_pick_records_the_choice(tmp_path):
    out = tmp_path / "bench"
    r = run_cli("bench", "--runtimes", "", "--pipeline-backends", "", "--pick", "--no-naive",
                "--video", HIGHWAY_CLIP, "--frames", "8", "--out", out, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["pick"]["chosen"]["passed"] is True
    assert len(res["pick"]["candidates"]) == 4
    assert [p["backend"] for p in res["pipelines"]] == ["auto"]
    assert res["pipelines"][0]["frames_out"] == 8
    assert "auto pipeline/engine-only" in res["ratios"]
    table = (out / "results.md").read_text()
    assert "### Engine pick" in table and table.count("**chosen**") == 1
