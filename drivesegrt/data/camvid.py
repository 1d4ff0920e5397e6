"""CamVid in the SegNet layout: {split}/NAME.png (RGB 480x360) + {split}annot/NAME.png (ids 0..10, 11 void)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..files import IMAGE_EXTS
from ..labels import CAMVID11, LabelSet

SPLITS = ("train", "val", "test")


def camvid_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, label) paths of one split, in name order; errors name the missing/mismatched file."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"unknown CamVid split {split!r}; allowed: {', '.join(SPLITS)}")
    img_dir, ann_dir = root / split, root / f"{split}annot"
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"CamVid folder not found: {d}")
    return pairs_by_stem(img_dir, ann_dir)


def pairs_by_stem(img_dir: Path, ann_dir: Path) -> list[tuple[Path, Path]]:
    """(image, label) paths of two folders whose files share stems, in name order; errors
    name the missing/mismatched file."""
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    labels = sorted(p for p in ann_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not images:
        raise ValueError(f"{img_dir}: no images")
    if len(images) != len(labels):
        raise ValueError(f"{img_dir.parent}: {len(images)} images in {img_dir.name}/ but "
                         f"{len(labels)} labels in {ann_dir.name}/")
    label_by_stem = {p.stem: p for p in labels}
    pairs = []
    for img in images:
        lab = label_by_stem.get(img.stem)
        if lab is None:
            raise ValueError(f"{img}: no label {ann_dir / img.name}")
        pairs.append((img, lab))
    return pairs


def read_image(path: Path) -> np.ndarray:
    """uint8 HxWx3 BGR."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: unreadable image")
    return img


def read_label(path: Path, num_classes: int, ignore_index: int, image_shape=None) -> np.ndarray:
    """uint8 HxW class ids; ids > num_classes-1 other than ignore_index are an error."""
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise ValueError(f"{path}: unreadable label image")
    if lab.ndim != 2:
        raise ValueError(f"{path}: label must be single-channel, got shape {lab.shape}")
    if image_shape is not None and lab.shape != tuple(image_shape[:2]):
        raise ValueError(f"{path}: label size {lab.shape[1]}x{lab.shape[0]} differs from its "
                         f"image {image_shape[1]}x{image_shape[0]}")
    bad = (lab >= num_classes) & (lab != ignore_index)
    if bad.any():
        raise ValueError(f"{path}: label id {int(lab[bad].max())} out of range "
                         f"(0..{num_classes - 1}, void {ignore_index})")
    return lab.astype(np.uint8)


class SegmentationDataset:
    """In-memory (image, label) pairs with an optional joint transform.

    Items are ``(image uint8 HxWx3 BGR, label uint8 HxW)`` after ``transform``.
    """

    def __init__(self, pairs, labels: LabelSet, transform=None, cache: bool = True,
                 label_fn=None):
        self.pairs = list(pairs)
        self.labels = labels
        self.transform = transform
        self.label_fn = label_fn  # optional raw-label -> train-id converter (Cityscapes)
        self._cache = {} if cache else None

    def __len__(self):
        return len(self.pairs)

    def load(self, i: int):
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        img_path, lab_path = self.pairs[i]
        img = read_image(img_path)
        if self.label_fn is not None:
            lab = self.label_fn(lab_path, img.shape)
        else:
            lab = read_label(lab_path, self.labels.num_classes, self.labels.ignore_index, img.shape)
        if self._cache is not None:
            self._cache[i] = (img, lab)
        return img, lab

    def __getitem__(self, i: int):
        img, lab = self.load(i)
        if self.transform is not None:
            img, lab = self.transform(img, lab)
        return img, lab


def camvid_dataset(root: str | Path, split: str, transform=None) -> SegmentationDataset:
    return SegmentationDataset(camvid_pairs(root, split), CAMVID11, transform)
