"""Joint image+label augmentation (numpy/cv2). Labels use nearest interpolation and
pad with the ignore index, so image and label stay aligned pixel for pixel."""
from __future__ import annotations

import cv2
import numpy as np


class TrainTransform:
    """Random scale, random crop (padded with ignore), horizontal flip, photometric jitter.

    Deterministic given the ``rng`` (numpy Generator) passed per call or seeded at init. An
    optional ``soft`` (H, W, C) float32 map (a teacher's logits at the image's size) takes the
    same geometric steps as the image (bilinear, padded with 0) and is returned third.
    """

    def __init__(self, crop_hw: tuple[int, int], scale=(0.75, 1.75), flip: bool = True,
                 jitter: float = 0.25, ignore_index: int = 11, seed: int = 0):
        self.crop_hw = tuple(crop_hw)
        self.scale = tuple(scale)
        self.flip = flip
        self.jitter = jitter
        self.ignore_index = ignore_index
        self.rng = np.random.default_rng(seed)

    def __call__(self, img: np.ndarray, lab: np.ndarray, rng=None, soft=None):
        rng = rng or self.rng
        s = rng.uniform(*self.scale)
        h, w = lab.shape
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        lab = cv2.resize(lab, (nw, nh), interpolation=cv2.INTER_NEAREST)
        if soft is not None:
            soft = cv2.resize(soft, (nw, nh), interpolation=cv2.INTER_LINEAR)
        ch, cw = self.crop_hw
        ph, pw = max(0, ch - nh), max(0, cw - nw)
        if ph or pw:
            img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
            lab = cv2.copyMakeBorder(lab, 0, ph, 0, pw, cv2.BORDER_CONSTANT,
                                     value=self.ignore_index)
            if soft is not None:
                soft = np.pad(soft, ((0, ph), (0, pw), (0, 0)))
        y = int(rng.integers(0, img.shape[0] - ch + 1))
        x = int(rng.integers(0, img.shape[1] - cw + 1))
        img, lab = img[y:y + ch, x:x + cw], lab[y:y + ch, x:x + cw]
        if soft is not None:
            soft = soft[y:y + ch, x:x + cw]
        if self.flip and rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
            if soft is not None:
                soft = soft[:, ::-1]
        if self.jitter > 0:
            img = photometric_jitter(img, self.jitter, rng)
        if soft is not None:
            return (np.ascontiguousarray(img), np.ascontiguousarray(lab),
                    np.ascontiguousarray(soft))
        return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def photometric_jitter(img: np.ndarray, amount: float, rng) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in [1-amount, 1+amount]."""
    f = img.astype(np.float32)
    f *= rng.uniform(1 - amount, 1 + amount)                            # brightness
    mean = f.mean()
    f = (f - mean) * rng.uniform(1 - amount, 1 + amount) + mean         # contrast
    gray = f.mean(axis=2, keepdims=True)
    f = (f - gray) * rng.uniform(1 - amount, 1 + amount) + gray         # saturation
    return np.clip(f, 0, 255).astype(np.uint8)


class EvalTransform:
    """Identity (evaluation runs at the image's own size through the pipeline's pre/post)."""

    def __call__(self, img, lab, rng=None):
        return img, lab
