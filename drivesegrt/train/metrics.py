"""Confusion matrix and the scores derived from it (per-class IoU, mIoU, pixel/class accuracy)."""
from __future__ import annotations

import numpy as np


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = ground truth, cols = prediction, from same-shape integer
    arrays (any shape, e.g. (H, W)). Target ids outside 0..C-1 (void) are ignored; a prediction
    outside 0..C-1 is a ValueError (dropping it would silently inflate every score)."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from label shape {target.shape}")
    pred = pred.ravel().astype(np.int64)
    target = target.ravel().astype(np.int64)
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        bad = pred[(pred < 0) | (pred >= num_classes)]
        raise ValueError(f"predicted class id {int(bad[0])} out of range 0..{num_classes - 1}")
    keep = (target >= 0) & (target < num_classes)
    counts = np.bincount(target[keep] * num_classes + pred[keep], minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes)


def scores(cm: np.ndarray, class_names=None, missed=None) -> dict:
    """IoU per class (NaN where a class is absent from both gt and prediction), mIoU over the
    classes with a defined IoU, pixel accuracy and mean class accuracy. All in 0..1.
    missed: optional (C,) pixels of each ground-truth class predicted as none of the C classes
    (void after a label map): errors outside the matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    gt = cm.sum(1) + (0 if missed is None else np.asarray(missed, np.float64))
    pred = cm.sum(0)
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    total = gt.sum()
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(tp))]
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        "pixel_acc": float(tp.sum() / total) if total else 0.0,
        "mean_class_acc": float(np.nanmean(acc)) if np.isfinite(acc).any() else 0.0,
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
    }
