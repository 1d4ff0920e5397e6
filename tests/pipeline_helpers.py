"""Helpers for the pipeline tests: a tiny random-weight checkpoint and run-dir readers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
from data_helpers import tiny_checkpoint

from drivesegrt.engines import Engine

ROOT = Path(__file__).resolve().parents[1]


def make_tiny_checkpoint(path: Path, input_size=(360, 480), seed: int = 0) -> Path:
    """A random-weight tiny MobileSeg with CamVid-11 metadata (logits at 1/4 input)."""
    return tiny_checkpoint(path, seed=seed, input_size=input_size)[0]


class SlowEngine(Engine):
    """Wraps a real engine: sleeps ``delay_s`` before each inference (an engine slower than
    the camera) and raises on call ``fail_at`` only, or on every call from ``fail_from`` on."""

    def __init__(self, inner: Engine, delay_s: float = 0.0, fail_at: int | None = None,
                 fail_from: int | None = None):
        self.inner, self.delay_s, self.calls = inner, delay_s, 0
        self.fail_at, self.fail_from = fail_at, fail_from

    @classmethod
    def load(cls, path, device="cpu", **options):
        raise NotImplementedError("wraps an engine that is already loaded")

    @property
    def spec(self):
        return self.inner.spec

    def infer(self, batch):
        self.calls += 1
        if self.calls == self.fail_at or (self.fail_from is not None
                                          and self.calls >= self.fail_from):
            raise RuntimeError("engine exploded")
        time.sleep(self.delay_s)
        return self.inner.infer(batch)


def run_cli(*args: str, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """``python -m drivesegrt ARGS`` as a real process, from this checkout."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "drivesegrt", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **popen)


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


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
