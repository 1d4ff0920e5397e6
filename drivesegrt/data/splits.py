"""One labelled split of a dataset on disk, whatever its layout (CamVid SegNet or Cityscapes).

``open_split(root, split)`` is what train, eval and the class-weight command use, so all three
read labels the same way: ``split.read_label(path, image_shape)`` -> uint8 HxW train ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from ..labels import LabelSet, get_label_set
from .camvid import camvid_pairs, pairs_by_stem, read_label
from .cityscapes import cityscapes_pairs, read_cityscapes_label

DATASETS = ("auto", "camvid", "cityscapes")


@dataclass(frozen=True)
class DatasetSplit:
    name: str                      # camvid | cityscapes
    split: str
    pairs: list                    # [(image path, label path)]
    labels: LabelSet               # class names/palette of the train ids
    read_label: Callable           # (path, image_shape=None) -> uint8 HxW train ids


def detect_dataset(root: str | Path) -> str:
    """'cityscapes' when ROOT/leftImg8bit exists, 'camvid' when ROOT/train or ROOT/test does."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if any((root / s).is_dir() for s in ("train", "val", "test")):
        return "camvid"
    raise ValueError(f"{root}: neither a CamVid (train/, trainannot/, ...) nor a Cityscapes "
                     f"(leftImg8bit/, gtFine/) dataset folder")


def open_split(root: str | Path, split: str, dataset: str = "auto") -> DatasetSplit:
    """Pairs + label reader of ``split`` under ``root``; ``dataset`` 'auto' detects the layout."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    if dataset == "auto":
        dataset = detect_dataset(root)
    if dataset == "camvid":
        labels = get_label_set("camvid11")
        return DatasetSplit("camvid", split, camvid_pairs(root, split), labels,
                            partial(_read_camvid_label, labels=labels))
    return DatasetSplit("cityscapes", split, cityscapes_pairs(root, split),
                        get_label_set("cityscapes19"), read_cityscapes_label)


def folder_split(images: str | Path, labels: str | Path, label_set: str = "camvid11"
                 ) -> DatasetSplit:
    """Any folder of images with a folder of single-channel label images of the same stems
    (class ids of ``label_set``; its ignore id is void), in name order."""
    images, labels = Path(images), Path(labels)
    for d in (images, labels):
        if not d.is_dir():
            raise FileNotFoundError(f"folder not found: {d}")
    ls = get_label_set(label_set)
    return DatasetSplit("folder", images.name, pairs_by_stem(images, labels), ls,
                        partial(_read_camvid_label, labels=ls))


def _read_camvid_label(path, image_shape=None, *, labels: LabelSet):
    return read_label(path, labels.num_classes, labels.ignore_index, image_shape)
