"""Every kind of bad input, through the real CLI: ``python -m drivesegrt run ...`` as a process.

One row per input: the exit code, stderr line by line in full (``drivesegrt: error: ...``
naming the file/key/value for exit 2, the warnings of a run that goes on), never a traceback,
and, where frames were processed, outputs that agree with summary.json (frames.jsonl whole
lines, overlay.mp4 playable with frames_out frames, overlays/ and masks/ one file per frame).

The rows' inputs are small files made once per module; the selected rows run as processes
four at a time before the first assertion (``runs``), so the table costs about what its
slowest rows cost. ``{tmp}`` in a row is the inputs folder, ``{*}`` in an expected line is
a third party's words (a parser's reason), matched as ``.+``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import (
    HIGHWAY_CLIP,
    ROOT,
    damaged_copy,
    ffmpeg,
    ffmpeg_frame_md5s,
    needs_ffmpeg,
    read_jsonl,
    tiny_checkpoint,
    tiny_net,
    tiny_onnx,
    video_info,
)

from drivesegrt.capture.replay import free_port
from drivesegrt.deploy.export import export_onnx
from drivesegrt.labels import LabelSet
from drivesegrt.meta import ModelMeta

pytestmark = [needs_ffmpeg, pytest.mark.timeout(300)]

SYNTH = "synthetic:?w=64&h=48&frames=2"          # a source that works, for model/config rows
BUNDLED = ROOT / "drivesegrt" / "weights" / "mobileseg_camvid.onnx"
NO_CUDA_EP = "CUDAExecutionProvider" not in ort.get_available_providers()


@dataclass
class Row:
    id: str
    args: tuple                  # after ``run``; ``--output`` is added (and --source SYNTH
    #                              when the row names none)
    rc: int
    err: tuple = ()              # every stderr line, in order
    frames: int | str | None = None   # frames_out, when frames were processed; "decodable":
    #                                   as many as the ffmpeg program decodes from the source
    summary: dict = field(default_factory=dict)   # further summary.json values
    files: tuple = ()            # output files expected (relative to the run directory)
    stdout: str | None = None    # a file stdout goes to (default: a pipe)
    needs: str | None = None     # a condition that must hold, else the row is skipped


E = "drivesegrt: error: "
W = "drivesegrt: warning: "
CORRUPT = (W + "{src}: {n} corrupt frame(s) could not be decoded and were skipped "
           "(frames_corrupt in summary.json)")
EXTS = ".png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp"

ROWS = [
    # ---- video files
    Row("video-missing", ("--source", "{tmp}/nope.mp4"), 2, (E + "source not found: {tmp}/nope.mp4",)),
    Row("video-zero-bytes", ("--source", "{tmp}/zero.mp4"), 2, (E + "{tmp}/zero.mp4: empty file (0 bytes)",)),
    Row("video-text", ("--source", "{tmp}/notes.mp4"), 2,
        (E + "{tmp}/notes.mp4: cannot open as a video (unknown or corrupt format)",)),
    Row("video-garbage", ("--source", "{tmp}/garbage.mp4"), 2,
        (E + "{tmp}/garbage.mp4: cannot open as a video (unknown or corrupt format)",)),
    Row("video-no-frames", ("--source", "{tmp}/empty.mp4"), 2,
        (E + "{tmp}/empty.mp4: holds no video stream",)),
    Row("video-audio-only", ("--source", "{tmp}/audio.m4a"), 2,
        (E + "{tmp}/audio.m4a: holds no video stream",)),
    Row("video-truncated", ("--source", "{tmp}/cut.mp4"), 0,
        (CORRUPT.format(src="{tmp}/cut.mp4", n="{corrupt}"),), frames="decodable",
        summary={"end_reason": "{tmp}/cut.mp4: the file ends after {packets} of its 60 frames "
                               "(truncated)"}, files=("overlay.mp4",)),
    Row("video-truncated-no-index", ("--source", "{tmp}/cut_no_index.mp4"), 2,
        (E + "{tmp}/cut_no_index.mp4: cannot open as a video (unknown or corrupt format)",)),
    Row("video-damaged", ("--source", "{tmp}/damaged.mp4"), 0,
        (CORRUPT.format(src="{tmp}/damaged.mp4", n="{corrupt}"),),
        frames="decodable", files=("overlay.mp4",)),
    Row("video-png-renamed", ("--source", "{tmp}/image.mp4"), 0, frames=1, files=("overlay.mp4",)),
    Row("video-raw-h264", ("--source", "{tmp}/raw.h264"), 0, frames=30, files=("overlay.mp4",)),
    Row("video-raw-mjpeg", ("--source", "{tmp}/raw.mjpeg", "--save-masks"), 0, frames=30,
        files=("overlay.mp4", "masks/000029.png")),
    # ---- image folders and globs
    Row("images-mixed", ("--source", "{tmp}/mixed", "--save-masks"), 0,
        (W + "skipping unreadable image {tmp}/mixed/c.png", CORRUPT.format(src="{tmp}/mixed", n=1)),
        frames=2, summary={"frames_corrupt": 1},
        files=("overlays/a.jpg", "overlays/b.jpg", "masks/a.png", "masks/b.png")),
    Row("images-first-unreadable", ("--source", "{tmp}/firstbad"), 0,
        (W + "skipping unreadable image {tmp}/firstbad/a.png",
         CORRUPT.format(src="{tmp}/firstbad", n=1)), frames=1,
        summary={"frames_corrupt": 1}, files=("overlays/b.jpg",)),
    Row("images-none-readable", ("--source", "{tmp}/allbad"), 2,
        (W + "skipping unreadable image {tmp}/allbad/a.png",
         W + "skipping unreadable image {tmp}/allbad/b.png",
         E + "{tmp}/allbad: none of the 2 image(s) is readable (first: {tmp}/allbad/a.png)")),
    Row("images-same-stem", ("--source", "{tmp}/stems", "--save-masks"), 0,
        (W + "{tmp}/stems: 2 image(s) share a stem with an earlier one; outputs renamed: "
         "a.jpg -> a-1, a.png -> a-2 (all in summary.json source.renamed)",), frames=3,
        summary={"source.renamed": {"a-1": "{tmp}/stems/a.jpg", "a-2": "{tmp}/stems/a.png"}},
        files=("overlays/a.jpg", "overlays/a-1.jpg", "overlays/a-2.jpg", "masks/a-2.png")),
    Row("images-empty-folder", ("--source", "{tmp}/emptydir"), 2,
        (E + f"no images found at {{tmp}}/emptydir (extensions: {EXTS})",)),
    Row("images-glob-no-match", ("--source", "{tmp}/*.jpeg"), 2,
        (E + f"no images found at {{tmp}}/*.jpeg (extensions: {EXTS})",)),
    # ---- cameras and URLs
    Row("url-ipv6-unclosed", ("--source", "rtsp://[::1"), 2,
        (E + "malformed source URL 'rtsp://[::1' (Invalid IPv6 URL)",)),
    Row("url-bad-port", ("--source", "http://127.0.0.1:port/live.ts"), 2,
        (E + "malformed source URL 'http://127.0.0.1:port/live.ts' (Port could not be cast to "
         "integer value as 'port')",)),
    Row("url-port-range", ("--source", "rtsp://[::1]:99999/x"), 2,
        (E + "malformed source URL 'rtsp://[::1]:99999/x' (Port out of range 0-65535)",)),
    Row("url-scheme", ("--source", "gopher://x"), 2,
        (E + "unsupported stream scheme 'gopher'; allowed: rtsp, rtsps, rtmp, http, https, udp, "
         "tcp, srt, rtp, mms",)),
    Row("url-nobody-listens", ("--source", "http://127.0.0.1:{port}/live.ts"), 2,
        (E + "stream http://127.0.0.1:{port}/live.ts does not open",)),
    Row("camera-missing", ("--source", "/dev/video97"), 2,
        (E + "camera /dev/video97 does not open (no such device)",)),
    # ---- synthetic: parameters
    Row("synthetic-fps-tiny", ("--source", "synthetic:?fps=1e-9&frames=2"), 2,
        (E + "synthetic: option fps=1e-09 is out of range (0.01..1000.0)",)),
    Row("synthetic-fps-nan", ("--source", "synthetic:?fps=nan"), 2,
        (E + "synthetic: option fps=nan is out of range (0.01..1000.0)",)),
    Row("synthetic-fps-inf", ("--source", "synthetic:?fps=inf"), 2,
        (E + "synthetic: option fps=inf is out of range (0.01..1000.0)",)),
    Row("synthetic-huge", ("--source", "synthetic:?w=100000&h=100000"), 2,
        (E + "synthetic: option w=100000 is out of range (32..8192)",)),
    Row("synthetic-frames-negative", ("--source", "synthetic:?frames=-1"), 2,
        (E + "synthetic: option frames=-1 is out of range (0..)",)),
    Row("synthetic-not-integer", ("--source", "synthetic:?w=64.5"), 2,
        (E + "synthetic: option w='64.5' is not an integer",)),
    Row("synthetic-unknown-option", ("--source", "synthetic:?width=64"), 2,
        (E + "synthetic: unknown option 'width'; allowed: w, h, fps, frames, live, seed",)),
    Row("synthetic-endless-max-frames", ("--source", "synthetic:?w=64&h=48&frames=0",
                                         "--max-frames", "3"), 0, frames=3, files=("overlay.mp4",)),
    Row("synthetic-slow-fps", ("--source", "synthetic:?w=64&h=48&frames=2&fps=0.5"), 0,
        frames=2, files=("overlay.mp4",)),
    # ---- models
    Row("model-missing", ("--model", "{tmp}/nope.onnx"), 2,
        (E + "model file not found: {tmp}/nope.onnx (bundled models: camvid, cityscapes, camvid-espnetv2)",)),
    Row("model-truncated", ("--model", "{tmp}/truncated.onnx"), 2,
        (E + "{tmp}/truncated.onnx: not a readable ONNX model ({*})",)),
    Row("model-no-metadata", ("--model", "{tmp}/nometa.onnx"), 2,
        (E + "{tmp}/nometa.onnx: no drivesegrt metadata (metadata_props['drivesegrt']); export "
         "it with 'drivesegrt export'",)),
    Row("model-meta-disagrees", ("--model", "{tmp}/lying.onnx"), 2,
        (E + "{tmp}/lying.onnx: metadata declares input uint8_nhwc_bgr but the graph takes "
         "float input",)),
    Row("model-fixed-input-size", ("--input-size", "512x1024"), 2,
        (E + "model.input_size 512x1024: the model's graph takes a fixed 360x480 input (export "
         "it with --dynamic-hw to run other sizes)",)),
    Row("model-300-classes", ("--model", "{tmp}/c300.onnx"), 2,
        (E + "{tmp}/c300.onnx: 300 classes; drivesegrt supports 1 to 255 (class ids are uint8 "
         "in masks, 255 is reserved)",)),
    Row("model-onnx-to-torch", ("--backend", "torch", "--model", "{tmp}/tiny.onnx"), 2,
        (E + "{tmp}/tiny.onnx: an ONNX file; the torch backend loads .pt checkpoints (use "
         "--backend onnxruntime or openvino)",)),
    Row("model-pt-to-onnxruntime", ("--model", "{tmp}/tiny.pt"), 2,
        (E + "{tmp}/tiny.pt: a PyTorch checkpoint, not ONNX; use --backend torch, or "
         "'drivesegrt export' it to ONNX",)),
    Row("model-garbage-pt", ("--backend", "torch", "--model", "{tmp}/garbage.pt"), 2,
        (E + "{tmp}/garbage.pt: not a readable drivesegrt checkpoint (UnpicklingError: Weights "
         "only load failed)",)),
    # ---- devices
    Row("device-cuda-onnxruntime", ("--device", "cuda"), 2,
        (E + "backend onnxruntime cannot run on device 'cuda': this onnxruntime build has no "
         "CUDA execution provider (install onnxruntime-gpu, or use --device cpu)",),
        needs="no-cuda-ep"),
    Row("device-cuda-torch", ("--backend", "torch", "--model", "{tmp}/tiny.pt", "--device",
                              "cuda:0"), 2,
        (E + "backend torch cannot run on device 'cuda:0': CUDA is not available here (torch "
         f"{torch.__version__})",), needs="no-cuda"),
    Row("device-cuda-openvino", ("--backend", "openvino", "--device", "cuda"), 2,
        (E + "backend openvino cannot run on device 'cuda': cpu only (use --backend onnxruntime "
         "or tensorrt on CUDA)",)),
    Row("device-malformed", ("--device", "cuda:x"), 2,
        (E + "config key 'model.device': unknown device 'cuda:x'; use cpu, cuda or cuda:N",)),
    # ---- config files and flags
    Row("config-missing", ("--config", "{tmp}/nope.yaml"), 2,
        (E + "config file not found: {tmp}/nope.yaml",)),
    Row("config-syntax", ("--config", "{tmp}/syntax.yaml"), 2,
        (E + "{tmp}/syntax.yaml: invalid YAML at line 3",)),          # where the list is cut
    Row("config-not-utf8", ("--config", "{tmp}/latin1.yaml"), 2,
        (E + "{tmp}/latin1.yaml: not UTF-8 text (byte 0xe9 at line 2)",)),
    Row("config-python-tag", ("--config", "{tmp}/tag.yaml"), 2,
        (E + "{tmp}/tag.yaml: invalid YAML at line 1",)),
    Row("config-list", ("--config", "{tmp}/list.yaml"), 2,
        (E + "{tmp}/list.yaml: top level must be a mapping of keys",)),
    Row("config-unknown-key", ("--config", "{tmp}/unknown.yaml"), 2,
        (E + "unknown config key overlay.'opacity'; allowed keys: alpha, legend, hud, "
             "draw_drivable",)),
    Row("config-type", ("--config", "{tmp}/type.yaml"), 2,
        (E + "config key 'overlay.alpha': expected a number, got 'high'",)),
    Row("config-device-type", ("--config", "{tmp}/device.yaml"), 2,
        (E + "config key 'model.device': expected a string, got [0]",)),
    Row("flag-max-frames", ("--max-frames", "0"), 2,
        (E + "config key 'max_frames': must be >= 1, got 0",)),
    Row("flag-not-a-number", ("--max-frames", "ten"), 2,
        (E + "run: argument --max-frames: invalid int value: 'ten' (see 'drivesegrt run -h')",)),
    # ---- where the summary goes
    Row("stdout-full", ("--source", "synthetic:?w=64&h=48&frames=3"), 1,
        (E + "cannot write the summary to stdout (No space left on device); outputs are "
         "finalized in {out}",), frames=3, files=("overlay.mp4",), stdout="/dev/full"),
]


# ------------------------------------------------------------------------------ inputs
@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data) -> Path:
    """Every bad (and odd) input of the table, small."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "zero.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("not a video, just notes\n")
    (d / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=64x64:d=1", "-frames:v", 0, d / "empty.mp4")
    ffmpeg("-f", "lavfi", "-i", "sine=d=0.2", "-c:a", "aac", d / "audio.m4a")
    small = d / "small.mp4"                      # the highway clip, 60 frames at 160x90
    ffmpeg("-i", HIGHWAY_CLIP, "-an", "-frames:v", 60, "-vf", "scale=160:90", "-c:v", "libx264",
           "-preset", "ultrafast", "-g", "12", "-movflags", "+faststart", small)
    ffmpeg("-i", small, "-c", "copy", d / "moov_at_end.mp4")     # the index after the frames
    data = small.read_bytes()
    (d / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    data = (d / "moov_at_end.mp4").read_bytes()
    (d / "cut_no_index.mp4").write_bytes(data[: int(len(data) * 0.6)])
    damaged_copy(small, d / "damaged.mp4", at=0.5, nbytes=len(data) // 10)
    cv2.imwrite(str(d / "image.png"), np.full((48, 64, 3), 90, np.uint8))
    (d / "image.png").rename(d / "image.mp4")
    ffmpeg("-i", small, "-frames:v", 30, "-c:v", "libx264", "-preset", "ultrafast",
           "-bsf:v", "h264_mp4toannexb", "-f", "h264", d / "raw.h264")
    ffmpeg("-i", small, "-frames:v", 30, "-c:v", "mjpeg", "-q:v", 5, "-f", "mjpeg",
           d / "raw.mjpeg")
    _images(d)
    _models(d)
    configs = {"syntax.yaml": "model:\n  path: [unclosed\n",
               "tag.yaml": "!!python/object/apply:os.system ['true']\n",
               "list.yaml": "- model\n- overlay\n",
               "unknown.yaml": "overlay:\n  opacity: 0.3\n",
               "type.yaml": "overlay:\n  alpha: high\n",
               "device.yaml": "model:\n  device: [0]\n"}
    for name, text in configs.items():
        (d / name).write_text(text)
    (d / "latin1.yaml").write_bytes("model:\n  path: caf\u00e9.onnx\n".encode("latin-1"))
    return d


def _images(d: Path) -> None:
    def good(path: Path, value: int):
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), np.full((48, 64, 3), value, np.uint8))

    def bad(path: Path):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"\x89PNG but not really")

    good(d / "mixed" / "a.png", 10)
    good(d / "mixed" / "b.jpg", 20)
    bad(d / "mixed" / "c.png")
    (d / "mixed" / "notes.txt").write_text("skipped: not an image suffix")
    (d / "mixed" / "sub").mkdir()
    bad(d / "firstbad" / "a.png")
    good(d / "firstbad" / "b.png", 30)
    bad(d / "allbad" / "a.png")
    bad(d / "allbad" / "b.png")
    for suffix, value in ((".bmp", 40), (".jpg", 50), (".png", 60)):
        good(d / "stems" / f"a{suffix}", value)
    (d / "emptydir").mkdir()


