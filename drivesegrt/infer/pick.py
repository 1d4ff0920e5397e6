"""Choose the engine by measurement: ``drivesegrt run --backend auto`` and ``bench --pick``.

Candidates are the ONNX model on every installed CPU runtime (ONNX Runtime, OpenVINO), plus
the int8 variants calibrated from it that sit next to it (``<stem>.*int8.onnx``, the names
``drivesegrt calibrate`` is shown with: ``.int8``, ``.cpu-int8``, ``.ov-int8``) on the same
runtimes; nothing is calibrated here. Each candidate's class map (argmax at the model's output
resolution) is compared with the reference's, ONNX Runtime on the model file itself (fp32), on
a few real frames; those that agree on at least ``MIN_AGREEMENT`` of the pixels are timed on
one frame, in turns (interleaved, so drifting machine speed weighs on all alike) for about
``seconds`` in all, and the fastest wins. The reference always passes, so there is a choice.

Why 97 %: the calibrated int8 files agree with fp32 on 98.2-98.4 % of CamVid test pixels at
the same mIoU (README, "Deployment accuracy"); a broken calibration lands far below.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..engines import load_engine
from ..preprocess import preprocess

AUTO_BACKEND = "auto"            # the --backend value that asks for a choice
CPU_RUNTIMES = ("onnxruntime", "openvino")
REFERENCE = "onnxruntime"
MIN_AGREEMENT = 0.97


@dataclass(frozen=True)
class Candidate:
    backend: str
    path: Path
    ms: float | None = None            # median engine time per frame (None: not timed)
    agreement: float | None = None     # share of pixels with the reference's class
    note: str = ""                     # why it was left out

    @property
    def passed(self) -> bool:
        return self.ms is not None and (self.agreement or 0.0) >= MIN_AGREEMENT

    def record(self) -> dict:
        """JSON-ready (bench results)."""
        return {"backend": self.backend, "model": self.path.name, "ms": self.ms,
                "agreement": self.agreement, "passed": self.passed, "note": self.note}

    def describe(self) -> str:
        what = f"{self.backend} {self.path.name}"
        if self.agreement is None:
            return f"{what}: not usable ({self.note})"
        if self.ms is None:
            return (f"{what}: agreement {100 * self.agreement:.2f} %, below "
                    f"{100 * MIN_AGREEMENT:.0f} %: not timed")
        return (f"{what}: {self.ms:.2f} ms, agreement {100 * (self.agreement or 0):.2f} %"
                + ("" if self.passed else f" (below {100 * MIN_AGREEMENT:.0f} %)"))


def sample_frames(source: str | None, n: int = 4) -> list[np.ndarray]:
    """Up to ``n`` (H, W, 3) uint8 BGR frames to compare runtimes on: the first frames of
    ``source`` when it is a file OpenCV reads (a video or an image), else ``n`` seeded
    smooth random frames (a camera or a stream is not opened twice)."""
    frames = first_frames(source, n) if source and Path(source).is_file() else []
    if frames:
        return frames
    rng = np.random.default_rng(0)
    return [cv2.resize(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), (960, 540),
                       interpolation=cv2.INTER_CUBIC) for _ in range(n)]


def first_frames(path: str | Path, n: int) -> list[np.ndarray]:
    """The first ``n`` frames OpenCV reads from ``path`` ((H, W, 3) uint8 BGR; fewer if it
    holds fewer, none if it cannot read it)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def int8_variants(model: Path) -> list[Path]:
    """Calibrated int8 files next to ``model``: ``<stem>.*int8.onnx``, name order."""
    return sorted(p for p in model.parent.glob(f"{model.stem}.*int8.onnx") if p != model)


def candidates(model: Path) -> list[tuple[str, Path]]:
    return [(b, p) for p in (model, *int8_variants(model)) for b in CPU_RUNTIMES]


def _labels(engine, batches) -> list[np.ndarray]:
    """Class ids at the model's output resolution per batch (argmax of logits, or labels)."""
    outs = [engine.infer(b) for b in batches]
    return [o[0] if o.ndim == 3 else o[0].argmax(0) for o in outs]


def _time_interleaved(runs: list, seconds: float, burst: int = 3) -> list[float]:
    """Median ms per call of each ``run()``, timed in turns (a burst each, round after round,
    about ``seconds`` for all of them together), so a machine whose speed drifts (other jobs,
    clock changes) weighs on every candidate alike."""
    for run in runs:
        run()                                         # warm-up (compilation, buffers)
    times: list[list[float]] = [[] for _ in runs]
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or min(len(t) for t in times) < 5:
        for run, ts in zip(runs, times):
            for _ in range(burst):
                t0 = time.perf_counter()
                run()
                ts.append(time.perf_counter() - t0)
    return [float(np.median(ts) * 1e3) for ts in times]


def pick(model: str | Path, frames: list[np.ndarray], threads: int = 0,
         seconds: float = 1.0) -> tuple[Candidate, list[Candidate]]:
    """Check and time every candidate for ``model`` (an ONNX file) on ``frames`` ((H, W, 3)
    uint8 BGR); returns (the choice, all candidates in the order tried). Candidates below
    ``MIN_AGREEMENT`` are not timed."""
    model = Path(model)
    if model.suffix != ".onnx":
        raise ValueError(f"--backend auto chooses among ONNX runtimes; {model} is not an "
                         f".onnx file (name the backend instead)")
    if not frames:
        raise ValueError("--backend auto needs at least one frame to compare runtimes on")
    reference, checked, engines = None, [], []
    try:
        for backend, path in candidates(model):
            options = ({"intra_op_threads" if backend == "onnxruntime" else "threads": threads}
                       if threads else {})
            try:
                engine = load_engine(backend, str(path), **options)
            except (ImportError, ValueError) as e:
                if (backend, path) == (REFERENCE, model):
                    raise
                checked.append((Candidate(backend, path, note=str(e).splitlines()[0]), None))
                continue
            engines.append(engine)
            meta = engine.spec.meta             # a variant may take another input format
            batches = [preprocess(f, meta.input_size, meta.mean, meta.std, "stretch",
                                  meta.input_format)[0] for f in frames]
            labels = _labels(engine, batches)
            if reference is None:
                reference = labels
            agree = float(np.mean([np.mean(a == b) for a, b in zip(labels, reference)]))
            ok = agree >= MIN_AGREEMENT
            run = (lambda e=engine, b=batches[0]: e.infer(b)) if ok else None
            checked.append((Candidate(backend, path, agreement=agree,
                                      note="" if ok else "disagrees with the reference"), run))
        timed = [(c, run) for c, run in checked if run is not None]
        ms = dict(zip((id(c) for c, _ in timed),
                      _time_interleaved([run for _, run in timed], seconds)))
    finally:
        for engine in engines:
            engine.close()
    results = [Candidate(c.backend, c.path, ms.get(id(c)), c.agreement, c.note)
               for c, _ in checked]
    best = min((c for c in results if c.passed), key=lambda c: c.ms)
    return best, results
