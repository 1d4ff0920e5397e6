"""Knowledge distillation: a trained teacher's class probabilities as extra targets.

The teacher (any drivesegrt torch checkpoint of the same label set, e.g. the bundled
Cityscapes-initialised ``camvid-espnetv2``) runs once per training image, on the image as
the pipeline feeds it; its logits are kept at their own (low) resolution in float16. Each
training step then upsamples them to the image, and the joint augmentation moves them with
the image and label (``TrainTransform(..., soft=...)``), so teacher and student see the same
pixels without a teacher forward per step.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..infer.build import model_path
from ..models.checkpoint import load_model
from ..preprocess import preprocess


@torch.no_grad()
def teacher_logits(teacher: str, dataset, labels) -> list[np.ndarray]:
    """(C, h, w) float16 logits of ``teacher`` (bundled name or .pt) for every image of
    ``dataset``, in dataset order."""
    model, meta = load_model(model_path(teacher, "torch"))
    if tuple(meta.class_names) != tuple(labels.class_names):
        raise ValueError(f"config key 'distill.teacher': {teacher!r} predicts "
                         f"{meta.label_set}, the training data is {labels.name}")
    model.eval()
    out = []
    for i in range(len(dataset)):
        img, _ = dataset.load(i)
        x, _ = preprocess(img, meta.input_size, meta.mean, meta.std)
        out.append(model(torch.from_numpy(x))[0].to(torch.float16).numpy())
    return out


def soft_map(logits: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(C, h, w) teacher logits -> (H, W, C) float32 at the image's size (bilinear, as the
    pipeline's 'linear' upsampling)."""
    t = torch.from_numpy(logits.astype(np.float32))[None]
    t = F.interpolate(t, size=size_hw, mode="bilinear", align_corners=False)
    return t[0].permute(1, 2, 0).contiguous().numpy()


def kd_loss(student, teacher, target, ignore_index: int, temperature: float = 1.0):
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), mean over pixels whose label is not
    ``ignore_index`` (padding from the crop is ignore). student (N,C,h,w) at any resolution;
    teacher (N,C,H,W) and target (N,H,W) on the same grid."""
    if student.shape[-2:] != teacher.shape[-2:]:
        student = F.interpolate(student, size=teacher.shape[-2:], mode="bilinear",
                                align_corners=False)
    log_p = F.log_softmax(student / temperature, 1)
    q = F.softmax(teacher / temperature, 1)
    kl = (q * (torch.log(q.clamp_min(1e-8)) - log_p)).sum(1)     # (N, H, W)
    valid = target != ignore_index
    return kl[valid].mean() * temperature ** 2 if valid.any() else kl.sum() * 0
