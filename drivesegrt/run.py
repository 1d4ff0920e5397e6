"""``drivesegrt run``: segment a source and publish overlays, masks and timings.

    drivesegrt run --source clip.mp4 --output runs/demo --save-masks
    drivesegrt run --source front=rtsp://car/front --source rear=/dev/video2 \\
                   --output runs/car --deadline-ms 150          # several cameras, DIR/<camera>/

Reads config (``--config FILE``, else the defaults in config.RunConfig, mirrored in
config.yaml), applies CLI flags on top, opens the source, loads the engine, wires the
pipeline and writes ``summary.json``. Ctrl-C / SIGTERM drain and finalize, exit code 130. A
camera/stream that stays away past ``--reconnect-timeout`` ends the run like the end of a file
(exit 0). An output that cannot be written mid-run (disk full, run directory removed) or an
engine failing frame after frame stops the run: outputs are finalized, summary.json records the
error, one line on stderr, exit code 1. The run directory is claimed by one run at a time and
must be empty unless ``--overwrite`` (publish/rundir.py).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from .assemble import (
    load_segmenter,
    make_continuity,
    make_figures,
    make_sinks,
    model_info,
    output_dir,
    write_summary,
)
from .config import RunConfig, choices, load_dataclass, to_dict
from .run_cameras import deadline_line, execute_cameras, print_cameras


def add_arguments(p) -> None:
    p.add_argument("--source", action="append", metavar="[NAME=]SRC",
                   help="video file, image folder/glob, camera index (0) or /dev/videoN, "
                   "rtsp/http/udp URL, or synthetic: (default); repeat for several cameras at "
                   "once (NAME= names one; default cam0, cam1, ...): outputs go to DIR/NAME/")
    p.add_argument("--sources", dest="sources_file", metavar="FILE",
                   help="YAML list of cameras: name, uri and per-camera options "
                   "(reconnect_timeout, pace, required); instead of --source")
    p.add_argument("--allow-missing", action="store_true", default=None,
                   help="several cameras: run without a camera that does not open at start "
                   "(default: that is bad input, exit 2)")
    p.add_argument("--deadline-ms", type=float, metavar="D",
                   help="latency budget: while the frame age p95 over the last second exceeds "
                   "D ms, degrade in steps (point filter, overlay every other frame, skip "
                   "paced frames, smaller input), restore when there is slack again")
    p.add_argument("--output", help="run directory (default: runs/<timestamp>/); it must be "
                   "empty or new, unless --overwrite")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="reuse a run directory: remove a previous run's outputs (overlay.mp4, "
                   "overlays/, masks/, frames.jsonl, summary.json) and nothing else")
    add_pipeline_arguments(p)
    p.add_argument("--show", action="store_true", default=None,
                   help="show the overlay in a window (needs a display)")
    p.add_argument("--view", metavar="URL", help="serve a live browser view, e.g. "
                   "http://127.0.0.1:8080 (port 0 = any free port)")
    p.add_argument("--view-token", metavar="TOKEN",
                   help="the live view answers only requests carrying it (?token=TOKEN or "
                   "'Authorization: Bearer TOKEN'); use it when --view listens beyond loopback")
    p.add_argument("--view-host", action="append", metavar="NAME",
                   help="a host name browsers may use to reach the live view, besides loopback "
                   "names and IP addresses (repeatable; e.g. the machine's DNS name)")
    p.add_argument("--reconnect-timeout", type=float, metavar="S",
                   help="camera/stream: end the run after S seconds without the source "
                   "(default: keep reconnecting)")


def add_pipeline_arguments(p) -> None:
    """The model, engine, config and output-content flags (``run`` and ``batch``)."""
    model, pre, post = RunConfig.model, RunConfig.preprocess, RunConfig.postprocess
    p.add_argument("--model", metavar="NAME|PATH", help="a bundled model (camvid) or a model "
                   "file: .onnx for onnxruntime/openvino/tensorrt, .pt for torch (default: the "
                   "bundled camvid model)")
    p.add_argument("--backend", choices=choices(model, "backend"),
                   help=f"inference runtime (default: {model.backend})")
    p.add_argument("--device", metavar="{cpu,cuda,cuda:N}", help="default: cpu")
    p.add_argument("--threads", type=int, metavar="N",
                   help="engine threads (torch, ONNX Runtime, OpenVINO); default: the runtime's")
    p.add_argument("--input-size", metavar="HxW", type=_hw,
                   help="model input size override (fully convolutional models), e.g. 512x1024")
    p.add_argument("--config", help="YAML run config (see config.yaml); flags override it")
    p.add_argument("--max-frames", type=int, help="stop after N frames")
    p.add_argument("--filter", choices=choices(post, "filter"),
                   help=f"upsampling of the model output (default: {post.filter})")
    p.add_argument("--resize", choices=choices(pre, "resize"),
                   help=f"fit frames to the model input (default: {pre.resize})")
    p.add_argument("--remap", choices=choices(post, "remap"),
                   help="reduced label set for outputs (default: the model's own)")
    p.add_argument("--alpha", type=float, help="overlay opacity 0..1 (default: "
                   f"{RunConfig.overlay.alpha})")
    p.add_argument("--no-legend", action="store_true", help="no class legend on the overlay")
    p.add_argument("--no-hud", action="store_true", help="no FPS/latency text on the overlay")
    p.add_argument("--codec", choices=choices(RunConfig.sinks, "video_codec"),
                   help="overlay.mp4 encoder (default: auto = H.264 through ffmpeg if present)")
    p.add_argument("--save-masks", action="store_true", default=None,
                   help="write masks/*.png (uint8 class ids at source resolution)")
    p.add_argument("--no-video", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--temporal", metavar="SPEC", help="smooth class probabilities over time: "
                   "none | ema:ALPHA | ema:ALPHA:flow (motion-compensated), ALPHA = weight of "
                   "the newest frame (default: none)")
    p.add_argument("--save-confidence", action="store_true", default=None,
                   help="write confidence/*.png (top-class probability x 255) and its mean and "
                   "low share in frames.jsonl")
    p.add_argument("--figures", metavar="LIST", type=_figures,
                   help="driving figures in frames.jsonl: comma list of coverage, drivable, or "
                   "none (default: coverage,drivable)")
    p.add_argument("--roi", metavar="NAME=x0,y0,x1,y1", action="append",
                   help="class shares inside a region (fractions of the frame) in frames.jsonl; "
                   "repeatable")
    p.add_argument("--draw-drivable", action="store_true", default=None,
                   help="outline the drivable area on the overlay")


def _hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW, e.g. 360x480") from None
    return h, w


_FIGURES = ("coverage", "drivable")


def _figures(text: str) -> dict[str, bool]:
    """``--figures coverage,drivable`` | ``none`` -> {figure: on}."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return dict.fromkeys(_FIGURES, False)
    bad = [n for n in names if n not in _FIGURES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of "
                                         f"{', '.join(_FIGURES)}, or none")
    return {n: n in names for n in _FIGURES}


