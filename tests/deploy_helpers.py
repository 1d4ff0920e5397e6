"""Helpers shared by the deployment tests (export, onnxruntime, quantize, tensorrt)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drivesegrt.labels import CAMVID11
from drivesegrt.meta import ModelMeta
from drivesegrt.models import TINY_KWARGS, available_models, build_model

TINY_SIZE = (64, 96)   # (H, W): divisible by 32, small enough for 2 shared cores
CAMVID_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid" / "test"


def zoo_names() -> list[str]:
    return available_models()


def tiny_model(name: str, input_size=TINY_SIZE, seed: int = 0):
    """(model in eval mode, ModelMeta) of a tiny random-weight zoo model."""
    torch.manual_seed(seed)
    kwargs = TINY_KWARGS.get(name, {})
    model = build_model(name, CAMVID11.num_classes, **kwargs)
    _randomize_norm_stats(model)
    meta = ModelMeta.for_label_set(name, CAMVID11, arch_kwargs=kwargs, input_size=input_size)
    return model.eval(), meta


def _randomize_norm_stats(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics so folding them in the export is actually exercised."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def random_frames(n: int, size=TINY_SIZE, seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8 BGR noise frames."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size[0], size[1], 3), dtype=np.uint8)


def camvid_images(n: int) -> list[Path]:
    if not CAMVID_TEST.is_dir():
        pytest.skip(f"CamVid test images not found at {CAMVID_TEST}")
    return sorted(CAMVID_TEST.glob("*.png"))[:n]


def tiny_onnx(path: Path, name: str = "mobileseg", **export_options) -> Path:
    """Export the tiny random-weight ``name`` to ``path`` (export_onnx options) and return it."""
    from drivesegrt.deploy.export import export_onnx

    model, meta = tiny_model(name)
    export_onnx(model, meta, path, **export_options)
    return path
