"""What machine is this and how fast can it multiply: context for every benchmark number."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import time

import numpy as np


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    import cv2
    import onnxruntime
    import torch

    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "opencv": cv2.__version__, "numpy": np.__version__},
        "gpu": None,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}",
                       "memory_gib": round(p.total_memory / 2**30, 1)}
    try:
        import tensorrt
        info["versions"]["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["versions"]["tensorrt"] = None
    try:
        import openvino
        info["versions"]["openvino"] = openvino.get_version().split("-")[0]
    except ImportError:
        info["versions"]["openvino"] = None
    return info


def matmul_peak_gflops(n: int = 1024, seconds: float = 1.0, device: str = "cpu") -> float:
    """Measured fp32 matmul throughput (GFLOP/s) on all of torch's threads: the machine's
    practical peak, against which a model's achieved GFLOP/s is a ratio."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
        sync()
    elapsed = time.perf_counter() - t0
    return 2 * n**3 * count / elapsed / 1e9


def model_gflops(model, hw: tuple[int, int]) -> float:
    """Forward FLOPs (multiply and add counted separately: 2 per MAC) of one (1,3,H,W) image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, *hw)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 1e9


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
