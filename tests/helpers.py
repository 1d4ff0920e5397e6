"""The tests' one helper module: data paths, tiny random-weight models (torch module,
checkpoint, ONNX), generated datasets, test frames, and runners for the CLI as a real process.
Fixtures live in conftest.py; the headless Chromium driver in browser.py."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from drivesegrt.engines import Engine
from drivesegrt.frame import Frame
from drivesegrt.labels import CAMVID11, LabelSet
from drivesegrt.meta import ModelMeta
from drivesegrt.models import build_model
from drivesegrt.models.checkpoint import save_checkpoint

# --------------------------------------------------------------------------- paths
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CAMVID = SHARED / "camvid"
HIGHWAY_CLIP = SHARED / "videos" / "udacity_lanelines_solidWhiteRight.mp4"   # 960x540, 221 frames
CAMVID_CLIP = SHARED / "videos" / "camvid_0016E5_val_15fps.mp4"              # 480x360, 101 frames
CALIBRATION_LIST = ROOT / "calibration" / "camvid_train.txt"

# The models' own normalization defaults (ImageNet RGB mean/std on [0, 1] pixels)
MEAN, STD = ModelMeta.mean, ModelMeta.std

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

# --------------------------------------------------------------------------- tiny models
# Widths that make each zoo model tiny (a few thousand parameters). Every zoo model except
# mobileseg takes ``base``: channels of its first stage, later stages are multiples.
TINY_KWARGS = {
    "mobileseg": {"width": 0.25, "decoder_channels": 16},
    "fcn32s": {"base": 4},
    "fcn16s": {"base": 4},
    "fcn8s": {"base": 4},
    "segnet": {"base": 4},
    "unet": {"base": 4},
    "encdec": {"base": 4},
    "espnetv2": {"s": 0.5},
}
TINY_SIZE = (64, 96)   # (H, W): divisible by 32, small enough for 2 shared cores


def tiny_net(name: str, num_classes: int, **overrides) -> torch.nn.Module:
    """The zoo model ``name`` at its tiny widths (``overrides`` replace or add options)."""
    return build_model(name, num_classes, **{**TINY_KWARGS[name], **overrides})


def tiny_model(name: str = "mobileseg", labels: LabelSet = CAMVID11, input_size=TINY_SIZE,
               seed: int = 0) -> tuple[torch.nn.Module, ModelMeta]:
    """(model in eval mode, its ModelMeta): random weights from ``seed`` and non-trivial
    BatchNorm statistics, so folding them (export, fusion) is actually exercised."""
    torch.manual_seed(seed)
    model = tiny_net(name, labels.num_classes)
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    meta = ModelMeta.for_label_set(name, labels, arch_kwargs=dict(TINY_KWARGS[name]),
                                   input_size=tuple(input_size))
    return model.eval(), meta


def tiny_checkpoint(path: Path, name: str = "mobileseg", labels: LabelSet = CAMVID11,
                    input_size=TINY_SIZE, seed: int = 0) -> Path:
    """``tiny_model(...)`` saved as a drivesegrt checkpoint at ``path``; returns ``path``."""
    save_checkpoint(path, *tiny_model(name, labels, input_size, seed))
    return path


def tiny_onnx(path: Path, name: str = "mobileseg", input_size=TINY_SIZE,
              **export_options) -> Path:
    """``tiny_model(name)`` exported to ``path`` (export_onnx options); returns ``path``."""
    from drivesegrt.deploy.export import export_onnx

    export_onnx(*tiny_model(name, input_size=input_size), path, **export_options)
    return path


def logits_onnx(path: Path, logits: np.ndarray, input_size=(8, 12),
                labels: LabelSet = CAMVID11) -> Path:
    """An ONNX model (with drivesegrt metadata) that answers every (1, H, W, 3) uint8 frame
    batch with the fixed (1, C, h, w) float32 ``logits``: known scores through a real engine."""
    from onnx import TensorProto, helper, numpy_helper

    from drivesegrt.deploy.onnx_meta import write_meta

    logits = np.asarray(logits, np.float32)
    x = helper.make_tensor_value_info("frames", TensorProto.UINT8, [1, *input_size, 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(logits.shape))
    node = helper.make_node("Constant", [], ["logits"], value=numpy_helper.from_array(logits))
    model = helper.make_model(helper.make_graph([node], "fixed_logits", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_meta(model, ModelMeta.for_label_set("fixed", labels, input_size=tuple(input_size),
                                              input_format="uint8_nhwc_bgr"))
    onnx.save(model, str(path))
    return path


def onnx_infer(model, x: np.ndarray) -> np.ndarray:
    """The first output of an ONNX model (a path or a ModelProto) on ONNX Runtime's CPU
    provider, ``x`` fed to its first input."""
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


class _WrappedEngine(Engine):
    """A real engine (``inner``) with something added to ``infer`` by a subclass."""

    def __init__(self, inner: Engine):
        self.inner = inner

    @classmethod
    def load(cls, path, device="cpu", **options):
        raise NotImplementedError("wraps an engine that is already loaded")

    @property
    def spec(self):
        return self.inner.spec


class SlowEngine(_WrappedEngine):
    """Wraps a real engine: sleeps ``delay_s`` before each inference (an engine slower than
    the camera) and raises on call ``fail_at`` only, or on every call from ``fail_from`` on."""

    def __init__(self, inner: Engine, delay_s: float = 0.0, fail_at: int | None = None,
                 fail_from: int | None = None):
        super().__init__(inner)
        self.delay_s, self.calls = delay_s, 0
        self.fail_at, self.fail_from = fail_at, fail_from

    def infer(self, batch):
        self.calls += 1
        if self.calls == self.fail_at or (self.fail_from is not None
                                          and self.calls >= self.fail_from):
            raise RuntimeError("engine exploded")
        time.sleep(self.delay_s)
        return self.inner.infer(batch)


class CostlyEngine(_WrappedEngine):
    """Wraps a real engine whose cost grows with its input: while ``slow`` is set, each call
    also sleeps ``s_per_mpixel`` x the batch's pixels (N x H x W, in millions), so a batch of
    several cameras or a larger input costs more, and a smaller one less. ``slow_until``: the
    ``time.perf_counter()`` at which the slowdown ends by itself (None: when cleared)."""

    def __init__(self, inner: Engine, s_per_mpixel: float, slow_until: float | None = None):
        super().__init__(inner)
        self.s_per_mpixel, self.slow_until = s_per_mpixel, slow_until
        self.slow = threading.Event()
        self.slow.set()
        self.shapes: list[tuple[int, ...]] = []

    def infer(self, batch):
        self.shapes.append(tuple(batch.shape))
        if self.slow_until is not None and time.perf_counter() >= self.slow_until:
            self.slow.clear()
        if self.slow.is_set():
            n, h, w = batch.shape[0], *batch.shape[-2:]         # (N, 3, H, W)
            time.sleep(self.s_per_mpixel * n * h * w / 1e6)
        return self.inner.infer(batch)


# --------------------------------------------------------------------------- data
# Cityscapes label ids written by make_cityscapes and the train ids they must become
CS_IDS = np.array([[7, 8, 11, 26], [0, 23, 24, 33], [3, 29, 19, 20]], np.uint8)
CS_TRAIN = np.array([[0, 1, 2, 13], [255, 10, 11, 18], [255, 255, 6, 7]], np.uint8)


def make_camvid(root: Path, split: str = "train", labels=None, n: int = 3, hw=(8, 12),
                label_value: int = 1) -> Path:
    """A CamVid (SegNet layout) split: ``labels`` (list of HxW uint8 arrays) or ``n`` labels
    filled with ``label_value``; images are gray f{i}.png of the same size."""
    if labels is None:
        labels = [np.full(hw, label_value, np.uint8)] * n
    for folder in (split, f"{split}annot"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i, lab in enumerate(labels):
        cv2.imwrite(str(root / split / f"f{i}.png"), np.full((*lab.shape, 3), 50, np.uint8))
        cv2.imwrite(str(root / f"{split}annot" / f"f{i}.png"), lab)
    return root


def make_cityscapes(root: Path, split: str = "val", per_city: int = 2,
                    cities=("aachen", "bremen")) -> Path:
    """leftImg8bit/{split}/{city}/{city}_000000_00000{i}_leftImg8bit.png + gtFine labelIds
    (CS_IDS rolled by i columns) + a gtFine color file that must not be taken for a label."""
    for c, city in enumerate(cities):
        for folder in ("leftImg8bit", "gtFine"):
            (root / folder / split / city).mkdir(parents=True, exist_ok=True)
        for i in range(per_city):
            stem = f"{city}_000000_{i:06d}"
            cv2.imwrite(str(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"),
                        np.full((*CS_IDS.shape, 3), 10 * (c * per_city + i), np.uint8))
            cv2.imwrite(str(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"),
                        np.roll(CS_IDS, i, axis=1))
            cv2.imwrite(str(root / "gtFine" / split / city / f"{stem}_gtFine_color.png"),
                        np.zeros((*CS_IDS.shape, 3), np.uint8))
    return root


def camvid_images(n: int, split: str = "test") -> list[Path]:
    """The first ``n`` real CamVid images of ``split`` (the test is skipped without them)."""
    folder = CAMVID / split
    if not folder.is_dir():
        pytest.skip(f"CamVid {split} images not found at {folder}")
    return sorted(folder.glob("*.png"))[:n]


def random_frames(n: int, size=TINY_SIZE, seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8 BGR noise frames."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size[0], size[1], 3), dtype=np.uint8)


def textured_frame(hw, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: smooth color blobs plus noise (edges and flat areas, like video)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (hw[0] // 16 + 2, hw[1] // 16 + 2, 3), dtype=np.uint8)
    base = cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    return np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)


def smooth_logits(c: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(C, h, w) float32 logits with class regions and boundaries (bicubic-upsampled noise)."""
    small = np.random.default_rng(seed).standard_normal((c, h // 6 + 2, w // 6 + 2)) * 3
    return np.stack([cv2.resize(p.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
                     for p in small])


def published_frame(i: int, size=(160, 90), stem: str | None = None) -> Frame:
    """Frame ``i`` as the publish stage sees it: overlay gray level (40 i) mod 256, labels
    i mod 11, stage times capture 1 ms and infer 5 ms, latency 2 ms."""
    w, h = size
    f = Frame(index=i, image=np.zeros((h, w, 3), np.uint8), t_capture=time.perf_counter(),
              stem=stem)
    f.overlay = np.full((h, w, 3), (i * 40) % 256, np.uint8)
    f.labels = np.full((h, w), i % 11, np.uint8)
    f.stages_ms = {"capture": 1.0, "infer": 5.0}
    f.latency_ms = 2.0
    return f


# --------------------------------------------------------------------------- outputs
def video_info(path: Path) -> tuple[int, int, int]:
    """(frames decoded, width, height) by decoding every frame with OpenCV."""
    cap = cv2.VideoCapture(str(path))
    n, size = 0, (0, 0)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        size = (frame.shape[1], frame.shape[0])
    cap.release()
    return n, *size


def damaged_copy(src: Path, dst: Path, at: float = 0.5, nbytes: int = 200_000,
                 seed: int = 0) -> Path:
    """A copy of ``src`` with ``nbytes`` seeded random bytes written over it at fraction
    ``at`` of its length (a damaged recording: the container is intact, frames are not)."""
    data = bytearray(Path(src).read_bytes())
    start = int(len(data) * at)
    data[start:start + nbytes] = np.random.default_rng(seed).bytes(nbytes)[:len(data) - start]
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def ffmpeg_frame_md5s(path: Path) -> list[str]:
    """MD5 of every frame the ffmpeg program decodes from ``path``'s first video stream, as
    BGR24 (the reference for "every decodable frame, in order")."""
    out = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "quiet", "-i", str(path),
                          "-map", "0:v:0", "-pix_fmt", "bgr24", "-f", "framemd5", "-"],
                         capture_output=True, text=True, timeout=120).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines()
            if line and not line.startswith("#")]


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- processes
def cli_main(*argv) -> int:
    """``drivesegrt ARGV`` in this process (arguments stringified); its exit code."""
    from drivesegrt import cli

    return cli.main([str(a) for a in argv])


