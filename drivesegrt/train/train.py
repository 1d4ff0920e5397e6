"""``drivesegrt train --config F``: config-driven training with val-based checkpoint selection.

Reads top to bottom: main(args) -> build data, model, criterion, optimizer -> for each epoch
train_one_epoch, evaluate on val, save last (resumable) and best (by val mIoU) checkpoints.
"""
from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import load_dataclass, to_dict
from ..data.camvid import SegmentationDataset
from ..data.class_weights import median_frequency_weights
from ..data.splits import open_split
from ..data.transforms import TrainTransform
from ..meta import ModelMeta
from ..models import build_model
from ..models.checkpoint import read_checkpoint, save_checkpoint
from ..preprocess import normalize, preprocess
from .distill import kd_loss, soft_map, teacher_logits
from .losses import SegLoss
from .metrics import confusion_matrix, scores


@dataclass(frozen=True)
class ModelSection:
    name: str = "mobileseg"
    kwargs: dict = field(default_factory=dict)
    pretrained_backbone: Optional[str] = None
    # "cityscapes": start from the authors' ESPNetv2 Cityscapes checkpoint ``init_weights``
    # (espnetv2 only; the classifier re-mapped to the dataset's classes through the label map)
    init: Optional[Literal["cityscapes"]] = None
    init_weights: Optional[str] = None
    # parameters under these module prefixes stay fixed (e.g. the full-resolution encoder
    # levels: no gradient flows below them, which saves most of their backward cost)
    freeze: tuple[str, ...] = ()
    # (H, W) the model is deployed and validated at; default data.crop (train on smaller crops)
    input_size: Optional[tuple[int, int]] = None

    def validate(self):
        if (self.init is None) != (self.init_weights is None):
            raise ValueError("config keys 'model.init' and 'model.init_weights' go together")
        if self.init == "cityscapes" and self.name != "espnetv2":
            raise ValueError(f"config key 'model.init': 'cityscapes' needs model.name "
                             f"'espnetv2', got {self.name!r}")
        if self.input_size is not None and min(self.input_size) < 8:
            raise ValueError(f"config key 'model.input_size': must be >= 8, got "
                             f"{self.input_size}")


@dataclass(frozen=True)
class DataSection:
    dataset: Literal["camvid", "cityscapes"] = "camvid"
    root: str = "../shared/data/camvid"
    train_split: str = "train"
    val_split: str = "val"
    crop: tuple[int, int] = (360, 480)
    scale: tuple[float, float] = (0.75, 1.75)
    flip: bool = True
    jitter: float = 0.25
    max_train_images: Optional[int] = None
    max_val_images: Optional[int] = None


@dataclass(frozen=True)
class OptimSection:
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    poly_power: float = 0.9
    warmup_epochs: int = 0


@dataclass(frozen=True)
class LossSection:
    class_weights: Optional[Literal["median_frequency", "none"]] = "median_frequency"
    class_weight_power: float = 1.0      # weights**power; 0.5 softens median-frequency
    ce_weight: float = 1.0
    dice_weight: float = 0.0
    label_stride: int = 1            # take the loss on every s-th label pixel (speed on CPU)


@dataclass(frozen=True)
class DistillSection:
    # a trained model of the same label set (bundled name or .pt) whose class probabilities the
    # student also learns (KL term); None = plain supervised training
    teacher: Optional[str] = None
    weight: float = 1.0
    temperature: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    distill: DistillSection = field(default_factory=DistillSection)
    epochs: int = 100
    batch_size: int = 8
    val_every: int = 1
    seed: int = 0
    out_dir: str = "runs/train"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True                 # CUDA only
    channels_last: bool = True       # CUDA only
    max_steps: Optional[int] = None  # stop after this many optimizer steps (smoke tests)
    threads: int = 0                 # torch CPU threads; 0 = torch default

    def validate(self):
        if self.epochs < 1 or self.batch_size < 1 or self.val_every < 1:
            raise ValueError("config keys 'epochs', 'batch_size', 'val_every' must be >= 1")


def add_arguments(p):
    p.add_argument("--config", required=True, help="training config YAML (see configs/)")
    p.add_argument("--out", help="output folder (overrides out_dir)")
    p.add_argument("--data", help="dataset root (overrides data.root)")
    p.add_argument("--epochs", type=int, help="overrides epochs")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_datasets(cfg: TrainConfig):
    train_split = open_split(cfg.data.root, cfg.data.train_split, cfg.data.dataset)
    val_split = open_split(cfg.data.root, cfg.data.val_split, cfg.data.dataset)
    labels = train_split.labels
    train_pairs = train_split.pairs[: cfg.data.max_train_images]
    val_pairs = val_split.pairs[: cfg.data.max_val_images]
    transform = TrainTransform(cfg.data.crop, cfg.data.scale, cfg.data.flip, cfg.data.jitter,
                               labels.ignore_index, cfg.seed)
    train = SegmentationDataset(train_pairs, labels, transform, label_fn=train_split.read_label)
    val = SegmentationDataset(val_pairs, labels, None, label_fn=val_split.read_label)
    return train, val, labels


