"""TensorRT: cache keys and the missing-TensorRT path run everywhere; builds and inference run
only where ``import tensorrt`` works and CUDA is present (skipped with the reason otherwise)."""
from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
from helpers import random_frames, tiny_model, tiny_onnx

from drivesegrt import cli
from drivesegrt.deploy.export import export_onnx
from drivesegrt.deploy.trt_build import (
    NOT_INSTALLED,
    BuildRecipe,
    Target,
    cache_key,
    engine_file,
    make_recipe,
    parse_shape,
)
from drivesegrt.preprocess import normalize

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
TARGET = Target("10.3.0", "NVIDIA Jetson AGX Orin", (8, 7))
RECIPE = BuildRecipe("fp16", (1, 3, 360, 480), (1, 3, 360, 480), (4, 3, 360, 480), 1024)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("trt") / "tiny.onnx")


def test_cache_key_changes_with_every_field():
    base = cache_key("a" * 64, TARGET, RECIPE)
    assert base == cache_key("a" * 64, TARGET, RECIPE) and len(base) == 16
    variants = [
        cache_key("b" * 64, TARGET, RECIPE),
        cache_key("a" * 64, Target("11.0.0", TARGET.gpu_name, (8, 7)), RECIPE),
        cache_key("a" * 64, Target("10.3.0", "NVIDIA H100", (8, 7)), RECIPE),
        cache_key("a" * 64, Target("10.3.0", TARGET.gpu_name, (9, 0)), RECIPE),
        cache_key("a" * 64, TARGET, dataclasses.replace(RECIPE, precision="fp32")),
        cache_key("a" * 64, TARGET, dataclasses.replace(RECIPE, max_shape=(8, 3, 360, 480))),
        cache_key("a" * 64, TARGET, dataclasses.replace(RECIPE, workspace_mb=2048)),
    ]
    assert len({base, *variants}) == len(variants) + 1
    path = engine_file("/x/model.onnx", "/cache", base, "fp16")
    assert path.name == f"model.fp16.{base}.engine" and str(path.parent) == "/cache"
    assert TARGET.tag == "trt10.3.0.nvidia-jetson-agx-orin.sm87"


def test_recipe_defaults_and_shapes(onnx_file):
    from drivesegrt.deploy.onnx_meta import read_meta_file

    meta = read_meta_file(onnx_file)
    r = make_recipe(meta)
    assert r.precision == "fp32" and r.min_shape == (1, 3, 64, 96) and r.max_shape[0] == 4
    assert parse_shape("2x3x360x480") == (2, 3, 360, 480)
    with pytest.raises(ValueError, match="bad shape"):
        parse_shape("2x3x360")
    with pytest.raises(ValueError, match="min <= opt <= max"):
        make_recipe(meta, min_shape=(4, 3, 64, 96), opt_shape=(1, 3, 64, 96))
    with pytest.raises(ValueError, match="precision"):
        make_recipe(meta, precision="int4")


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed: the missing-TensorRT path is moot")
def test_cli_build_without_tensorrt_is_one_line(onnx_file, capsys):
    assert cli.main(["build", "--model", str(onnx_file)]) == 2
    assert capsys.readouterr().err == f"drivesegrt: error: {NOT_INSTALLED}\n"


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed: the missing-TensorRT path is moot")
def test_engine_load_without_tensorrt(onnx_file):
    from drivesegrt.engines import load_engine

    with pytest.raises(ValueError) as e:
        load_engine("tensorrt", onnx_file, device="cuda")
    assert str(e.value) == NOT_INSTALLED


# --- needs TensorRT + CUDA -------------------------------------------------------------------

def _need_trt_and_cuda():
    pytest.importorskip("tensorrt", reason="tensorrt not importable (NVIDIA's index only)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")


@pytest.mark.tensorrt
def test_build_reuses_cache_and_rebuilds_on_change(onnx_file, tmp_path):
    _need_trt_and_cuda()
    from drivesegrt.deploy.trt_build import build_engine

    path, reused = build_engine(onnx_file, cache_dir=tmp_path)
    assert path.is_file() and not reused and path.with_suffix(".json").is_file()
    assert list(tmp_path.glob("timing.*.cache"))
    again, reused = build_engine(onnx_file, cache_dir=tmp_path)
    assert again == path and reused
    other, reused = build_engine(onnx_file, cache_dir=tmp_path, workspace_mb=512)
    assert other != path and not reused
    path.write_bytes(b"corrupt")                  # a bad cached engine is rebuilt, no crash
    rebuilt, reused = build_engine(onnx_file, cache_dir=tmp_path)
    assert rebuilt == path and not reused


@pytest.mark.tensorrt
@pytest.mark.parametrize("variant", [{}, {"uint8_input": True, "argmax": True}, {"fp16": True}])
def test_tensorrt_matches_onnxruntime(variant, tmp_path):
    _need_trt_and_cuda()
    import torch

    from drivesegrt.engines import load_engine

    model, meta = tiny_model("mobileseg")
    path = tmp_path / "m.onnx"
    new_meta = export_onnx(model, meta, path, **variant)
    frames = random_frames(2, meta.input_size)
    x = frames if variant.get("uint8_input") else normalize(frames, meta.mean, meta.std)
    ref = load_engine("onnxruntime", path).infer(x)
    with load_engine("tensorrt", path, device="cuda", cache_dir=tmp_path) as eng:
        assert eng.spec.precision == new_meta.precision
        got = eng.infer(x)                        # numpy in -> numpy out
        got_t = eng.infer(torch.from_numpy(x).cuda())   # torch in -> torch CUDA out
        assert got_t.is_cuda
        got1 = eng.infer(x[:1])                   # new shape: buffers re-sized
    assert got1.shape[0] == 1
    if new_meta.output == "labels":
        assert (got == ref).mean() >= 0.999 and got.dtype == np.int32
    else:
        tol = 1e-2 if variant.get("fp16") else 1e-3
        assert np.abs(got - ref).max() <= tol
        assert np.abs(got_t.cpu().numpy() - got).max() == 0
