"""Run config: config.yaml holds every default; bad keys/values name the key and choices."""
from __future__ import annotations

import dataclasses

import pytest
import yaml
from helpers import ROOT

from drivesegrt.config import RunConfig, load_dataclass
from drivesegrt.labels import LABEL_SETS


def _leaf_keys(obj, prefix=""):
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from _leaf_keys(v, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def test_config_yaml_is_the_defaults():
    assert load_dataclass(RunConfig, ROOT / "config.yaml") == RunConfig()


def _yaml_keys(mapping, prefix=""):
    for name, value in mapping.items():
        if isinstance(value, dict):
            yield from _yaml_keys(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_config_yaml_lists_every_key():
    """Every field, under its own section, and nothing else."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert sorted(_yaml_keys(data)) == sorted(_leaf_keys(RunConfig()))


def test_overrides_apply():
    cfg = load_dataclass(RunConfig, ROOT / "config.yaml",
                         {"model.backend": "onnxruntime", "postprocess.filter": "point",
                          "max_frames": 5, "sinks.masks": True})
    assert (cfg.model.backend, cfg.postprocess.filter, cfg.max_frames, cfg.sinks.masks) == \
        ("onnxruntime", "point", 5, True)


def test_remap_choices_are_the_label_sets():
    import typing
    hint = typing.get_type_hints(type(RunConfig().postprocess))["remap"]
    literal = [a for a in typing.get_args(hint) if typing.get_origin(a) is typing.Literal][0]
    assert set(typing.get_args(literal)) == set(LABEL_SETS)


@pytest.mark.parametrize("data, message", [
    ({"model": {"backend": "tflite"}},
     "config key 'model.backend': 'tflite' is not allowed; "
     "allowed: 'torch', 'onnxruntime', 'openvino', 'tensorrt', 'auto'"),
    ({"postprocess": {"filter": "cubic"}},
     "config key 'postprocess.filter': 'cubic' is not allowed; allowed: 'linear', 'point'"),
    ({"postprocess": {"remap": "coco"}},
     "config key 'postprocess.remap': 'coco' is not allowed; "
     "allowed: 'camvid11', 'cityscapes19', 'driving5'"),
    ({"preprocess": {"resize": "crop"}},
     "config key 'preprocess.resize': 'crop' is not allowed; allowed: 'stretch', 'letterbox'"),
    ({"overlay": {"alpha": 1.5}}, "config key 'overlay.alpha': must be in [0, 1], got 1.5"),
    ({"sinks": {"vidoe": True}},
     "unknown config key sinks.'vidoe'; allowed keys: video, video_codec, video_preset, "
     "video_crf, images, masks, show, jsonl, view, view_fps, view_token, view_hosts"),
    ({"sinks": {"video": "yes"}}, "config key 'sinks.video': expected true or false, got 'yes'"),
    ({"sinks": {"video_crf": 52}}, "config key 'sinks.video_crf': must be 0..51, got 52"),
    ({"pipeline": {"queue_size": 0}}, "config key 'pipeline.queue_size': must be >= 1, got 0"),
    ({"max_frames": 0}, "config key 'max_frames': must be >= 1, got 0"),
    ({"max_frames": "all"}, "config key 'max_frames': expected an integer, got 'all'"),
    ({"model": {"input_size": [360]}},
     "config key 'model.input_size': expected 2 values, got [360]"),
    ({"model": {"input_size": [4, 4]}},
     "config key 'model.input_size': must be [height, width] >= 8, got (4, 4)"),
    ({"model": "big"}, "config key 'model': expected a mapping, got 'big'"),
    ({"stream": {"backoff_initial": 9}},
     "config key 'stream.backoff_initial': must be > 0 and <= stream.backoff_max, got 9.0"),
])
def test_bad_values_rejected(data, message):
    with pytest.raises(ValueError) as e:
        load_dataclass(RunConfig, data)
    assert str(e.value) == message
