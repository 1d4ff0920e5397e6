"""Confusion matrix and the scores derived from it (per-class IoU, mIoU, pixel/class accuracy)."""
from __future__ import annotations

import numpy as np


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = ground truth, cols = prediction; target ids outside
    0..C-1 (void) are ignored."""
    pred = np.asarray(pred).ravel().astype(np.int64)
    target = np.asarray(target).ravel().astype(np.int64)
    keep = (target >= 0) & (target < num_classes)
    idx = target[keep] * (num_classes + 1) + np.clip(pred[keep], 0, num_classes)
    # a prediction outside 0..C-1 lands in an overflow column that is dropped below
    counts = np.bincount(idx, minlength=num_classes * (num_classes + 1))
    return counts[: num_classes * (num_classes + 1)].reshape(num_classes, num_classes + 1)[:, :num_classes]


def scores(cm: np.ndarray, class_names=None) -> dict:
    """IoU per class (NaN where a class is absent from both gt and prediction), mIoU over the
    classes with a defined IoU, pixel accuracy and mean class accuracy. All in 0..1."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    gt = cm.sum(1)
    pred = cm.sum(0)
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    total = cm.sum()
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(tp))]
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        "pixel_acc": float(tp.sum() / total) if total else 0.0,
        "mean_class_acc": float(np.nanmean(acc)) if np.isfinite(acc).any() else 0.0,
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
    }
