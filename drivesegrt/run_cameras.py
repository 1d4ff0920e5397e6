"""Several cameras in one run (``--source NAME=SRC`` repeated, ``--sources FILE``), or one
source with a latency budget (``--deadline-ms``): every camera opened, one engine called with
batches, a lane per camera (multicam.py), outputs in ``DIR/<camera>/``, one summary.json."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from .assemble import (
    load_segmenter,
    make_figures,
    make_sinks,
    make_view,
    model_info,
    output_dir,
    write_summary,
)
from .config import RunConfig, to_dict


def deadline_line(d: dict) -> str:
    """The summary table's line about the latency budget (summary.json ``deadline``)."""
    return (f"deadline {d['ms']:g} ms: {d['degrades']} degrade, {d['restores']} restore "
            f"step(s); in force at the end: {', '.join(d['steps_in_force_end']) or 'none'}")


def check_supported(cfg: RunConfig, several: bool) -> None:
    """What a batched run cannot do, as one line naming the option."""
    what = "several cameras" if several else "--deadline-ms"
    if cfg.model.device != "cpu":
        raise ValueError(f"{what}: batched inference runs on the CPU segmenter; --device "
                         f"{cfg.model.device} takes one --source without --deadline-ms")
    if cfg.temporal.smoothing != "none":
        raise ValueError(f"{what}: --temporal {cfg.temporal.smoothing} follows one frame "
                         f"sequence and cannot run on batches; use --temporal none")


def open_cameras(cfg: RunConfig, cameras: list, several: bool = True) -> tuple[dict, dict]:
    """({name: Source} of the cameras that opened, {name: why not} of those left out). A camera
    that does not open is bad input (the error names it) unless it may be missing."""
    from .capture import open_source
    from .capture.reconnect import Backoff

    sources, missing = {}, {}
    try:
        for cam in cameras:
            timeout = (cam.reconnect_timeout if cam.reconnect_timeout is not None
                       else cfg.stream.reconnect_timeout)
            try:
                sources[cam.name] = open_source(cam.uri, timeout,
                                                Backoff(cfg.stream.backoff_initial,
                                                        cfg.stream.backoff_max),
                                                cam.name if several else None)
            except (ValueError, OSError) as e:
                why = (str(e).splitlines() or [type(e).__name__])[0]
                if cfg.allow_missing or not cam.required:
                    missing[cam.name] = why
                    print(f"drivesegrt: warning: camera {cam.name}: {why}; running without it",
                          file=sys.stderr, flush=True)
                    continue
                raise ValueError(f"camera {cam.name}: {why} (--allow-missing runs without "
                                 f"it)") from None
        if not sources:
            why = "; ".join(f"{k}: {v}" for k, v in missing.items())
            raise ValueError(f"no camera opened ({why})")
    except BaseException:
        for source in sources.values():
            source.close()
        raise
    return sources, missing


