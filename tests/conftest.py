"""Shared fixtures. Plain helpers (data paths, tiny models, data makers, CLI runners) are in
helpers.py. The repository root goes first on sys.path so tests import this checkout."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import SHARED, tiny_checkpoint  # noqa: E402  (imports drivesegrt: path set first)

from drivesegrt.engines import load_engine  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    """The torch engine (one thread) of a tiny random-weight MobileSeg with a 96x128 input."""
    torch.set_num_threads(1)
    engine = load_engine("torch", tiny_checkpoint(tmp_path_factory.mktemp("engine") / "tiny.pt",
                                                  input_size=(96, 128)))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def one_thread_config(tmp_path_factory) -> Path:
    """A run config with one engine thread: the test machine's 2 cores are shared by the
    pipeline threads, the encoder and (live tests) ffmpeg."""
    path = tmp_path_factory.mktemp("cfg") / "run.yaml"
    path.write_text("model:\n  threads: 1\n")
    return path