def load_run_config(args) -> RunConfig:
    source, cameras = _sources(args.source, args.sources_file)
    overrides = {
        "source": source, "cameras": cameras, "allow_missing": args.allow_missing,
        "deadline.ms": args.deadline_ms,
        "output": args.output, "overwrite": args.overwrite,
        "max_frames": args.max_frames,
        "model.path": args.model, "model.backend": args.backend, "model.device": args.device,
        "model.threads": args.threads, "model.input_size": args.input_size,
        "preprocess.resize": args.resize, "postprocess.filter": args.filter,
        "postprocess.remap": args.remap, "overlay.alpha": args.alpha,
        "overlay.legend": False if args.no_legend else None,
        "overlay.hud": False if args.no_hud else None,
        "sinks.video_codec": args.codec,
        "sinks.masks": args.save_masks, "sinks.show": args.show,
        "sinks.video": False if args.no_video else None, "sinks.view": args.view,
        "sinks.view_token": args.view_token,
        "sinks.view_hosts": tuple(args.view_host) if args.view_host else None,
        "stream.reconnect_timeout": args.reconnect_timeout,
        "temporal.smoothing": args.temporal, "confidence.save": args.save_confidence,
        "figures.roi": args.roi, "overlay.draw_drivable": args.draw_drivable,
        **{f"figures.{k}": v for k, v in (args.figures or {}).items()},
    }
    return load_dataclass(RunConfig, args.config, overrides)


def _sources(texts, sources_file) -> tuple[str | None, list[dict] | None]:
    """``--source`` texts (one, several, or a str from the Python API) and ``--sources FILE``
    -> (the one source, or None; the camera entries of several, or None)."""
    from .config import camera_entries, file_entries, read_yaml, split_name

    texts = [texts] if isinstance(texts, str) else list(texts or [])
    if sources_file is not None:
        if texts:
            raise ValueError("--sources FILE and --source: give the cameras one way")
        return None, file_entries(read_yaml(sources_file, list), sources_file)
    if len(texts) > 1:
        return None, camera_entries(texts)
    if not texts:
        return None, None
    name, uri = split_name(texts[0])
    # One camera keeps today's layout (DIR/overlay.mp4); its name only needs to be dropped,
    # unless the whole text is a file that exists.
    return (texts[0] if name is None or Path(texts[0]).exists() else uri), None


