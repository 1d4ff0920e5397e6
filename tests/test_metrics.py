"""Confusion matrix and scores on hand-made inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from drivesegrt.train.metrics import confusion_matrix, scores


def test_confusion_matrix_counts_rows_gt_cols_pred_and_skips_void():
    target = np.array([[0, 0, 1, 1], [2, 2, 11, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0],
                                       [0, 2, 0],
                                       [1, 0, 1]])


def test_confusion_matrix_rejects_out_of_range_predictions():
    target = np.zeros((2, 2), np.uint8)
    for bad in (3, 255, -1):
        pred = np.array([[0, 1], [2, bad]])
        with pytest.raises(ValueError, match=f"predicted class id {bad} out of range 0..2"):
            confusion_matrix(pred, target, 3)


def test_confusion_matrix_shape_mismatch():
    with pytest.raises(ValueError, match="differs from label shape"):
        confusion_matrix(np.zeros((2, 3)), np.zeros((3, 2)), 3)


def test_scores_by_hand():
    cm = np.array([[3, 1, 0],
                   [1, 4, 1],
                   [0, 0, 0]])          # class 2: absent from gt, predicted once
    s = scores(cm, ["a", "b", "c"])
    # IoU a = 3 / (4 + 4 - 3) = 0.6; b = 4 / (6 + 5 - 4) = 4/7; c = 0 / (0 + 1 - 0) = 0
    assert s["per_class_iou"] == pytest.approx({"a": 0.6, "b": 4 / 7, "c": 0.0})
    assert s["miou"] == pytest.approx((0.6 + 4 / 7 + 0) / 3)
    assert s["pixel_acc"] == pytest.approx(7 / 10)
    # class accuracy over classes present in gt: a 3/4, b 4/6
    assert s["mean_class_acc"] == pytest.approx((3 / 4 + 4 / 6) / 2)


def test_scores_class_absent_from_gt_and_prediction_is_left_out():
    cm = np.array([[5, 0, 0],
                   [0, 0, 0],
                   [1, 0, 2]])
    s = scores(cm)
    assert s["per_class_iou"]["1"] is None           # undefined, JSON null
    assert s["per_class_iou"]["0"] == pytest.approx(5 / 6)
    assert s["per_class_iou"]["2"] == pytest.approx(2 / 3)
    assert s["miou"] == pytest.approx((5 / 6 + 2 / 3) / 2)
    assert s["mean_class_acc"] == pytest.approx((1 + 2 / 3) / 2)
    assert all(isinstance(v, float) for k, v in s.items() if k != "per_class_iou")


def test_scores_empty_and_perfect():
    assert scores(np.zeros((2, 2)))["miou"] == 0.0
    perfect = scores(np.diag([4, 7, 1]))
    assert perfect["miou"] == perfect["pixel_acc"] == perfect["mean_class_acc"] == 1.0


def test_matrix_from_pixels_matches_hand_scores():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, (30, 40))
    pred = np.where(rng.random((30, 40)) < 0.8, target, rng.integers(0, 4, (30, 40)))
    s = scores(confusion_matrix(pred, target, 4))
    assert s["pixel_acc"] == pytest.approx(float((pred == target).mean()))
    for c in range(4):
        inter = np.sum((pred == c) & (target == c))
        union = np.sum((pred == c) | (target == c))
        assert s["per_class_iou"][str(c)] == pytest.approx(inter / union)
    assert not math.isnan(s["miou"])
