"""Helpers for the data/eval/train tests: generated CamVid and Cityscapes folders and tiny
random-weight checkpoints for any label set."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from drivesegrt.labels import CAMVID11, LabelSet
from drivesegrt.meta import ModelMeta
from drivesegrt.models import TINY_KWARGS, build_model
from drivesegrt.models.checkpoint import save_checkpoint

# Cityscapes label ids written by make_cityscapes and the train ids they must become
CS_IDS = np.array([[7, 8, 11, 26], [0, 23, 24, 33], [3, 29, 19, 20]], np.uint8)
CS_TRAIN = np.array([[0, 1, 2, 13], [255, 10, 11, 18], [255, 255, 6, 7]], np.uint8)


def make_camvid(root: Path, split: str = "train", labels=None, n: int = 3, hw=(8, 12),
                label_value: int = 1) -> Path:
    """A CamVid (SegNet layout) split: ``labels`` (list of HxW uint8 arrays) or ``n`` labels
    filled with ``label_value``; images are gray f{i}.png of the same size."""
    if labels is None:
        labels = [np.full(hw, label_value, np.uint8)] * n
    for folder in (split, f"{split}annot"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i, lab in enumerate(labels):
        cv2.imwrite(str(root / split / f"f{i}.png"), np.full((*lab.shape, 3), 50, np.uint8))
        cv2.imwrite(str(root / f"{split}annot" / f"f{i}.png"), lab)
    return root


def make_cityscapes(root: Path, split: str = "val", per_city: int = 2,
                    cities=("aachen", "bremen")) -> Path:
    """leftImg8bit/{split}/{city}/{city}_000000_00000{i}_leftImg8bit.png + gtFine labelIds
    (CS_IDS rolled by i columns) + a gtFine color file that must not be taken for a label."""
    for c, city in enumerate(cities):
        for folder in ("leftImg8bit", "gtFine"):
            (root / folder / split / city).mkdir(parents=True, exist_ok=True)
        for i in range(per_city):
            stem = f"{city}_000000_{i:06d}"
            cv2.imwrite(str(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"),
                        np.full((*CS_IDS.shape, 3), 10 * (c * per_city + i), np.uint8))
            cv2.imwrite(str(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"),
                        np.roll(CS_IDS, i, axis=1))
            cv2.imwrite(str(root / "gtFine" / split / city / f"{stem}_gtFine_color.png"),
                        np.zeros((*CS_IDS.shape, 3), np.uint8))
    return root


def tiny_checkpoint(path: Path, labels: LabelSet = CAMVID11, seed: int = 0,
                    input_size=(360, 480)):
    """(path, model, meta) of a random-weight tiny MobileSeg saved as a checkpoint."""
    torch.manual_seed(seed)
    kwargs = TINY_KWARGS["mobileseg"]
    model = build_model("mobileseg", labels.num_classes, **kwargs).eval()
    meta = ModelMeta.for_label_set("mobileseg", labels, arch_kwargs=dict(kwargs),
                                   input_size=tuple(input_size))
    save_checkpoint(path, model, meta)
    return path, model, meta
