"""Typed, frozen configuration from YAML; the project's only YAML reader.

``load_dataclass(cls, path_or_dict)`` builds a (nested) frozen dataclass, rejecting unknown keys
and values outside ``Literal[...]`` choices with a message naming the key and the allowed values.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path

import yaml

from .engines import BACKENDS, DEFAULT_BACKEND
from .engines.base import parse_device
from .infer.pick import AUTO_BACKEND
from .infer.postprocess import FILTER_MODES
from .infer.temporal import TEMPORAL_SYNTAX, parse_temporal
from .labels import LABEL_SETS
from .preprocess import RESIZE_MODES
from .publish.driving import parse_roi
from .publish.sinks import VIDEO_CODECS

# Choices of the run config, each from its one home.
_BACKENDS, _LABEL_SETS = tuple(BACKENDS), tuple(LABEL_SETS)


def read_yaml(path: str | os.PathLike, top: type = dict) -> dict | list:
    """The YAML document in ``path``: a mapping of keys (``top=dict``, config files) or a list
    (``top=list``, e.g. a sources file); ValueError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at line "
                         f"{line})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ValueError(f"{path}: invalid YAML{at}") from None
    if data is None:
        return top()
    if not isinstance(data, top):
        raise ValueError(f"{path}: top level must be a "
                         f"{'mapping of keys' if top is dict else 'list'}")
    return data