def init_from_cityscapes_checkpoint(model, path: str, labels) -> None:
    """The authors' Cityscapes ESPNetv2 weights, the classifier re-mapped to ``labels`` through
    the one cityscapes19 -> ``labels`` map (identity when training on Cityscapes)."""
    from ..labels import CITYSCAPES19, maps_between
    from ..models.espnetv2 import ESPNetv2, init_from_cityscapes

    if not isinstance(model, ESPNetv2):
        raise ValueError("config key 'model.init': 'cityscapes' needs an espnetv2 model")
    if labels.name == CITYSCAPES19.name:
        sources = [[i] for i in range(labels.num_classes)]
    else:
        found = maps_between(CITYSCAPES19.name, labels.name)
        if len(found) != 1:
            raise ValueError(f"config key 'model.init': no label map from cityscapes19 to "
                             f"{labels.name}")
        sources = found[0].sources_of()
    init_from_cityscapes(model, path, sources)
    print(f"initialised from {path} (classifier: {labels.name} rows from their cityscapes19 "
          f"classes)")


def freeze(model, prefixes) -> None:
    """Fix the parameters under each module prefix; a prefix that names nothing is an error."""
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        hit = [n for n in names if n.startswith(prefix + ".")]
        if not hit:
            raise ValueError(f"config key 'model.freeze': {prefix!r} names no parameters")
    for n, p in model.named_parameters():
        if any(n.startswith(prefix + ".") for prefix in prefixes):
            p.requires_grad_(False)


def build_criterion(cfg: TrainConfig, train: SegmentationDataset, labels):
    weights = None
    if cfg.loss.class_weights == "median_frequency":
        w = median_frequency_weights([p for _, p in train.pairs], labels.num_classes,
                                     labels.ignore_index, read_fn=train.label_fn)
        weights = (w ** cfg.loss.class_weight_power).tolist()
    return SegLoss(weights, labels.ignore_index, cfg.loss.ce_weight, cfg.loss.dice_weight,
                   cfg.loss.label_stride), weights


def build_optimizer(cfg: TrainConfig, model):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optim.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr)


