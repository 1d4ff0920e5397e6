"""Run config: config.yaml holds every default; bad keys/values name the key and choices."""
from __future__ import annotations

import dataclasses

import pytest
from pipeline_helpers import ROOT

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


def test_config_yaml_lists_every_key():
    text = (ROOT / "config.yaml").read_text()
    for key in _leaf_keys(RunConfig()):
        assert f"{key.split('.')[-1]}:" in text, key


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


@pytest.mark.parametrize("data, match", [
    ({"model": {"backend": "tflite"}}, r"model.backend.*allowed: 'torch', 'onnxruntime', 'openvino', 'tensorrt'"),
    ({"postprocess": {"filter": "cubic"}}, r"postprocess.filter.*allowed: 'linear', 'point'"),
    ({"preprocess": {"resize": "crop"}}, r"preprocess.resize.*allowed: 'stretch', 'letterbox'"),
    ({"overlay": {"alpha": 1.5}}, r"overlay.alpha.*\[0, 1\]"),
    ({"sinks": {"vidoe": True}}, r"unknown config key sinks.'vidoe'; allowed keys: video"),
    ({"pipeline": {"queue_size": 0}}, r"pipeline.queue_size.*>= 1"),
    ({"max_frames": 0}, r"max_frames.*>= 1"),
    ({"model": {"input_size": [360]}}, r"model.input_size.*expected 2 values"),
])
def test_bad_values_rejected(data, match):
    with pytest.raises(ValueError, match=match):
        load_dataclass(RunConfig, data)