def _check_value(tp, value, key: str):
    """Validate/convert one value against a type annotation; returns the converted value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"config key {key!r}: {value!r} is not allowed; "
                             f"allowed: {', '.join(repr(a) for a in args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_value(a, value, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"config key {key!r}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {key!r}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ValueError(f"config key {key!r}: expected {len(args)} values, got {value!r}")
        item_types = args[:1] * len(value) if (not args or args[-1] is Ellipsis) else args
        if not args:
            return tuple(value)
        return tuple(_check_value(t, v, f"{key}[{i}]") for i, (t, v) in
                     enumerate(zip(item_types, value)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config key {key!r}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"config key {key!r}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls, data, where: str):
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"config key {where!r}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(f"unknown config key {prefix}{unknown[0]!r}; allowed keys: "
                         f"{', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _check_value(hints[name], value, key)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def load_dataclass(cls, source: str | os.PathLike | dict | None, overrides: dict | None = None):
    """Build ``cls`` from a YAML file or dict, then apply dotted-key ``overrides``
    (``{"engine.backend": "torch"}``); both are validated the same way."""
    data = {} if source is None else (dict(source) if isinstance(source, dict)
                                      else read_yaml(source))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        parts = dotted.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"config key {dotted!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return _build(cls, data, "")


def choices(obj, name: str) -> tuple:
    """The allowed values of the ``Literal`` field ``name`` of a config dataclass (or instance):
    what the CLI offers as ``choices``."""
    hint = typing.get_type_hints(obj if isinstance(obj, type) else type(obj))[name]
    for tp in (hint, *typing.get_args(hint)):
        if typing.get_origin(tp) is typing.Literal:
            return typing.get_args(tp)
    raise ValueError(f"config field {name!r} has no fixed choices")


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


# ---------------------------------------------------------------- `drivesegrt run` config
# Every default lives here and, commented, in config.yaml; CLI flags override (run.py).

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")


def _require(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ValueError(f"config key {key!r}: {msg}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    path: str = ""                     # a bundled model name ("camvid") or a file; "" = the default
    # "auto": the fastest installed CPU runtime that agrees with ONNX Runtime (infer/pick.py)
    backend: typing.Literal[(*_BACKENDS, AUTO_BACKEND)] = DEFAULT_BACKEND  # type: ignore[valid-type]
    device: str = "cpu"                # cpu | cuda | cuda:N
    input_size: tuple[int, int] | None = None   # (H, W) override of the model's input size
    threads: int = 0                   # engine threads (torch, ORT intra-op, OpenVINO); 0 = default
    fp16: bool = True                  # CUDA, torch backend: fp16 (channels_last always)
    cuda_graphs: bool = False          # CUDA, torch backend: replay a captured CUDA graph

    def validate(self):
        try:
            parse_device(self.device)
        except ValueError as e:
            raise ValueError(f"config key 'model.device': {e}") from None
        _require(self.input_size is None or min(self.input_size) >= 8, "model.input_size",
                 f"must be [height, width] >= 8, got {self.input_size}")
        _require(self.threads >= 0, "model.threads", f"must be >= 0, got {self.threads}")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    resize: typing.Literal[RESIZE_MODES] = "stretch"          # type: ignore[valid-type]


@dataclasses.dataclass(frozen=True)
class PostprocessConfig:
    filter: typing.Literal[FILTER_MODES] = "linear"           # type: ignore[valid-type]
    remap: typing.Literal[_LABEL_SETS] | None = None          # type: ignore[valid-type]


@dataclasses.dataclass(frozen=True)
class OverlayConfig:
    alpha: float = 0.5
    legend: bool = True
    hud: bool = True
    draw_drivable: bool = False        # outline the drivable area (needs figures.drivable)

    def validate(self):
        _require(0.0 <= self.alpha <= 1.0, "overlay.alpha", f"must be in [0, 1], got {self.alpha}")


@dataclasses.dataclass(frozen=True)
class TemporalConfig:
    """Smoothing of the class probabilities over time (infer/temporal.py)."""
    smoothing: str = "none"            # none | ema:ALPHA | ema:ALPHA:flow
    scene_cut: float = 40.0            # mean grey-level change (0-255) of the thumbnail = a cut
    max_gap_s: float = 0.5             # a jump in frame numbers worth more (or a reconnect)

    def validate(self):
        try:
            parse_temporal(self.smoothing)
        except ValueError:
            raise ValueError(f"config key 'temporal.smoothing': {self.smoothing!r} is not "
                             f"allowed; expected {TEMPORAL_SYNTAX}") from None
        _require(self.scene_cut > 0, "temporal.scene_cut", f"must be > 0, got {self.scene_cut}")
        _require(self.max_gap_s > 0, "temporal.max_gap_s", f"must be > 0, got {self.max_gap_s}")


@dataclasses.dataclass(frozen=True)
class ConfidenceConfig:
    """Top-class probability per pixel (needs a model with scores out, not argmax)."""
    save: bool = False                 # confidence/*.png beside masks/ + frames.jsonl figures
    stats: bool = False                # the frames.jsonl figures only (no PNGs)
    low_threshold: float = 0.5         # low_share counts pixels below this probability

    def validate(self):
        _require(0.0 <= self.low_threshold <= 1.0, "confidence.low_threshold",
                 f"must be in [0, 1], got {self.low_threshold}")

    @property
    def wanted(self) -> bool:
        return self.save or self.stats


@dataclasses.dataclass(frozen=True)
class FiguresConfig:
    """Per-frame driving figures in frames.jsonl (publish/driving.py)."""
    coverage: bool = True              # share of pixels per class
    drivable: bool = True              # drivable area: share, polygon, free space ahead
    drivable_classes: tuple[str, ...] = ("road",)   # class names (any case) that are drivable
    center_band: float = 0.1           # width fraction of the centre band (seed, free_ahead)
    polygon_tolerance: float = 0.005   # polygon simplification, fraction of the diagonal
    roi: tuple[str, ...] = ()          # "NAME=x0,y0,x1,y1" regions, fractions of the frame

    def validate(self):
        _require(0.0 < self.center_band <= 1.0, "figures.center_band",
                 f"must be in (0, 1], got {self.center_band}")
        _require(self.polygon_tolerance >= 0, "figures.polygon_tolerance",
                 f"must be >= 0, got {self.polygon_tolerance}")
        try:
            self.regions()
        except ValueError as e:
            raise ValueError(f"config key 'figures.roi': {e}") from None

    def regions(self) -> dict[str, tuple[float, float, float, float]]:
        """The ``roi`` entries by name."""
        regions = {}
        for text in self.roi:
            name, box = parse_roi(text)
            if name in regions:
                raise ValueError(f"region {name!r} is given twice")
            regions[name] = box
        return regions

    @property
    def wanted(self) -> bool:
        return self.coverage or self.drivable or bool(self.roi)


@dataclasses.dataclass(frozen=True)
class SinksConfig:
    video: bool = True                 # overlay.mp4 (video, stream, camera, synthetic sources)
    video_codec: typing.Literal[VIDEO_CODECS] = "auto"        # type: ignore[valid-type]
    video_preset: typing.Literal[X264_PRESETS] = "ultrafast"   # type: ignore[valid-type]
    video_crf: int = 23
    images: bool = True                # overlays/<stem>.jpg (image sources)
    masks: bool = False                # masks/*.png class ids (--save-masks)
    show: bool = False                 # a window, when a display exists (--show)
    jsonl: bool = True                 # frames.jsonl
    view: str | None = None            # live browser view address, e.g. http://127.0.0.1:8080
    view_fps: float = 15.0             # at most this many JPEGs a second for the view
    view_token: str | None = None      # the view serves only requests carrying this token
    view_hosts: tuple[str, ...] = ()   # host names allowed in requests to the view, besides
                                       # loopback names and IP addresses (DNS rebinding)

    def validate(self):
        _require(0 <= self.video_crf <= 51, "sinks.video_crf", f"must be 0..51, got {self.video_crf}")
        _require(self.view_fps > 0, "sinks.view_fps", f"must be > 0, got {self.view_fps}")
        _require(self.view_token is None or len(self.view_token) > 0, "sinks.view_token",
                 "must not be empty")


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """Outages of cameras and network streams: reopen with backoff, give up after a timeout."""
    reconnect_timeout: float | None = None   # seconds away before the run ends; None = never
    backoff_initial: float = 0.5       # first retry delay, doubling ...
    backoff_max: float = 5.0           # ... up to this

    def validate(self):
        _require(self.reconnect_timeout is None or self.reconnect_timeout > 0,
                 "stream.reconnect_timeout", f"must be > 0 seconds or null, got "
                 f"{self.reconnect_timeout}")
        _require(0 < self.backoff_initial <= self.backoff_max, "stream.backoff_initial",
                 f"must be > 0 and <= stream.backoff_max, got {self.backoff_initial}")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    queue_size: int = 4                # capture and publish queue depth (recorded sources)
    writer_queue: int = 8              # frames buffered per sink writer thread

    def validate(self):
        _require(self.queue_size >= 1, "pipeline.queue_size", f"must be >= 1, got {self.queue_size}")
        _require(self.writer_queue >= 1, "pipeline.writer_queue",
                 f"must be >= 1, got {self.writer_queue}")


# Several cameras: ``--source NAME=URI`` texts and sources-file entries -> ``cameras`` entries.
#     front=rtsp://car/front     named "front"
#     /dev/video2                unnamed: cam<position> (cam0, cam1, ...)
#     synthetic:?w=640&h=360     a '=' inside a URI is not a name: names are plain words
# A name is letters, digits, '_' and '-' (it names the camera's output directory).
CAMERA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def split_name(text: str) -> tuple[str | None, str]:
    """``"front=rtsp://x"`` -> ("front", "rtsp://x"); ``"clip.mp4"`` -> (None, "clip.mp4")."""
    head, sep, rest = str(text).partition("=")
    if sep and CAMERA_NAME.fullmatch(head):
        return head, rest
    return None, str(text)


def camera_entries(texts) -> list[dict]:
    """``--source`` texts -> [{"name", "uri"}], unnamed ones called cam<position>."""
    return [{"name": name or f"cam{i}", "uri": uri}
            for i, (name, uri) in enumerate(map(split_name, texts))]


def file_entries(items: list, path) -> list[dict]:
    """A sources file's list -> camera entries: each item a mapping with ``uri`` (and
    optionally ``name`` and per-camera options) or a ``NAME=URI`` text; ValueError naming the
    file and the item otherwise."""
    entries = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            name, uri = split_name(item)
            entries.append({"name": name or f"cam{i}", "uri": uri})
            continue
        if not isinstance(item, dict) or "uri" not in item:
            raise ValueError(f"{path}: item {i + 1} must be a mapping with a 'uri' (and "
                             f"optionally 'name'), or a NAME=URI text; got {item!r}")
        entries.append({"name": f"cam{i}", **item})
    if not entries:
        raise ValueError(f"{path}: the sources list is empty")
    return entries


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    """One camera of a several-camera run (``--source NAME=URI`` or a ``--sources`` file)."""
    name: str                          # names its outputs: DIR/<name>/...
    uri: str                           # anything --source takes
    reconnect_timeout: float | None = None   # this camera's outage limit; None = stream.*
    pace: bool = False                 # recorded source delivered at its own fps (a replay)
    required: bool = True              # false: run without it when it does not open at start

    def validate(self):
        _require(bool(CAMERA_NAME.fullmatch(self.name)), "cameras.name",
                 f"{self.name!r} must be letters, digits, '_' or '-' (it names a directory)")
        _require(bool(str(self.uri).strip()), f"cameras.{self.name}.uri", "must not be empty")
        _require(self.reconnect_timeout is None or self.reconnect_timeout > 0,
                 f"cameras.{self.name}.reconnect_timeout",
                 f"must be > 0 seconds or null, got {self.reconnect_timeout}")



@dataclasses.dataclass(frozen=True)
class DeadlineConfig:
    """Latency budget (deadline.py): degrade in steps while the frame age p95 is over it."""
    ms: float | None = None            # --deadline-ms; None = no budget, nothing changes
    window_s: float = 1.0              # the p95 is over the frames published this long ago
    hold_s: float = 1.0                # at least this long between two degrade steps
    restore_below: float = 0.7         # restore once p95 < restore_below x ms ...
    restore_hold_s: float = 2.0        # ... for this long (doubles after each flip-flop)
    input_scale: float = 0.75          # the smaller-input step: this share of each side

    def validate(self):
        _require(self.ms is None or self.ms > 0, "deadline.ms", f"must be > 0, got {self.ms}")
        _require(self.window_s > 0, "deadline.window_s", f"must be > 0, got {self.window_s}")
        _require(self.hold_s >= 0, "deadline.hold_s", f"must be >= 0, got {self.hold_s}")
        _require(0 < self.restore_below < 1, "deadline.restore_below",
                 f"must be in (0, 1), got {self.restore_below}")
        _require(self.restore_hold_s >= 0, "deadline.restore_hold_s",
                 f"must be >= 0, got {self.restore_hold_s}")
        _require(0.25 <= self.input_scale < 1, "deadline.input_scale",
                 f"must be in [0.25, 1), got {self.input_scale}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    source: str = "synthetic:"
    cameras: tuple[CameraConfig, ...] = ()   # several cameras at once (replaces source)
    allow_missing: bool = False        # run without cameras that do not open at start
    output: str | None = None          # None = runs/<timestamp>/
    overwrite: bool = False            # reuse a non-empty run directory (a run's outputs only)
    max_frames: int | None = None      # None = until the source ends
    model: ModelConfig = ModelConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    overlay: OverlayConfig = OverlayConfig()
    temporal: TemporalConfig = TemporalConfig()
    confidence: ConfidenceConfig = ConfidenceConfig()
    figures: FiguresConfig = FiguresConfig()
    sinks: SinksConfig = SinksConfig()
    pipeline: PipelineConfig = PipelineConfig()
    stream: StreamConfig = StreamConfig()
    deadline: DeadlineConfig = DeadlineConfig()

    def validate(self):
        names = [c.name for c in self.cameras]
        dup = next((n for n in names if names.count(n) > 1), None)
        _require(dup is None, "cameras", f"camera name {dup!r} is given twice")
        _require(self.max_frames is None or self.max_frames >= 1, "max_frames",
                 f"must be >= 1, got {self.max_frames}")
        _require(not self.overlay.draw_drivable or self.figures.drivable, "overlay.draw_drivable",
                 "needs figures.drivable: true")
