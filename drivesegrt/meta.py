"""Model metadata: what a model file carries so the pipeline hard-codes nothing about it.

The same dictionary is stored in torch checkpoints (key ``"meta"``) and in ONNX files
(``metadata_props["drivesegrt"]`` as JSON).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .labels import LabelSet

ONNX_META_KEY = "drivesegrt"
# Class ids travel as uint8 (label maps, masks, palettes) and 255 marks "undecided" in the
# exact linear upsample, so a model may have at most 255 classes.
MAX_CLASSES = 255


@dataclass(frozen=True)
class ModelMeta:
    arch: str                                  # registry name, e.g. "mobileseg"
    arch_kwargs: dict = field(default_factory=dict)   # widths etc., passed to build_model
    class_names: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()   # RGB per class
    label_set: str = "camvid11"
    input_size: tuple[int, int] = (360, 480)   # (H, W) the model was trained at
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB, on [0, 1] pixels
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    ignore_index: int = 11
    # Set by export: what the graph expects and returns.
    input_format: str = "float_nchw"           # float_nchw | uint8_nhwc_bgr (normalization in graph)
    output: str = "logits"                     # logits (N,C,h,w) | labels (N,h,w) argmax in graph
    precision: str = "fp32"                    # fp32 | fp16 | int8

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["palette"] = [list(c) for c in self.palette]
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict, where: str = "model metadata") -> "ModelMeta":
        if not isinstance(d, dict):
            raise ValueError(f"{where}: metadata is not a mapping")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"{where}: unknown metadata keys {sorted(unknown)}")
        for key in ("arch", "class_names", "palette"):
            if key not in d:
                raise ValueError(f"{where}: metadata lacks {key!r}")
        kw = dict(d)
        kw["class_names"] = tuple(str(n) for n in d["class_names"])
        kw["palette"] = tuple(tuple(int(v) for v in c) for c in d["palette"])
        for key in ("input_size", "mean", "std"):
            if key in d:
                kw[key] = tuple(d[key])
        kw["arch_kwargs"] = dict(d.get("arch_kwargs", {}))
        meta = cls(**kw)
        if not 1 <= meta.num_classes <= MAX_CLASSES:
            raise ValueError(f"{where}: {meta.num_classes} classes; drivesegrt supports 1 to "
                             f"{MAX_CLASSES} (class ids are uint8 in masks, 255 is reserved)")
        if len(meta.palette) != len(meta.class_names):
            raise ValueError(f"{where}: {len(meta.class_names)} class names but "
                             f"{len(meta.palette)} palette colors")
        if len(meta.input_size) != 2 or min(meta.input_size) < 8:
            raise ValueError(f"{where}: bad input_size {meta.input_size}")
        return meta

    @classmethod
    def from_json(cls, text: str, where: str = "model metadata") -> "ModelMeta":
        try:
            return cls.from_dict(json.loads(text), where)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: metadata is not valid JSON ({e})") from None

    @classmethod
    def for_label_set(cls, arch: str, labels: LabelSet, **kw) -> "ModelMeta":
        return cls(arch=arch, class_names=labels.class_names, palette=labels.palette,
                   label_set=labels.name, ignore_index=labels.ignore_index, **kw)
