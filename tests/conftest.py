"""Shared fixtures. The repository root goes first on sys.path so tests import this checkout."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"
CAMVID = SHARED / "camvid"
VIDEOS = SHARED / "videos"
HIGHWAY_CLIP = VIDEOS / "udacity_lanelines_solidWhiteRight.mp4"
CAMVID_CLIP = VIDEOS / "camvid_0016E5_val_15fps.mp4"
BACKBONE = SHARED / "weights" / "mobilenetv1_0.25_imagenet" / "model_best.pth.tar"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED
