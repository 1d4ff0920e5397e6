"""Cityscapes layout: leftImg8bit/{split}/{city}/*_leftImg8bit.png + gtFine/{split}/{city}/*_gtFine_labelIds.png.

Label files hold Cityscapes label *ids* (0..33); they are mapped to the 19 train ids used for
training and scoring, every other id to 255 (ignored).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
IGNORE = 255
NUM_LABEL_IDS = 34  # ids 0..33 (cityscapesScripts labels.py; license plate -1 never appears in PNGs)

# label id -> train id, from cityscapesScripts helpers/labels.py (ids not listed are ignored).
_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                   24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def label_id_lut() -> np.ndarray:
    """(256,) uint8 table: Cityscapes label id -> train id 0..18, or 255 (ignored)."""
    lut = np.full(256, IGNORE, np.uint8)
    for label_id, train_id in _LABEL_TO_TRAIN.items():
        lut[label_id] = train_id
    return lut


_LUT = label_id_lut()


def cityscapes_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, labelIds) paths of one split, sorted by city then name; errors name the file."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"unknown Cityscapes split {split!r}; allowed: {', '.join(SPLITS)}")
    img_dir, ann_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"Cityscapes folder not found: {d}")
    images = sorted(img_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    labels = sorted(ann_dir.glob(f"*/*{LABEL_SUFFIX}"))
    if not images:
        raise ValueError(f"{img_dir}: no */*{IMAGE_SUFFIX} images")
    if len(images) != len(labels):
        raise ValueError(f"{root}: {len(images)} images in leftImg8bit/{split}/ but "
                         f"{len(labels)} *{LABEL_SUFFIX} labels in gtFine/{split}/")
    pairs = []
    for img in images:
        stem = img.name[: -len(IMAGE_SUFFIX)]
        lab = ann_dir / img.parent.name / f"{stem}{LABEL_SUFFIX}"
        if not lab.is_file():
            raise ValueError(f"{img}: no label {lab}")
        pairs.append((img, lab))
    return pairs


def read_cityscapes_label(path: Path, image_shape=None) -> np.ndarray:
    """uint8 HxW train ids (0..18, 255 ignored) from a ``*_gtFine_labelIds.png``.

    Ids above 33 are an error naming the file; ``image_shape`` (H, W, ...) checks the size.
    """
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise ValueError(f"{path}: unreadable label image")
    if lab.ndim != 2 or lab.dtype != np.uint8:
        raise ValueError(f"{path}: labelIds must be single-channel 8-bit, got shape {lab.shape} "
                         f"{lab.dtype}")
    if image_shape is not None and lab.shape != tuple(image_shape[:2]):
        raise ValueError(f"{path}: label size {lab.shape[1]}x{lab.shape[0]} differs from its "
                         f"image {image_shape[1]}x{image_shape[0]}")
    if int(lab.max()) >= NUM_LABEL_IDS:
        raise ValueError(f"{path}: label id {int(lab.max())} out of range "
                         f"(Cityscapes label ids 0..{NUM_LABEL_IDS - 1})")
    return _LUT[lab]
