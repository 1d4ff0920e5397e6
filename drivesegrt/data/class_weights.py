"""Class weights from label statistics (median-frequency balancing, as SegNet used)."""
from __future__ import annotations

import numpy as np

from .camvid import read_label


def class_pixel_counts(label_paths, num_classes: int, ignore_index: int, read_fn=None):
    """(pixels of each class, pixels of images containing each class), both (C,) int64.

    ``read_fn(path)`` -> uint8 HxW train ids; default reads CamVid-style id PNGs."""
    counts = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    for path in label_paths:
        lab = read_fn(path) if read_fn else read_label(path, num_classes, ignore_index)
        c = np.bincount(lab.ravel(), minlength=256)[:num_classes]
        counts += c
        image_pixels += (c > 0) * lab.size
    return counts, image_pixels


def median_frequency_weights(label_paths, num_classes: int, ignore_index: int,
                             read_fn=None) -> np.ndarray:
    """(C,) float64: w_c = median(freq) / freq_c with freq_c = pixels of c / pixels of images
    where c appears (Eigen & Fergus 2015). Classes never seen get weight 0."""
    counts, image_pixels = class_pixel_counts(label_paths, num_classes, ignore_index, read_fn)
    with np.errstate(divide="ignore", invalid="ignore"):
        freq = np.where(image_pixels > 0, counts / np.maximum(image_pixels, 1), 0.0)
    seen = freq > 0
    if not seen.any():
        raise ValueError("no labelled pixels in the given label files")
    med = np.median(freq[seen])
    return np.where(seen, med / np.where(seen, freq, 1.0), 0.0).astype(np.float64)