def poly_lr(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    warm = cfg.optim.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.optim.lr * (step + 1) / warm
    frac = min(1.0, (step - warm) / max(1, total - warm))
    return cfg.optim.lr * (1 - frac) ** cfg.optim.poly_power


def batches(dataset: SegmentationDataset, batch_size: int, seed: int, teacher=None):
    """Shuffled (images (N,H,W,3) uint8, labels (N,H,W) uint8, teacher (N,H,W,C) float32 or
    None) batches; augmentation of the next batch runs in a thread (cv2 releases the GIL) while
    the current one trains. ``teacher``: per-image logits (distill.teacher_logits), augmented
    with their image."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(dataset))
    chunks = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    if not chunks:
        chunks = [order]
    seeds = rng.integers(0, 2**31, size=len(order))

    def make(chunk):
        items = []
        for i in chunk:
            img, lab = dataset.load(int(i))
            soft = None if teacher is None else soft_map(teacher[i], lab.shape)
            items.append(dataset.transform(img, lab, np.random.default_rng(int(seeds[i])),
                                           soft=soft))
        return (np.stack([t[0] for t in items]), np.stack([t[1] for t in items]),
                None if teacher is None else np.stack([t[2] for t in items]))

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(make, chunks[0])
        for k in range(len(chunks)):
            result = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(make, chunks[k + 1])
            yield result


def to_device(images, labels, meta: ModelMeta, device, channels_last: bool):
    x = torch.from_numpy(normalize(images, meta.mean, meta.std)).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    return x, y


def train_one_epoch(model, criterion, optimizer, dataset, cfg, meta, device, epoch, state,
                    teacher=None):
    model.train()
    use_amp = cfg.amp and device.type == "cuda"
    cl = cfg.channels_last and device.type == "cuda"
    steps_per_epoch = max(1, len(dataset) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    losses = []
    bar = tqdm(batches(dataset, cfg.batch_size, cfg.seed + epoch, teacher),
               total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               dynamic_ncols=True)
    stride = cfg.loss.label_stride
    for images, labels, soft in bar:
        lr = poly_lr(cfg, state["step"], total, steps_per_epoch)
        for g in optimizer.param_groups:
            g["lr"] = lr
        x, y = to_device(images, labels, meta, device, cl)
        with torch.autocast(device.type, enabled=use_amp, dtype=torch.float16):
            logits = model(x)
            loss = criterion(logits, y)
            if soft is not None:
                t = torch.from_numpy(soft[:, ::stride, ::stride]).permute(0, 3, 1, 2).to(device)
                loss = loss + cfg.distill.weight * kd_loss(
                    logits.float(), t, y[:, ::stride, ::stride], criterion.ignore_index,
                    cfg.distill.temperature)
        optimizer.zero_grad(set_to_none=True)
        state["scaler"].scale(loss).backward()
        state["scaler"].step(optimizer)
        state["scaler"].update()
        state["step"] += 1
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{lr:.2e}",
                        val_miou=f"{state['best_miou']:.3f}")
        if cfg.max_steps and state["step"] >= cfg.max_steps:
            break
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def evaluate(model, dataset, meta, device, batch_size: int = 4) -> dict:
    """Val mIoU as the pipeline scores: images through the pipeline's ``preprocess`` (stretch to
    the model's input size), logits bilinearly upsampled to label size, argmax (the arithmetic
    of the pipeline's 'linear' filter mode)."""
    model.eval()
    cm = np.zeros((meta.num_classes, meta.num_classes), np.int64)
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        x = np.concatenate([preprocess(a, meta.input_size, meta.mean, meta.std)[0]
                            for a, _ in items])                       # (N, 3, h, w)
        x = torch.from_numpy(x).to(device)
        logits = model(x)
        logits = F.interpolate(logits.float(), size=items[0][1].shape, mode="bilinear",
                               align_corners=False)
        pred = logits.argmax(1).cpu().numpy()
        for p, (_, lab) in zip(pred, items):
            cm += confusion_matrix(p, lab, meta.num_classes)
    return scores(cm, meta.class_names)


def main(args) -> int:
    overrides = {"out_dir": args.out, "data.root": args.data, "epochs": args.epochs,
                 "max_steps": args.max_steps, "device": args.device}
    cfg = load_dataclass(TrainConfig, args.config, overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device == "cuda" or
                          (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("config key 'device': cuda requested but no CUDA device is available")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)

    train, val, labels = build_datasets(cfg)
    model = build_model(cfg.model.name, labels.num_classes, **cfg.model.kwargs)
    meta = ModelMeta.for_label_set(cfg.model.name, labels, arch_kwargs=dict(cfg.model.kwargs),
                                   input_size=tuple(cfg.model.input_size or cfg.data.crop))
    if cfg.model.init == "cityscapes" and not args.resume:
        init_from_cityscapes_checkpoint(model, cfg.model.init_weights, labels)
    freeze(model, cfg.model.freeze)
    if cfg.model.pretrained_backbone and not args.resume:
        from ..models.realtime import load_imagenet_backbone
        if not hasattr(model, "backbone"):
            raise ValueError(f"model.pretrained_backbone: {cfg.model.name!r} has no backbone")
        load_imagenet_backbone(model.backbone, cfg.model.pretrained_backbone)
    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    teacher = None
    if cfg.distill.teacher:
        t0 = time.time()
        teacher = teacher_logits(cfg.distill.teacher, train, labels)
        print(f"teacher {cfg.distill.teacher}: logits of {len(teacher)} training images in "
              f"{time.time() - t0:.0f} s")
    criterion, weights = build_criterion(cfg, train, labels)
    criterion.to(device)
    optimizer = build_optimizer(cfg, model)
    state = {"step": 0, "best_miou": 0.0,
             "scaler": torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")}
    start_epoch = 0
    if args.resume:
        last = out / "last.pt"
        ckpt = read_checkpoint(last)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["train"]["optimizer"])
        start_epoch = int(ckpt["epoch"])
        state["step"] = int(ckpt["train"]["step"])
        state["best_miou"] = float(ckpt["train"]["best_miou"])
        print(f"resumed from {last} at epoch {start_epoch}, step {state['step']}")
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    log = (out / "log.jsonl").open("a")
    print(f"training {cfg.model.name} on {len(train)} {cfg.data.dataset} images "
          f"(val {len(val)}), {cfg.epochs} epochs, device {device}, class weights "
          f"{'none' if weights is None else [round(w, 3) for w in weights]}")
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        loss = train_one_epoch(model, criterion, optimizer, train, cfg, meta, device, epoch, state,
                               teacher)
        record = {"epoch": epoch + 1, "step": state["step"], "loss": loss,
                  "seconds": round(time.time() - t0, 1)}
        last_epoch = (epoch + 1 == cfg.epochs or
                      (cfg.max_steps and state["step"] >= cfg.max_steps))
        if (epoch + 1) % cfg.val_every == 0 or last_epoch:
            s = scores_val = evaluate(model, val, meta, device)
            record.update(val_miou=s["miou"], val_pixel_acc=s["pixel_acc"])
            if scores_val["miou"] >= state["best_miou"]:
                state["best_miou"] = scores_val["miou"]
                save_checkpoint(out / "best.pt", model, meta, epoch=epoch + 1,
                                val_miou=scores_val["miou"])
                record["best"] = True
        save_checkpoint(out / "last.pt", model, meta, epoch=epoch + 1,
                        train={"optimizer": optimizer.state_dict(), "step": state["step"],
                               "best_miou": state["best_miou"]})
        log.write(json.dumps(record) + "\n")
        log.flush()
        tqdm.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in record.items()))
        if last_epoch:
            break
    log.close()
    print(f"best val mIoU {state['best_miou']:.4f}; checkpoint {out / 'best.pt'}")
    return 0