class _SignalStop:
    """SIGINT/SIGTERM -> drain and finalize, exit 130. Installed before anything is opened or
    loaded, so a signal during start-up is not the default SIGTERM death (exit 143): the
    pipeline is then stopped before its first frame and the (empty) outputs are finalized. A
    second signal aborts (during start-up: at once, exit 130)."""

    def __init__(self):
        self.pipeline = None
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def attach(self, pipeline) -> None:
        self.pipeline = pipeline
        if self.signum is not None:
            pipeline.stop()

    def _handle(self, signum, _frame):
        again = self.signum is not None
        self.signum = signum
        name = signal.Signals(signum).name
        if self.pipeline is None:
            if again:
                raise KeyboardInterrupt
            print(f"\ndrivesegrt: {name} during start-up: stopping before the first frame "
                  f"(again to abort)", file=sys.stderr)
            return
        if again:
            self.pipeline.abort()
        print(f"\ndrivesegrt: {name}: draining and finalizing outputs (again to abort)",
              file=sys.stderr)
        self.pipeline.stop()

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def main(args) -> int:
    """``drivesegrt run``: the summary table on stdout, the exit code of the README."""
    from .capture import quiet_decoder_logs

    with _SignalStop() as signals:            # first: even the config may block (a FIFO)
        cfg = load_run_config(args)
        if not args.verbose:
            quiet_decoder_logs()
        summary, code = execute(cfg, signals=signals)
    several = "cameras" in summary
    try:
        if several:
            print_cameras(summary)
        else:
            print_summary(summary)
        sys.stdout.flush()
    except OSError as e:           # stdout is a full disk or a closed pipe: outputs are done
        _stdout_to_devnull()
        print(f"drivesegrt: error: cannot write the summary to stdout ({e.strerror or e}); "
              f"outputs are finalized in {summary['output_dir']}", file=sys.stderr)
        code = code or 1           # work was done; an interrupted run stays 130
    for cam in summary["cameras"].values() if several else [summary]:
        if cam["frames_corrupt"]:
            print(f"drivesegrt: warning: {cam['source']['spec']}: {cam['frames_corrupt']} "
                  f"corrupt frame(s) could not be decoded and were skipped (frames_corrupt in "
                  f"summary.json)", file=sys.stderr)
    if summary["error"] is not None:
        video = {} if several else summary["outputs"].get("video", {})
        kept = (f"; overlay.mp4 keeps its first {video['frames_kept']} frames"
                if "frames_kept" in video else "")
        print(f"drivesegrt: error: {summary['error']} (outputs written so far are finalized in "
              f"{summary['output_dir']}{kept})", file=sys.stderr)
    return code


def _stdout_to_devnull() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush of what is still buffered
    cannot fail again (it would print a traceback-like report and exit 120)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def run(source: str | None = None, output: str | None = None, config: str | None = None,
        **options) -> dict:
    """Python form of ``drivesegrt run``: the same outputs in ``output``; returns summary.json's
    dict (its ``error`` says what stopped a run early). ``options`` are the CLI's long flags
    with underscores (``model="camvid"``, ``backend="openvino"``, ``max_frames=100``,
    ``save_masks=True``, ``overwrite=True``, ...). Bad input raises ValueError/FileNotFoundError
    naming it."""
    parser = argparse.ArgumentParser(prog="drivesegrt.run")
    add_arguments(parser)
    args = parser.parse_args([])
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise ValueError(f"unknown run option {unknown[0]!r}; allowed: "
                         f"{', '.join(sorted(vars(args)))}")
    vars(args).update(options, source=source, output=output, config=config)
    summary, _ = execute(load_run_config(args), progress=False)
    return summary


