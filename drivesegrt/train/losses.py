"""Pixel-wise losses: weighted cross entropy with ignore index, soft dice, and their weighted sum."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def cross_entropy(logits, target, weight=None, ignore_index: int = 255):
    """logits (N,C,H,W) float, target (N,H,W) long -> scalar; mean over non-ignored pixels,
    weighted as torch does (sum of w[y]*nll / sum of w[y])."""
    return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index)


def soft_dice_loss(logits, target, ignore_index: int = 255, eps: float = 1.0):
    """1 - mean over classes present in the batch or predicted of
    (2*sum(p*g) + eps) / (sum(p) + sum(g) + eps), ignored pixels excluded. logits (N,C,H,W)."""
    n, c = logits.shape[:2]
    valid = (target != ignore_index)                                # (N,H,W)
    prob = logits.softmax(1) * valid.unsqueeze(1)                   # (N,C,H,W)
    onehot = F.one_hot(target.clamp(0, c - 1) * valid, c).permute(0, 3, 1, 2)
    onehot = onehot.to(prob.dtype) * valid.unsqueeze(1)
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)                        # (C,)
    return 1 - dice.mean()


class SegLoss(nn.Module):
    """ce_weight * CE(class weights, ignore) + dice_weight * soft dice."""

    def __init__(self, class_weights=None, ignore_index: int = 255, ce_weight: float = 1.0,
                 dice_weight: float = 0.0, label_stride: int = 1):
        super().__init__()
        w = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", w)
        self.ignore_index = ignore_index
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.label_stride = label_stride

    def forward(self, logits, target):
        """logits (N,C,h,w) at any resolution; target (N,H,W). With label_stride s the loss is
        taken on target[:, ::s, ::s] (4x cheaper at s=2) with logits resized to match."""
        if self.label_stride > 1:
            target = target[:, ::self.label_stride, ::self.label_stride]
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear",
                                   align_corners=False)
        loss = logits.new_zeros(())
        if self.ce_weight:
            loss = loss + self.ce_weight * cross_entropy(logits, target, self.class_weights,
                                                         self.ignore_index)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, self.ignore_index)
        return loss
