"""Checkpoints: a state dict plus the model's metadata, loaded with ``weights_only=True``.

Layout (a plain dict, so ``torch.load(weights_only=True)`` accepts it)::

    {"format": "drivesegrt-checkpoint", "version": 1,
     "meta": ModelMeta.to_dict(), "state_dict": {...},
     "epoch": int, "val_miou": float, "train": {...optional resume state...}}
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..meta import ModelMeta

FORMAT = "drivesegrt-checkpoint"


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, meta: ModelMeta,
                    **extra) -> None:
    """Write atomically (tmp file + rename) so a crash never leaves a half checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"format": FORMAT, "version": 1, "meta": meta.to_dict(), "state_dict": state, **extra}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict; ValueError/FileNotFoundError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt/foreign files
        # Only torch's first sentence: the rest advises weights_only=False, i.e. running
        # whatever code the file holds, which is never the fix for a file given by mistake.
        reason = (str(e).splitlines() or [""])[0].split(". ")[0].rstrip(".")
        raise ValueError(f"{path}: not a readable drivesegrt checkpoint ({type(e).__name__}: "
                         f"{reason})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path}: not a drivesegrt checkpoint (no '{FORMAT}' format tag)")
    return obj


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, ModelMeta]:
    """Build the model named in the checkpoint's metadata and load its weights (eval mode)."""
    from . import build_model

    obj = read_checkpoint(path)
    meta = ModelMeta.from_dict(obj["meta"], where=str(path))
    model = build_model(meta.arch, meta.num_classes, **meta.arch_kwargs)
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"{path}: weights do not match architecture {meta.arch!r} "
                         f"with {meta.num_classes} classes ({first})") from None
    return model.to(device).eval(), meta