def _models(d: Path) -> None:
    tiny_checkpoint(d / "tiny.pt")
    tiny_onnx(d / "tiny.onnx")
    data = BUNDLED.read_bytes()
    (d / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (d / "garbage.pt").write_bytes(b"\x00\x01garbage" * 100)
    proto = onnx.load(str(d / "tiny.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(d / "nometa.onnx"))
    proto = onnx.load(str(d / "tiny.onnx"))                   # float input, says uint8
    meta = json.loads(proto.metadata_props[0].value)
    proto.metadata_props[0].value = json.dumps({**meta, "input_format": "uint8_nhwc_bgr"})
    onnx.save(proto, str(d / "lying.onnx"))
    labels = LabelSet("many300", tuple(f"class{i}" for i in range(300)),
                      tuple((i % 256, (7 * i) % 256, (13 * i) % 256) for i in range(300)))
    torch.manual_seed(0)
    model = tiny_net("mobileseg", 300).eval()                  # a real 300-class network
    export_onnx(model, ModelMeta.for_label_set("mobileseg", labels, input_size=(64, 96),
                                               arch_kwargs={}), d / "c300.onnx")


# ------------------------------------------------------------------------------ running
def _fill(text: str, values: dict) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def _fill_all(value, values: dict):
    """``value`` with ``_fill`` applied to every string in it (dicts and strings)."""
    if isinstance(value, dict):
        return {_fill(k, values): _fill_all(v, values) for k, v in value.items()}
    return _fill(value, values) if isinstance(value, str) else value


def _run(row: Row, inputs: Path, out: Path, port: int) -> subprocess.CompletedProcess:
    values = {"tmp": inputs, "port": port, "out": out}
    args = [_fill(a, values) for a in row.args]
    if "--source" not in args:
        args = ["--source", SYNTH, *args]
    cmd = [sys.executable, "-m", "drivesegrt", "run", *args, "--output", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if row.stdout:
        with open(row.stdout, "w") as stdout:
            return subprocess.run(cmd, cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE,
                                  text=True, timeout=240)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def _skip_reason(row: Row) -> str | None:
    if row.needs == "no-cuda-ep" and not NO_CUDA_EP:
        return "onnxruntime has its CUDA execution provider here"
    if row.needs == "no-cuda" and torch.cuda.is_available():
        return "CUDA is available here"
    return None


@pytest.fixture(scope="module")
def runs(request, inputs, tmp_path_factory) -> dict:
    """The selected rows, run as processes four at a time: id -> (process, run directory)."""
    selected = {item.callspec.id for item in request.session.items
                if isinstance(item, pytest.Function) and item.originalname == "test_bad_input"}
    rows = [r for r in ROWS if r.id in selected and _skip_reason(r) is None]
    outs = tmp_path_factory.mktemp("runs")
    port = free_port()                           # nothing listens there
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {r.id: pool.submit(_run, r, inputs, outs / r.id, port) for r in rows}
        return {rid: (f.result(), outs / rid, port) for rid, f in futures.items()}


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row, runs, inputs):
    if (reason := _skip_reason(row)) is not None:
        pytest.skip(reason)
    proc, out, port = runs[row.id]
    values = {"tmp": inputs, "port": port, "out": out}
    if row.frames == "decodable":
        values.update(_ffmpeg_counts(Path(_fill(row.args[1], values))))
    lines = proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == len(row.err), proc.stderr
    for line, template in zip(lines, row.err):
        pattern = ".+".join(re.escape(_fill(part, values)) for part in template.split("{*}"))
        assert re.fullmatch(pattern, line), f"\n{line}\n{_fill(template, values)}"
    assert proc.returncode == row.rc, proc.stderr
    if row.frames is None:
        assert row.rc == 2 and not out.exists()             # refused before any output
        return
    _check_outputs(out, values.get("frames", row.frames), row, values)


def _ffmpeg_counts(video: Path) -> dict:
    """What the ffmpeg tools make of ``video``: frames decoded, packets read, their
    difference (the frames that could not be decoded)."""
    frames = len(ffmpeg_frame_md5s(video))
    packets = int(subprocess.run(
        ["ffprobe", "-v", "quiet", "-select_streams", "v:0", "-count_packets", "-show_entries",
         "stream=nb_read_packets", "-of", "csv=p=0", str(video)],
        capture_output=True, text=True, timeout=60, check=True).stdout.strip())
    assert 0 < frames < packets <= 60
    return {"frames": frames, "packets": packets, "corrupt": packets - frames}


def _check_outputs(out: Path, frames: int, row: Row, values: dict) -> None:
    """Outputs of a run that processed frames: whole, and in agreement with summary.json."""
    s = json.loads((out / "summary.json").read_text())
    assert s["frames_out"] == s["frames_in"] == frames
    for dotted, value in row.summary.items():
        got = s
        for key in dotted.split("."):
            got = got[key]
        assert got == _fill_all(value, values), dotted
    if "corrupt" in values:
        assert s["frames_corrupt"] == values["corrupt"]
    records = read_jsonl(out / "frames.jsonl")                 # every line whole JSON
    assert len(records) == frames
    for name in row.files:
        assert (out / name).is_file(), name
    if (out / "overlay.mp4").exists():
        n, w, h = video_info(out / "overlay.mp4")
        assert n == frames and (w, h) == (s["source"]["width"], s["source"]["height"])
    for folder in ("overlays", "masks"):
        if (out / folder).exists():
            assert len(list((out / folder).iterdir())) == frames
    if s["source"]["kind"] == "images":
        stems = [r["stem"] for r in records]
        assert sorted(p.stem for p in (out / "overlays").iterdir()) == sorted(stems)
        assert len(set(stems)) == len(stems)