def _cli(*args) -> tuple[list[str], dict]:
    """Command line and environment of ``python -m drivesegrt ARGS`` from this checkout."""
    return ([sys.executable, "-m", "drivesegrt", *map(str, args)],
            dict(os.environ, PYTHONPATH=str(ROOT)))


def run_args(model, config, source, out, *more) -> tuple:
    """``drivesegrt run`` arguments on the torch backend: ``model`` (a tiny checkpoint),
    ``config`` (e.g. one engine thread), ``source`` into run directory ``out``."""
    return ("run", "--backend", "torch", "--source", source, "--model", model,
            "--config", config, "--output", out, *more)


def run_cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m drivesegrt ARGS`` as a real process, to its end (text stdout/stderr)."""
    cmd, env = _cli(*args)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


class LiveRun:
    """``python -m drivesegrt ARGS`` in the background; stdout and stderr are collected
    line by line by threads, so a test can wait for a message while the run goes on."""

    def __init__(self, *args):
        cmd, env = _cli(*args)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._readers = [threading.Thread(target=self._collect, args=(pipe, lines), daemon=True)
                         for pipe, lines in ((self.proc.stderr, self.stderr_lines),
                                             (self.proc.stdout, self.stdout_lines))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _collect(pipe, lines: list[str]):
        for line in pipe:
            lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    @property
    def stdout(self) -> str:
        return "\n".join(self.stdout_lines)

    def wait_for_line(self, needle: str, timeout: float = 60) -> str:
        """The first stderr line containing ``needle``; TimeoutError (with stderr) if none
        comes within ``timeout`` s or the process ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.stderr_lines):
                if needle in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise TimeoutError(f"no {needle!r} on stderr (rc={self.proc.poll()}): {self.stderr}")

    def wait_for_frames(self, jsonl: Path, n: int, timeout: float = 60) -> int:
        """Block until frames.jsonl has at least ``n`` lines; returns the count."""
        deadline = time.monotonic() + timeout
        count = 0
        while time.monotonic() < deadline:
            if jsonl.exists():
                count = jsonl.read_text().count("\n")
                if count >= n:
                    return count
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise TimeoutError(f"{count} < {n} frames published (rc={self.proc.poll()}): "
                           f"{self.stderr}")

    def interrupt(self, signum: int = signal.SIGINT, timeout: float = 120) -> int:
        """Send ``signum``, then wait for the exit; returns the exit code."""
        self.proc.send_signal(signum)
        return self.finish(timeout)

    def finish(self, timeout: float = 120) -> int:
        """Wait for the exit; returns the exit code (stdout/stderr collected)."""
        rc = self.proc.wait(timeout)
        for t in self._readers:
            t.join(timeout=10)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def ffmpeg(*args, timeout: float = 120) -> None:
    """Run ffmpeg quietly (errors only, overwrite outputs); CalledProcessError if it fails."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
                   check=True, timeout=timeout)
