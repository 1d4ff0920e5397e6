"""CPU time per frame of each pipeline stage, measured one stage at a time on a real clip.

    python benchmarks/stage_cpu.py [--source CLIP] [--backend onnxruntime] [--frames 200]

The pipeline overlaps its stages on threads, so its own per-stage wall times (summary.json)
include waiting for the cores the other stages hold. Here every frame goes through the same
components as ``drivesegrt run`` (PyAV decode, Segmenter, DrivingFigures, Overlay, the
overlay.mp4 ffmpeg pipe, frames.jsonl) one stage after the other on one thread, and each
stage's CPU time is the process's CPU time (all its threads: the runtime's pool, the
decoder's threads) while it ran; the encoder is the ffmpeg child's CPU time over the frames.
That is the CPU work per frame a 2-core machine has to share out: its sum bounds the
end-to-end FPS from above (2 cores x 1000 / sum). Not a test: nothing asserts a time.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivesegrt.capture.video import VideoFileSource  # noqa: E402
from drivesegrt.infer.build import load_segmenter  # noqa: E402
from drivesegrt.publish.driving import DrivingFigures  # noqa: E402
from drivesegrt.publish.overlay import Overlay  # noqa: E402
from drivesegrt.publish.sinks import JsonlSink, VideoSink  # noqa: E402

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / \
    "udacity_lanelines_solidWhiteRight.mp4"


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Clock:
    """CPU ms of the process per named stage, accumulated over frames."""

    def __init__(self):
        self.ms: dict[str, list[float]] = {}
        self._t = time.process_time()

    def lap(self, stage: str) -> None:
        t = time.process_time()
        self.ms.setdefault(stage, []).append((t - self._t) * 1e3)
        self._t = t


def measure(source: str, backend: str, model: str | None, frames: int, threads: int) -> dict:
    seg = load_segmenter(model, backend, threads=threads)
    src = VideoFileSource(source)
    figures = DrivingFigures(seg.class_names, True, True)
    overlay = Overlay(seg.class_names, seg.palette)
    with tempfile.TemporaryDirectory() as tmp:
        before = _children_cpu()
        video = VideoSink(Path(tmp) / "overlay.mp4", src.size, src.fps)
        jsonl = JsonlSink(Path(tmp) / "frames.jsonl")
        clock = Clock()
        n = 0
        t0 = time.perf_counter()
        while n < frames:
            frame = src.read()
            clock.lap("capture")
            if frame is None:
                break
            image = frame.image
            job = seg.submit(image)
            clock.lap("preprocess+infer")
            result = job.result()
            clock.lap("postprocess")
            frame.labels = result.labels
            frame.figures = figures.measure(frame.labels, None)
            clock.lap("figures")
            frame.overlay = overlay(image, frame.labels, {"fps": 0.0, "stages_ms": {}})
            clock.lap("overlay")
            video.write(frame)
            while video.backlog():                     # the pipe write, not overlapped
                time.sleep(0)
            jsonl.write(frame)
            clock.lap("write")
            n += 1
        video.close()
        jsonl.close()
        wall = time.perf_counter() - t0
        encode_ms = (_children_cpu() - before) * 1e3 / max(1, n)
    src.close()
    seg.engine.close()
    stages = {k: round(float(np.mean(v)), 3) for k, v in clock.ms.items()}
    stages["encode (ffmpeg)"] = round(encode_ms, 3)
    total = sum(stages.values())
    return {"frames": n, "backend": backend, "stages_cpu_ms": stages,
            "cpu_ms_per_frame": round(total, 3),
            "non_engine_cpu_ms": round(total - stages["preprocess+infer"], 3),
            "serial_wall_s": round(wall, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=str(CLIP))
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--model", default=None)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    res = measure(a.source, a.backend, a.model, a.frames, a.threads)
    for stage, ms in res["stages_cpu_ms"].items():
        print(f"{stage:<20} {ms:7.2f} ms CPU/frame")
    print(f"{'total':<20} {res['cpu_ms_per_frame']:7.2f} ms CPU/frame over {res['frames']} "
          f"frames ({res['backend']}); non-engine (all but preprocess+infer) "
          f"{res['non_engine_cpu_ms']:.2f} ms")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
