"""``drivesegrt models``: the bundled models by name, with what they are and how they score.

For each name in ``infer.build.BUNDLED``: architecture, label set and classes, input size,
parameters, GFLOPs at that input size (counted on the torch model), and the scores from the
JSON that ``drivesegrt eval --json`` wrote next to the weights (a model of another label set is
scored through a label map: "zero-shot").
"""
from __future__ import annotations

import json
from pathlib import Path

from ..infer.build import BUNDLED, DEFAULT_MODEL
from ..models.checkpoint import load_model
from .probe import model_gflops


def add_arguments(p) -> None:
    p.add_argument("--json", metavar="OUT", help="also write the table as JSON")


def describe(name: str) -> dict:
    """One bundled model's row: metadata from its checkpoint, scores from its eval JSON."""
    files = BUNDLED[name]
    model, meta = load_model(files["torch"])
    scores = read_scores(files["scores"])
    return {"name": name, "default": name == DEFAULT_MODEL, "arch": meta.arch,
            "arch_kwargs": meta.arch_kwargs, "label_set": meta.label_set,
            "classes": list(meta.class_names), "input_size": list(meta.input_size),
            "params": sum(p.numel() for p in model.parameters()),
            "gflops": model_gflops(model, meta.input_size),
            "files": {k: Path(v).name for k, v in files.items()}, "scores": scores}


def read_scores(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"bundled scores not found: {path}")
    try:
        s = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return {k: s[k] for k in ("dataset", "split", "images", "miou", "per_class_iou",
                              "label_map", "backend", "precision")}


def score_line(s: dict) -> str:
    how = f"zero-shot through {s['label_map']}" if s["label_map"] else "trained on it"
    return (f"{s['dataset']} {s['split']} mIoU {100 * s['miou']:.1f} ({s['images']} images, "
            f"{how}; {s['backend']} {s['precision']})")


def main(args) -> int:
    rows = [describe(name) for name in BUNDLED]
    for r in rows:
        kw = ", ".join(f"{k}={v}" for k, v in r["arch_kwargs"].items())
        print(f"{r['name']}{' (default)' if r['default'] else ''}: {r['arch']} ({kw})")
        print(f"  classes      {r['label_set']}, {len(r['classes'])}: {', '.join(r['classes'])}")
        print(f"  input        {r['input_size'][0]}x{r['input_size'][1]} (HxW)")
        print(f"  params       {r['params'] / 1e6:.2f} M")
        print(f"  GFLOPs       {r['gflops']:.2f} at the input size")
        print(f"  score        {score_line(r['scores'])}")
        print(f"  files        {', '.join(r['files'].values())}")
    if args.json:
        from ..files import write_json

        write_json(args.json, {"models": rows})
        print(f"wrote {args.json}")
    return 0
