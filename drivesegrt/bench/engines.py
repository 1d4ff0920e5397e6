"""Engine-only timing: one model on each runtime available here, per resolution and batch.

Runtimes: ``torch`` (eager), ``torch-compile`` (torch.compile / inductor), ``onnxruntime``
(fp32), ``onnxruntime-int8`` (Q/DQ from ``drivesegrt calibrate``, symmetric: the TensorRT recipe),
``onnxruntime-uint8`` (``calibrate --activations uint8``: the CPU recipe), ``openvino``,
``openvino-int8`` and ``openvino-uint8`` (the same ONNX files on OpenVINO's CPU plugin; its
uint8 file quantizes every convolution, ``--narrow-float 0``),
``opencv-dnn`` (OpenCV's DNN module on the same ONNX, a peer runtime) and ``tensorrt`` when it
is installed.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from ..engines import load_engine
from ..infer.build import engine_options

RUNTIMES = ("torch", "torch-compile", "onnxruntime", "onnxruntime-int8", "onnxruntime-uint8",
            "openvino", "openvino-int8", "openvino-uint8", "opencv-dnn", "tensorrt")


class Unavailable(Exception):
    """This runtime cannot run here; the message says why (recorded in the results)."""


def _stats(times_ms: list[float]) -> dict:
    t = np.array(times_ms)
    return {"iters": len(t), "p50": float(np.percentile(t, 50)),
            "p95": float(np.percentile(t, 95)), "p99": float(np.percentile(t, 99)),
            "mean": float(t.mean())}


class Artifacts:
    """ONNX files derived from one checkpoint, made once per run in ``workdir``."""

    def __init__(self, checkpoint: str, workdir: Path, calib_data: str | None):
        self.checkpoint = checkpoint
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.calib_data = calib_data
        self._onnx: dict[str, Path] = {}
        self._int8: dict[str, Path] = {}
        self._model = None                   # (module, meta), loaded on first use

    def onnx(self, uint8_input: bool = False, hw: tuple[int, int] | None = None) -> Path:
        """fp32 export of the checkpoint: float NCHW input with dynamic H/W (engine-only rows;
        a model that exports at a fixed size, ``models.FIXED_SIZE_EXPORT``, gets one file per
        ``hw``), or with normalization in the graph at the model's input size
        (``uint8_input``, what the end-to-end runs use, like the bundled model)."""
        from ..deploy.export import export_onnx
        from ..models import FIXED_SIZE_EXPORT
        from ..models.checkpoint import load_model

        if self._model is None:
            self._model = load_model(self.checkpoint)
        model, meta = self._model
        per_size = not uint8_input and hw is not None and meta.arch in FIXED_SIZE_EXPORT
        key = ("u8" if uint8_input else "float") + (f".{hw[0]}x{hw[1]}" if per_size else "")
        if key not in self._onnx:
            path = self.workdir / f"model.{key}.onnx"
            if per_size:
                export_onnx(model, dataclasses.replace(meta, input_size=tuple(hw)), path)
            else:
                export_onnx(model, meta, path, dynamic_hw=not uint8_input,
                            uint8_input=uint8_input)
            self._onnx[key] = path
        return self._onnx[key]

    def int8(self, activations: str = "int8", narrow_float: int | None = None,
             hw: tuple[int, int] | None = None) -> Path:
        """``calibrate --activations A [--narrow-float N]`` of the fp32 export (16 images)."""
        fp32 = self.onnx(hw=hw)
        key = (f"{activations}{'' if narrow_float is None else f'-narrow{narrow_float}'}"
               f"{fp32.stem.removeprefix('model.float')}")
        if key not in self._int8:
            if not self.calib_data:
                raise Unavailable("no calibration data (--calib-data)")
            from ..deploy.quantize import calibration_images, quantize_int8

            path = self.workdir / f"model.{key}.onnx"
            quantize_int8(fp32, path, calibration_images(self.calib_data, num_images=16),
                          activations=activations, narrow_float=narrow_float)
            self._int8[key] = path
        return self._int8[key]


def make_runner(runtime: str, art: Artifacts, hw: tuple[int, int], batch: int, threads: int):
    """A zero-argument callable running one batch of (batch, 3, h, w) float input.

    Every runtime of drivesegrt is loaded through ``load_engine`` with the options ``run``
    gives it (``infer.build.engine_options``), so the table times the code users get.
    ``opencv-dnn`` is the one peer runtime: OpenCV's DNN module, not a drivesegrt backend,
    timed on the same ONNX file for comparison."""
    h, w = hw
    x = np.random.default_rng(0).standard_normal((batch, 3, h, w)).astype(np.float32)
    if runtime == "opencv-dnn":
        return _opencv_runner(art.onnx(hw=hw), x)
    backend = runtime.split("-")[0]          # onnxruntime-int8 -> onnxruntime
    options = engine_options(backend, "cpu", threads)
    if runtime in ("torch", "torch-compile"):
        path = art.checkpoint
        options["compile"] = runtime == "torch-compile"
    elif runtime == "tensorrt":
        path = art.onnx(hw=hw)
    else:
        precision = runtime.partition("-")[2]
        # uint8 for OpenVINO quantizes every convolution: its int8 kernels are fast on narrow
        # layers too, where ORT's are not (ORT's recipe keeps those in fp32)
        narrow = 0 if runtime == "openvino-uint8" else None
        path = art.int8(precision, narrow, hw) if precision else art.onnx(hw=hw)
    if backend == "tensorrt":
        return _tensorrt_runner(path, x)
    try:
        engine = load_engine(backend, str(path), device="cpu", **options)
        engine.infer(x)                           # compile / warm up for this shape
    except (ImportError, RuntimeError) as e:
        raise Unavailable(f"{runtime}: {(str(e).splitlines() or [type(e).__name__])[0]}") \
            from None
    except ValueError as e:
        if "not installed" in str(e):
            raise Unavailable(str(e)) from None
        raise
    return lambda: engine.infer(x)


def _opencv_runner(path: Path, x: np.ndarray):
    import cv2

    try:
        net = cv2.dnn.readNetFromONNX(str(path))
        net.setInput(x)
        net.forward()
    except cv2.error as e:
        raise Unavailable(f"OpenCV DNN cannot run this ONNX: "
                          f"{str(e).strip().splitlines()[-1][:160]}") from None

    def run():
        net.setInput(x)
        net.forward()
    return run


def _tensorrt_runner(path: Path, x: np.ndarray):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise Unavailable("tensorrt is not installed") from None
    import torch

    if not torch.cuda.is_available():
        raise Unavailable("no CUDA device")
    engine = load_engine("tensorrt", str(path), device="cuda")
    xt = torch.from_numpy(x).cuda()

    def run():
        engine.infer(xt)
        torch.cuda.synchronize()
    return run


def time_interleaved(fns: dict, min_seconds: float, burst: int = 5, warmup: int = 3,
                     min_bursts: int = 4) -> dict:
    """Time several callables in round robin (``burst`` calls of each in turn) until each has
    had about ``min_seconds``; returns ``{name: {iters, p50, p95, p99, mean}}`` in ms.

    Interleaving makes their ratios robust on a machine whose speed drifts: a slow minute
    slows every runtime alike instead of whichever happened to run then."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    spent = dict.fromkeys(fns, 0.0)
    rounds = 0
    while rounds < min_bursts or min(spent.values()) < min_seconds:
        for name, fn in fns.items():
            for _ in range(burst):
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                times[name].append(dt * 1000)
                spent[name] += dt
        rounds += 1
        if rounds > 10_000 or max(spent.values()) > 20 * max(min_seconds, 1.0):
            break
    return {name: _stats(ts) for name, ts in times.items()}


