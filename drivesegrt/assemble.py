"""A run's parts built from its config: the run directory's path, the segmenter (``--backend
auto`` included), the sinks and live view, driving figures, continuity, summary.json. Shared by
the one-camera run (run.py), the several-camera run (run_cameras.py) and batch workers."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .config import RunConfig
from .infer.pick import AUTO_BACKEND


def output_dir(output: str | None) -> Path:
    """The run directory: ``output``, or a new runs/<timestamp>[-N]/."""
    if output:
        return Path(output)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / stamp
    n = 1
    while out.exists():
        out = Path("runs") / f"{stamp}-{n}"
        n += 1
    return out


def load_segmenter(cfg: RunConfig):
    """The run's Segmenter (warmed up) and the model file it loaded."""
    from .infer.build import load_segmenter as load
    from .infer.build import model_path

    m = cfg.model
    backend, path = m.backend, m.path or None
    if backend == AUTO_BACKEND:
        backend, path = choose_backend(cfg)
    seg = load(path, backend, m.device, filter_mode=cfg.postprocess.filter,
               resize=cfg.preprocess.resize, remap=cfg.postprocess.remap,
               input_size=m.input_size, overlay_alpha=cfg.overlay.alpha, threads=m.threads,
               fp16=m.fp16, cuda_graphs=m.cuda_graphs, temporal=cfg.temporal.smoothing,
               scene_cut=cfg.temporal.scene_cut, confidence=cfg.confidence.wanted)
    return seg, model_path(path, backend)


def choose_backend(cfg: RunConfig) -> tuple[str, str]:
    """``--backend auto``: (backend, model file) measured fastest among those that agree with
    ONNX Runtime on the model (infer/pick.py), on the source's first frames when it is a file;
    what was tried and chosen goes to stderr."""
    from .infer.build import model_path
    from .infer.pick import pick, sample_frames

    if cfg.model.device != "cpu":
        raise ValueError(f"--backend auto chooses among CPU runtimes; name the backend for "
                         f"device {cfg.model.device!r}")
    choice, tried = pick(model_path(cfg.model.path or None, "onnxruntime"),
                         sample_frames(cfg.source), cfg.model.threads)
    for c in tried:
        print(f"drivesegrt: backend auto: {c.describe()}", file=sys.stderr)
    print(f"drivesegrt: backend auto: chose {choice.backend} {choice.path}", file=sys.stderr)
    return choice.backend, str(choice.path)


def model_info(seg, model_path) -> dict:
    """summary.json's ``model``: the file, runtime, input size, classes, filter."""
    return {"path": str(model_path), "backend": seg.engine.spec.backend,
            "device": seg.engine.spec.device, "arch": seg.meta.arch,
            "precision": seg.engine.spec.precision, "input_size": list(seg.input_size),
            "classes": list(seg.class_names), "filter": seg.filter_mode, "resize": seg.resize,
            "temporal": None if seg.temporal is None else str(seg.temporal)}


def make_view(cfg: RunConfig):
    """The run's live view (``sinks.view``), its address (and any exposure warning) printed."""
    from .publish.view import ViewSink

    view = ViewSink(cfg.sinks.view, cfg.sinks.view_fps, token=cfg.sinks.view_token,
                    hosts=cfg.sinks.view_hosts)
    print(f"drivesegrt: live view at {view.url}"
          + (" (token required)" if cfg.sinks.view_token else ""), file=sys.stderr, flush=True)
    if view.exposure_warning:
        print(f"drivesegrt: warning: {view.exposure_warning}", file=sys.stderr, flush=True)
    return view


def make_sinks(cfg: RunConfig, out: Path, source, camera: str | None = None):
    """The run's sinks into ``out`` for ``source`` and its frames.jsonl sink (None if off);
    ``camera``: its name when one of several (names its window)."""
    from .publish.sinks import (
        ConfidenceSink,
        ImageSink,
        JsonlSink,
        MaskSink,
        VideoSink,
        WindowSink,
    )

    sinks = []
    if cfg.sinks.view:        # first: a busy port fails before any writer process starts
        sinks.append(make_view(cfg))
    depth = cfg.pipeline.writer_queue
    if source.kind == "images":
        if cfg.sinks.images:
            sinks.append(ImageSink(out / "overlays", depth))
    elif cfg.sinks.video:
        sinks.append(VideoSink(out / "overlay.mp4", source.size, source.fps,
                               cfg.sinks.video_codec, cfg.sinks.video_preset,
                               cfg.sinks.video_crf, depth))
    if cfg.sinks.masks:
        sinks.append(MaskSink(out / "masks", depth))
    if cfg.confidence.save:
        sinks.append(ConfidenceSink(out / "confidence", depth))
    if cfg.sinks.show:
        reason = WindowSink.unavailable_reason()
        if reason:
            print(f"drivesegrt: warning: --show ignored: {reason}", file=sys.stderr)
        else:
            sinks.append(WindowSink(f"{WindowSink.TITLE}: {camera}" if camera else
                                    WindowSink.TITLE))
    jsonl = JsonlSink(out / "frames.jsonl") if cfg.sinks.jsonl else None
    return sinks, jsonl


def make_figures(cfg: RunConfig, seg):
    """The run's DrivingFigures, or None when no figure is asked for."""
    from .publish.driving import DrivingFigures

    f = cfg.figures
    if not (f.wanted or cfg.confidence.wanted):
        return None
    return DrivingFigures(seg.class_names, f.coverage, f.drivable, f.drivable_classes,
                          f.center_band, f.polygon_tolerance, f.regions(),
                          cfg.confidence.low_threshold, cfg.overlay.draw_drivable)


def make_continuity(cfg: RunConfig, seg, source):
    """Where the source has gaps, for ``seg``'s temporal smoothing (None without it)."""
    from .infer.temporal import Continuity

    if seg.temporal is None:
        return None
    return Continuity(source.fps, cfg.temporal.max_gap_s)


def write_summary(rundir, summary: dict, error: BaseException | None):
    """summary.json into ``rundir`` (unless it is gone); the run's error afterwards: ``error``,
    or an OutputError when even summary.json cannot be written (then in ``summary`` too)."""
    from .publish.sinks import OutputError

    if not rundir.gone():
        try:
            rundir.write_summary(summary)
        except OSError as e:
            error = error or OutputError(f"cannot write {e.filename}: {e.strerror or e}")
            summary["error"] = str(error)
    return error