def execute(cfg: RunConfig, progress: bool = True, signals: _SignalStop | None = None,
            segmenter=None) -> tuple[dict, int]:
    """Run ``cfg`` to the end: (summary.json's dict, exit code 0 | 1 | 130). Ctrl-C/SIGTERM
    drain and finalize (``signals``: handlers already installed by the caller); bad input
    raises before any frame is processed; a failure after that is exit code 1, never an
    exception. ``segmenter``: one already loaded for ``cfg.model`` (``load_segmenter(cfg)``),
    used and left open (a batch worker runs many drives on one engine); None loads and closes
    one."""
    if signals is None:
        with _SignalStop() as own:
            return execute(cfg, progress, own, segmenter)
    if cfg.cameras or cfg.deadline.ms is not None:
        return execute_cameras(cfg, signals, segmenter)
    from .capture import open_source
    from .capture.reconnect import Backoff
    from .pipeline import InferenceError, Pipeline
    from .publish.overlay import Overlay
    from .publish.rundir import RunDir, describe_holder
    from .publish.sinks import OutputError

    source = open_source(cfg.source, cfg.stream.reconnect_timeout,
                         Backoff(cfg.stream.backoff_initial, cfg.stream.backoff_max))
    seg = rundir = None
    try:
        if segmenter is None:
            seg, model_path = load_segmenter(cfg)
        else:
            from .infer.build import model_path as path_of

            seg, model_path = segmenter, path_of(cfg.model.path or None, cfg.model.backend)
            seg.reset()          # the first frame does not follow the last run's last frame
        figures = make_figures(cfg, seg)
        rundir = RunDir.claim(output_dir(cfg.output), cfg.overwrite)
        out = rundir.path
        if rundir.stale_holder:
            print(f"drivesegrt: taking over {out} from a run that is gone "
                  f"({describe_holder(rundir.stale_holder)})", file=sys.stderr)
        sinks, jsonl = make_sinks(cfg, out, source)
        overlay = Overlay(seg.class_names, seg.palette, cfg.overlay.alpha, cfg.overlay.legend,
                          cfg.overlay.hud)
        bar = _progress(source, cfg.max_frames) if progress else None
        pipeline = Pipeline(source, seg, overlay, sinks, jsonl, cfg.pipeline.queue_size,
                            cfg.max_frames, on_frame=_ticker(bar),
                            figures=figures, continuity=make_continuity(cfg, seg, source))
        for sink in sinks:
            if sink.name == "view":
                sink.set_counters(pipeline.counters)
        signals.attach(pipeline)             # stops it at once after a signal in start-up
        error = None
        try:
            pipeline.run()
        except (OutputError, InferenceError) as e:     # outputs are finalized by now
            error = e
        finally:
            if bar is not None:              # (a tqdm without a total has no truth value)
                bar.close()
        if rundir.gone():                    # the root cause of any write error that followed
            error = OutputError(f"run directory {out} was removed during the run; its "
                                f"outputs are lost")
        summary = {**pipeline.summary(),
                   "source": source.describe(),
                   "model": model_info(seg, model_path),
                   "outputs": {s.name: s.describe() for s in sinks},
                   "output_dir": str(out),
                   "error": None if error is None else str(error),
                   "config": to_dict(cfg)}
        error = write_summary(rundir, summary, error)
    finally:
        if rundir is not None:
            rundir.release()
        source.close()
        if seg is not None and segmenter is None:      # only the one loaded here
            seg.close()
            seg.engine.close()
    if error is not None:
        return summary, 1
    return summary, 130 if signals.signum is not None else 0


def _ticker(bar):
    """The pipeline's per-frame callback for ``bar`` (None: no bar): one step per frame."""
    return None if bar is None else (lambda _frame: bar.update(1))


def _progress(source, max_frames):
    """A progress bar for recorded sources; without a total (a count and a rate) when the
    length is unknown (raw streams, ``synthetic:?frames=0``)."""
    if source.live:
        return None
    from tqdm import tqdm

    total = source.frame_count
    if max_frames is not None:
        total = min(total, max_frames) if total else max_frames
    return tqdm(total=total, unit="frame", desc="drivesegrt run", disable=None, leave=False)


def print_summary(s: dict) -> None:
    """The end-of-run table: counts, FPS, per-stage and latency percentiles (ms)."""
    src = s["source"]
    print(f"source   {src['spec']} ({src['kind']}, {src['width']}x{src['height']} @ {src['fps']:g} fps)")
    m = s["model"]
    print(f"model    {m['path']} ({m['arch']}, {m['backend']}/{m['device']}, input "
          f"{m['input_size'][0]}x{m['input_size'][1]}, filter {m['filter']}, {m['resize']})")
    print(f"frames   in {s['frames_in']}  out {s['frames_out']}  dropped {s['frames_dropped']}"
          f"  failed {s['frames_failed']}  corrupt {s['frames_corrupt']}"
          f"  reconnects {s['reconnects']}"
          + (f" (outage {s['outage_s']:.1f} s)" if s["outage_s"] else "")
          + ("  (interrupted)" if s["interrupted"] else ""))
    if s["end_reason"]:
        print(f"ended    {s['end_reason']}")
    print(f"speed    {s['fps']:.1f} FPS end-to-end over {s['wall_s']:.2f} s")
    print(f"{'stage (ms)':<14}{'p50':>9}{'p95':>9}{'p99':>9}")
    rows = list(s["stages_ms"].items()) + [("latency", s["latency_ms"]),
                                            ("frame age", s["frame_age_ms"])]
    for name, p in rows:
        print(f"{name:<14}{p['p50']:>9.2f}{p['p95']:>9.2f}{p['p99']:>9.2f}")
    if "deadline" in s:
        print(deadline_line(s["deadline"]))
    for name, o in s["outputs"].items():
        extra = f" [{o['encoder']}]" if "encoder" in o else ""
        print(f"output   {name}: {o.get('url') or o['path']}{extra}")
    print(f"output   summary: {Path(s['output_dir']) / 'summary.json'}")