def bench_engines(art: Artifacts, runtimes, resolutions, batches, threads: int, gflops_fn,
                  peak_gflops: float, min_seconds: float, log=print) -> list[dict]:
    """One row per (runtime, resolution, batch): latency percentiles, FPS, GFLOP/s and the
    speed-up over ONNX Runtime fp32 (``vs_onnxruntime``); int8 rows also over their own runtime's
fp32 (``vs_own_fp32``: openvino-uint8 over openvino). At each resolution and batch the
    runtimes are timed interleaved (``time_interleaved``)."""
    rows = {}
    for hw in resolutions:
        gflops = gflops_fn(hw)
        for batch in batches:
            runners = {}
            for runtime in runtimes:
                row = {"runtime": runtime, "resolution": f"{hw[0]}x{hw[1]}", "batch": batch,
                       "gflops_per_image": round(gflops, 3)}
                rows[runtime, hw, batch] = row
                try:
                    runners[runtime] = make_runner(runtime, art, hw, batch, threads)
                except Unavailable as e:
                    row["skipped"] = str(e)
                    log(f"  {runtime:<17} {row['resolution']:>9} b{batch}: skipped ({e})")
            stats = time_interleaved(runners, min_seconds) if runners else {}
            for runtime, st in stats.items():
                row = rows[runtime, hw, batch]
                fps = batch * 1000.0 / st["p50"]
                row.update(ms=st, fps=fps, achieved_gflops=gflops * fps,
                           efficiency=gflops * fps / peak_gflops if peak_gflops else None)
                if "onnxruntime" in stats:     # timed alongside, so the ratio is fair
                    row["vs_onnxruntime"] = stats["onnxruntime"]["p50"] / st["p50"]
                fp32 = runtime.partition("-")[0]   # openvino-uint8 -> openvino
                if fp32 != runtime and fp32 in stats:
                    row["vs_own_fp32"] = stats[fp32]["p50"] / st["p50"]
                log(f"  {runtime:<17} {row['resolution']:>9} b{batch}: p50 {st['p50']:.2f} ms"
                    f"  {fps:.1f} img/s  {gflops * fps:.1f} GFLOP/s")
    # rows grouped by runtime, as before
    return [rows[r, hw, b] for r in runtimes for hw in resolutions for b in batches]