def execute_cameras(cfg: RunConfig, signals, segmenter=None) -> tuple[dict, int]:
    """``execute`` for ``cfg.cameras`` (or one source with a deadline): every camera opened
    (one that does not open is bad input unless ``--allow-missing`` or its ``required:
    false``), one engine, a lane per camera (multicam.py) with its own sinks in
    ``DIR/<camera>/``, one summary.json: totals, global stage times, batch sizes and a
    ``cameras`` section with each camera's counts, frame age, FPS and outputs. One camera with
    ``--deadline-ms`` keeps the one-camera layout and summary (plus ``deadline``)."""
    from .config import CameraConfig
    from .deadline import DeadlineController
    from .multicam import MultiPipeline
    from .pipeline import InferenceError, Pipeline
    from .publish.overlay import Overlay
    from .publish.rundir import RunDir, describe_holder
    from .publish.sinks import OutputError

    several = bool(cfg.cameras)
    check_supported(cfg, several)
    cameras = list(cfg.cameras) or [CameraConfig("cam0", cfg.source)]
    sources, missing = open_cameras(cfg, cameras, several)
    seg = rundir = view = None
    error = None
    try:
        if segmenter is None:
            seg, model_path = load_segmenter(cfg)
        else:
            from .infer.build import model_path as path_of

            seg, model_path = segmenter, path_of(cfg.model.path or None, cfg.model.backend)
        rundir = RunDir.claim(output_dir(cfg.output), cfg.overwrite,
                              tuple(sources) if several else ())
        out = rundir.path
        if rundir.stale_holder:
            print(f"drivesegrt: taking over {out} from a run that is gone "
                  f"({describe_holder(rundir.stale_holder)})", file=sys.stderr)
        lane_cfg = dataclasses.replace(cfg, sinks=dataclasses.replace(cfg.sinks, view=None))
        view = make_view(cfg) if cfg.sinks.view else None
        # Pacing is for recorded sources (a live one has its own clock).
        paced = {c.name: c.pace and not sources[c.name].live for c in cameras
                 if c.name in sources}
        lanes = {}
        for name, source in sources.items():
            lane_out = out / name if several else out
            lane_out.mkdir(exist_ok=True)
            sinks, jsonl = make_sinks(lane_cfg, lane_out, source, name if several else None)
            if view is not None:
                sinks.insert(0, view.channel(name) if several else view)
            overlay = Overlay(seg.class_names, seg.palette, cfg.overlay.alpha,
                              cfg.overlay.legend, cfg.overlay.hud)
            lanes[name] = Pipeline(source, seg, overlay, sinks, jsonl, cfg.pipeline.queue_size,
                                   cfg.max_frames, figures=make_figures(cfg, seg),
                                   pace=paced[name], name=name if several else None)
        deadline = None
        if cfg.deadline.ms is not None:
            d = cfg.deadline
            deadline = DeadlineController(
                d.ms, MultiPipeline.applicable_steps(seg, any(paced.values())),
                d.window_s, d.hold_s, d.restore_below, d.restore_hold_s)
        pipeline = MultiPipeline(lanes, seg, deadline, cfg.deadline.input_scale)
        if view is not None:
            for name, lane in lanes.items():
                (view.channel(name) if several else view).set_counters(lane.counters)
        model = model_info(seg, model_path)          # as configured, before any degrade step
        signals.attach(pipeline)
        try:
            pipeline.run()
        except (OutputError, InferenceError) as e:
            error = e
        if rundir.gone():
            error = OutputError(f"run directory {out} was removed during the run; its "
                                f"outputs are lost")
        core = pipeline.summary()
        if several:
            summary = {**core, "missing_cameras": missing}
        else:                                      # the one-camera summary, plus the budget
            name = next(iter(lanes))
            summary = {**core["cameras"][name], "batch": core["batch"],
                       "deadline": core["deadline"]}
        summary.update({"model": model, "output_dir": str(out),
                        "error": None if error is None else str(error),
                        "config": to_dict(cfg)})
        error = write_summary(rundir, summary, error)
    finally:
        if view is not None:              # (one camera: the lane closed it already; idempotent)
            view.close()
        if rundir is not None:
            rundir.release()
        for source in sources.values():
            source.close()
        if seg is not None and segmenter is None:
            seg.close()
            seg.engine.close()
    if error is not None:
        return summary, 1
    return summary, 130 if signals.signum is not None else 0


def print_cameras(s: dict) -> None:
    """The end-of-run table of several cameras: a row per camera, then the global stages."""
    m = s["model"]
    print(f"model    {m['path']} ({m['arch']}, {m['backend']}/{m['device']}, input "
          f"{m['input_size'][0]}x{m['input_size'][1]}, filter {m['filter']}, {m['resize']})")
    b = s["batch"]
    print(f"batches  {b['calls']} engine calls, mean batch {b['mean_size']:.2f}, "
          f"max {b['max_size']}")
    print(f"{'camera':<12}{'kind':<10}{'size':>10}{'in':>7}{'out':>7}{'drop':>6}{'fail':>6}"
          f"{'recon':>6}{'FPS':>7}{'age p50':>9}{'age p99':>9}")
    for name, c in s["cameras"].items():
        src = c["source"]
        print(f"{name:<12}{src['kind']:<10}{src['width']:>5}x{src['height']:<4}"
              f"{c['frames_in']:>7}{c['frames_out']:>7}{c['frames_dropped']:>6}"
              f"{c['frames_failed']:>6}{c['reconnects']:>6}{c['fps']:>7.1f}"
              f"{c['frame_age_ms']['p50']:>9.1f}{c['frame_age_ms']['p99']:>9.1f}")
    for name, why in s["missing_cameras"].items():
        print(f"{name:<12}missing: {why}")
    print(f"speed    {s['fps']:.1f} FPS published over all cameras, {s['wall_s']:.2f} s")
    print(f"{'stage (ms)':<14}{'p50':>9}{'p95':>9}{'p99':>9}")
    for name, p in [*s["stages_ms"].items(), ("frame age", s["frame_age_ms"])]:
        print(f"{name:<14}{p['p50']:>9.2f}{p['p95']:>9.2f}{p['p99']:>9.2f}")
    if "deadline" in s:
        print(deadline_line(s["deadline"]))
    print(f"output   {Path(s['output_dir'])}/<camera>/ and "
          f"{Path(s['output_dir']) / 'summary.json'}")
