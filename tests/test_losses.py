"""Losses against values computed by hand (probabilities chosen so every log is a multiple of ln 2)."""
from __future__ import annotations

import math

import pytest
import torch

from drivesegrt.train.losses import SegLoss, cross_entropy, soft_dice_loss

LN2 = math.log(2.0)


def logits_from_probs(probs):
    """(H, W, C) per-pixel probabilities -> (1, C, H, W) logits whose softmax is exactly them."""
    return torch.tensor(probs, dtype=torch.float64).log().permute(2, 0, 1).unsqueeze(0)


# 1x3x2x2: per pixel softmax and target
#   (0,0) [1/2, 1/4, 1/4] y=0 -> -ln p = ln 2
#   (0,1) [1/2, 1/4, 1/4] y=1 -> 2 ln 2
#   (1,0) [3/4, 1/8, 1/8] y=2 -> 3 ln 2
#   (1,1) [1/3, 1/3, 1/3] y=255 (ignored)
LOGITS = logits_from_probs([[[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]],
                            [[0.75, 0.125, 0.125], [1 / 3, 1 / 3, 1 / 3]]])
TARGET = torch.tensor([[[0, 1], [2, 255]]])


def test_cross_entropy_ignore_index():
    # mean over the 3 labelled pixels: (1 + 2 + 3) ln2 / 3
    assert cross_entropy(LOGITS, TARGET).item() == pytest.approx(2 * LN2, rel=1e-12)


def test_cross_entropy_class_weights():
    # weights 1, 2, 3: sum w_y * nll / sum w_y = (1*1 + 2*2 + 3*3) ln2 / (1 + 2 + 3)
    w = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert cross_entropy(LOGITS, TARGET, w).item() == pytest.approx(14 / 6 * LN2, rel=1e-12)


def test_cross_entropy_other_ignore_index_counts_255_as_error():
    with pytest.raises((IndexError, RuntimeError)):
        cross_entropy(LOGITS, TARGET, ignore_index=11)   # 255 is then an out-of-range class


def test_soft_dice_hand_example():
    # 2 classes, 3 pixels: p0 = [3/4, 1/4] y=0; p1 = [1/4, 3/4] y=0; p2 y=ignored.
    # class 0: inter = 3/4 + 1/4 = 1, sum p = 1, sum g = 2 -> (2*1 + 1) / (3 + 1) = 3/4
    # class 1: inter = 0, sum p = 1, sum g = 0           -> (0 + 1) / (1 + 1)     = 1/2
    # loss = 1 - (3/4 + 1/2) / 2 = 3/8
    logits = logits_from_probs([[[0.75, 0.25], [0.25, 0.75], [0.9, 0.1]]])
    target = torch.tensor([[[0, 0, 255]]])
    assert soft_dice_loss(logits, target, eps=1.0).item() == pytest.approx(3 / 8, rel=1e-12)
    # eps -> 0: class 0 dice 2/3, class 1 dice 0 -> 1 - 1/3
    assert soft_dice_loss(logits, target, eps=0.0).item() == pytest.approx(2 / 3, rel=1e-12)


def test_soft_dice_perfect_prediction_is_near_zero():
    target = torch.tensor([[[0, 1], [2, 1]]])
    logits = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).double() * 50
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-9)


def test_weighted_sum():
    w = [1.0, 2.0, 3.0]
    loss = SegLoss(w, ignore_index=255, ce_weight=0.5, dice_weight=2.0).double()
    expected = (0.5 * cross_entropy(LOGITS, TARGET, torch.tensor(w, dtype=torch.float64))
                + 2.0 * soft_dice_loss(LOGITS, TARGET))
    assert loss(LOGITS, TARGET).item() == pytest.approx(expected.item(), rel=1e-12)
    assert SegLoss(w, 255, ce_weight=0.0, dice_weight=1.0).double()(LOGITS, TARGET).item() == \
        pytest.approx(soft_dice_loss(LOGITS, TARGET).item(), rel=1e-12)


def test_label_stride_takes_every_second_label_pixel():
    # 4x4 target whose [::2, ::2] sub-grid is TARGET; other pixels carry class 0, which the
    # loss must not see (with stride 1 they would change the value).
    full = torch.zeros(1, 4, 4, dtype=torch.long)
    full[:, ::2, ::2] = TARGET
    loss = SegLoss(None, ignore_index=255, label_stride=2)
    assert loss(LOGITS, full).item() == pytest.approx(2 * LN2, rel=1e-12)


def test_low_resolution_logits_are_upsampled_to_the_labels():
    # (1,3,1,1) logits -> every pixel of the 2x2 target sees [1/2, 1/4, 1/4]
    logits = LOGITS[:, :, :1, :1]
    target = torch.tensor([[[0, 1], [1, 255]]])
    loss = SegLoss(None, ignore_index=255)(logits, target)
    assert loss.item() == pytest.approx((1 + 2 + 2) / 3 * LN2, rel=1e-12)


def test_loss_backpropagates():
    logits = LOGITS.clone().requires_grad_(True)
    SegLoss([1.0, 2.0, 3.0], 255, dice_weight=1.0).double()(logits, TARGET).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[0, :, 1, 1].abs().max() == 0     # the ignored pixel gets no gradient


def test_kd_loss_is_zero_when_the_student_matches_its_teacher():
    from drivesegrt.train.distill import kd_loss

    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 5, 8, 12, generator=g)
    target = torch.randint(0, 5, (2, 8, 12), generator=g)
    assert kd_loss(teacher.clone(), teacher, target, 255).item() == pytest.approx(0, abs=1e-6)
    other = torch.randn(2, 5, 8, 12, generator=g)
    assert kd_loss(other, teacher, target, 255).item() > 0.1
    # ignored pixels do not count: disagreement only there costs nothing
    student = teacher.clone()
    student[:, :, :4] = other[:, :, :4]
    target[:, :4] = 255
    assert kd_loss(student, teacher, target, 255).item() == pytest.approx(0, abs=1e-6)
    # a low-resolution student is compared on the teacher's grid
    assert kd_loss(teacher[:, :, ::2, ::2], teacher, target, 255).item() < 0.5
