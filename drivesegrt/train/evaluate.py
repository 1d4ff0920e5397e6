"""``drivesegrt eval``: score one or more models on a labelled dataset split.

Reads top to bottom: main(args) -> open the split -> load one Segmenter per (model, backend) ->
evaluate: every image goes through every Segmenter (the pipeline's own pre/post-processing, so
eval scores exactly the masks ``drivesegrt run`` writes) into a confusion matrix per entry ->
print one table, write JSON and confusion-matrix PNGs.

With several entries (models, backends, precisions) the first is the reference and the table adds
each entry's argmax agreement with it: the fraction of pixels given the identical class.

``--video`` treats the split as an ordered sequence (in name order): it adds per-frame mIoU and
the temporal stability figures of ``train/temporal.py`` (TC, flicker rate); ``--temporal SPEC``
(repeatable) scores each model once more per smoothing setting, so one command compares them.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.camvid import read_image
from ..data.splits import DATASETS, DatasetSplit, folder_split, open_split
from ..engines import BACKENDS
from ..files import write_json
from ..infer.build import (
    BUNDLED,
    DEFAULT_BACKEND,
    DEFAULT_MODEL,
    SELECTED_ON,
    make_segmenter,
    model_path,
    open_engine,
)
from ..infer.segmenter import Segmenter
from ..infer.temporal import TEMPORAL_SYNTAX, TemporalSpec, parse_temporal
from ..labels import LABEL_MAPS, LABEL_SETS, LabelMap, get_label_map, maps_between
from .metrics import confusion_matrix, scores
from .temporal import FlowWarp, TemporalScores, sequence_key, warp_labels


def add_arguments(p):
    p.add_argument("--model", action="append", metavar="NAME|PATH",
                   help="bundled model name, torch checkpoint or ONNX file; repeat to compare "
                        f"several (the first is the reference); default: the bundled "
                        f"{DEFAULT_MODEL!r}")
    p.add_argument("--backend", action="append", choices=list(BACKENDS),
                   help="once for all models or once per --model, in order (an ONNX file needs "
                        f"onnxruntime, openvino or tensorrt); default: {DEFAULT_BACKEND}")
    p.add_argument("--data", required=True, help="dataset root (CamVid SegNet layout or "
                                                 "Cityscapes leftImg8bit/gtFine); with --labels, "
                                                 "a folder of images")
    p.add_argument("--labels", metavar="DIR", help="a folder of single-channel label images "
                   "named like the images in --data (instead of a dataset layout and --split)")
    p.add_argument("--label-set", default="camvid11", choices=list(LABEL_SETS),
                   help="the class ids of --labels (default: camvid11; its void id is ignored)")
    p.add_argument("--split", default="test")
    p.add_argument("--dataset", default="auto", choices=DATASETS)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--filter", default="linear", choices=["linear", "point"],
                   help="upsampling of the model output to image size (as in run)")
    p.add_argument("--label-map", metavar="SOURCE-TARGET", choices=list(LABEL_MAPS),
                   help="score a model whose label set differs from the dataset's through this "
                        "map of its classes (default: the one map between the two sets, "
                        f"printed); allowed: {', '.join(LABEL_MAPS)}")
    p.add_argument("--max-images", type=int, help="score only the first N images")
    p.add_argument("--video", action="store_true",
                   help="the split is an ordered labelled sequence (name order): add per-frame "
                        "mIoU, temporal consistency (TC) and flicker rate")
    p.add_argument("--temporal", action="append", metavar="SPEC",
                   help=f"with --video: temporal smoothing ({TEMPORAL_SYNTAX}); repeat to score "
                        f"each model with each setting (default: none)")
    p.add_argument("--json", metavar="OUT", help="write the scores as JSON")
    p.add_argument("--confusion", metavar="OUT.png",
                   help="row-normalized confusion matrix image (with several models: "
                        "OUT-1.png, OUT-2.png, ... in --model order)")


@dataclass
class Entry:
    """One scored (model, backend) and its running totals."""
    path: Path
    backend: str
    temporal: TemporalSpec | None = None
    model: str = ""                         # as given: a bundled name or a path
    segmenter: Segmenter | None = None
    precision: str = "fp32"
    label_map: LabelMap | None = None       # model classes -> dataset classes
    cm: np.ndarray | None = None            # (C, C) int64, rows = ground truth
    missed: np.ndarray | None = None        # (C,) pixels of each class predicted as void
    agree: int = 0                          # pixels with the reference's class
    ms: list = field(default_factory=list)  # segmenter time per image
    frame_miou: list = field(default_factory=list)   # --video: per frame, 0..1
    stability: TemporalScores | None = None          # --video: TC and flicker

    @property
    def model_label(self) -> str:
        extra = "" if self.precision == "fp32" else f" {self.precision}"
        return f"{self.path.name} [{self.backend}{extra}]"

    @property
    def label(self) -> str:
        return self.model_label + ("" if self.temporal is None else f" {self.temporal}")


def main(args) -> int:
    split = (folder_split(args.data, args.labels, args.label_set) if args.labels
             else open_split(args.data, args.split, args.dataset))
    if args.max_images is not None:
        if args.max_images < 1:
            raise ValueError(f"--max-images must be >= 1, got {args.max_images}")
        split = DatasetSplit(split.name, split.split, split.pairs[: args.max_images],
                             split.labels, split.read_label)
    if args.temporal and not args.video:
        raise ValueError("--temporal needs --video (smoothing runs over an ordered sequence)")
    entries = plan_entries(args.model, args.backend, args.temporal)
    with ExitStack() as stack:
        engines = {}
        for e in entries:
            key = (e.path, e.backend)          # settings of one model share its engine
            if key not in engines:
                engines[key] = stack.enter_context(open_engine(e.path, e.backend, args.device))
            engine = engines[key]
            e.label_map = choose_label_map(engine.spec.meta.label_set, split.labels.name,
                                           args.label_map, e.path)
            e.segmenter = make_segmenter(engine, filter_mode=args.filter, temporal=e.temporal,
                                         remap=e.label_map and e.label_map.target)
            e.precision = engine.spec.precision
            check_classes(e, split)
            try:                            # output vs metadata, checked before scoring
                e.segmenter.warmup(1)
            except ValueError as err:
                raise ValueError(f"{e.path}: {err}") from None
        total = evaluate(entries, split, args.video)
    results = [result_dict(e, total, split, args.filter) for e in entries]
    print_table(entries, results, split, args.filter)
    note = selection_note(entries, split)
    if note:
        print(f"note: {note}")
        for r in results:
            r["note"] = note
    if args.json:
        write_json(args.json, results_json(results))
        print(f"wrote {args.json}")
    if args.confusion:
        for e, out in zip(entries, confusion_paths(args.confusion, len(entries))):
            save_confusion_png(e.cm, split.labels.class_names, out,
                               f"{e.label}: mIoU {100 * scores(e.cm)['miou']:.1f}%")
            print(f"wrote {out}")
    return 0


def plan_entries(models, backends, temporal=None) -> list[Entry]:
    """(model path, backend, smoothing) from the repeated --model/--backend/--temporal options:
    every model with every smoothing setting, in that order."""
    models = models or [None]
    if backends and len(backends) not in (1, len(models)):
        raise ValueError(f"{len(backends)} --backend values for {len(models)} --model values; "
                         f"give one for all or one per model")
    backends = backends or [DEFAULT_BACKEND]
    if len(backends) == 1:
        backends = backends * len(models)
    specs = [parse_temporal(t) for t in temporal or ["none"]]
    return [Entry(model_path(m, b), b, spec, str(m or DEFAULT_MODEL))
            for m, b in zip(models, backends) for spec in specs]


def selection_note(entries: list[Entry], split: DatasetSplit) -> str | None:
    """A line saying so when a bundled model is scored on the split it was chosen on."""
    chosen = [name for name, files in BUNDLED.items()
              if SELECTED_ON.get(name) == (split.name, split.split)
              and any(e.path in files.values() for e in entries)]
    if not chosen:
        return None
    kind = "stability figures" if entries[0].stability is not None else "figures"
    return (f"the bundled {', '.join(chosen)} model was chosen on {split.name} {split.split}: "
            f"these are {kind}, not accuracy claims")


def choose_label_map(model_set: str, data_set: str, requested: str | None,
                     path: Path) -> LabelMap | None:
    """The map from the model's label set to the dataset's: None when they are the same, the
    ``requested`` one (checked to fit), else the one map between the two sets (printed)."""
    if requested is not None:
        m = get_label_map(requested)
        if (m.source, m.target) != (model_set, data_set):
            raise ValueError(f"{path}: --label-map {requested} maps {m.source} to {m.target}; "
                             f"the model predicts {model_set}, the dataset is {data_set}")
        return m
    if model_set == data_set:
        return None
    found = maps_between(model_set, data_set)
    if len(found) != 1:
        return None                      # check_classes names the mismatch
    print(f"{path.name}: {model_set} predictions scored as {data_set} through label map "
          f"{found[0].name}")
    return found[0]


def check_classes(entry: Entry, split: DatasetSplit) -> None:
    names = tuple(entry.segmenter.class_names)
    if names != tuple(split.labels.class_names):
        raise ValueError(f"{entry.path}: model classes ({len(names)}: {', '.join(names[:4])}, "
                         f"...) differ from the {split.name} label set "
                         f"({split.labels.num_classes}: {', '.join(split.labels.class_names[:4])}"
                         f", ...), and no label map joins {entry.segmenter.meta.label_set} to "
                         f"{split.labels.name}")


def evaluate(entries: list[Entry], split: DatasetSplit, video: bool = False) -> int:
    """Run every image through every entry's Segmenter; fills each entry's confusion matrix,
    agreement count and timings (and with ``video``, per-frame mIoU, TC and flicker). Returns
    the number of pixels scored per entry."""
    c = split.labels.num_classes
    for e in entries:
        e.cm = np.zeros((c, c), np.int64)
        e.stability = TemporalScores(c) if video else None
        e.missed = np.zeros(c, np.int64)
    pixels = 0
    warper = FlowWarp() if video else None
    last = None                     # --video: (key, image, label, predictions) of frame t-1
    for img_path, lab_path in tqdm(split.pairs, desc=f"eval {split.name} {split.split}",
                                   unit="img", dynamic_ncols=True):
        image = read_image(img_path)                        # (H, W, 3) uint8 BGR
        label = split.read_label(lab_path, image.shape)     # (H, W) uint8 train ids
        key = sequence_key(Path(img_path).stem)
        follows = last is not None and last[0] == key and last[1].shape == image.shape
        reference = None
        preds = []
        for e in entries:
            if video and not follows:
                e.segmenter.reset()                         # a new sequence: no history
            result = e.segmenter.segment(image)
            pred = result.labels                            # (H, W) uint8 class ids
            if pred.shape != label.shape:
                raise ValueError(f"{e.path}: prediction {pred.shape} for {img_path} does not "
                                 f"match its label {label.shape}")
            truth = label                   # this entry's view of the label
            void = pred >= c                # a model class the label map sends to void
            if void.any():                  # a miss for the pixel's true class
                missed = label[void]
                e.missed += np.bincount(missed[missed < c], minlength=c)
                pred = np.where(void, 0, pred)
                truth = np.where(void, 255, label)
            e.cm += confusion_matrix(pred, truth, c)
            e.ms.append(sum(result.stages_ms.values()))
            if reference is None:
                reference = pred
            e.agree += int(np.count_nonzero(pred == reference))
            preds.append(pred)
        pixels += label.size
        if video:
            score_frame(entries, preds, label, last if follows else None, image, warper)
            last = (key, image, label, preds)
    return pixels


def score_frame(entries, preds, label, last, image, warper: FlowWarp) -> None:
    """--video: per-frame mIoU of each entry's prediction; with the previous frame of the same
    sequence (``last``), the pair's TC and flicker (one flow for all entries)."""
    c = entries[0].stability.num_classes
    for e, pred in zip(entries, preds):
        e.frame_miou.append(scores(confusion_matrix(pred, label, c))["miou"])
    if last is None:
        return
    _, prev_image, prev_label, prev_preds = last
    warp = warper(prev_image, image)
    warped_label = warp_labels(label, warp)
    for e, prev, pred in zip(entries, prev_preds, preds):
        e.stability.add_pair(prev, pred, prev_label, warped_label, warp)


def result_dict(e: Entry, pixels: int, split: DatasetSplit, filter_mode: str) -> dict:
    """The JSON object of one entry: DESIGN.md's keys first, then where it came from."""
    s = scores(e.cm, split.labels.class_names, e.missed)
    out = {**s, "images": len(split.pairs), "model": e.model, "backend": e.backend,
           "precision": e.precision, "dataset": split.name, "split": split.split,
           "label_map": e.label_map and e.label_map.name,
           "filter": filter_mode, "agreement": e.agree / pixels if pixels else None,
           "ms_per_image_p50": float(np.median(e.ms)) if e.ms else None}
    if e.stability is not None:
        stems = [Path(img).stem for img, _ in split.pairs]
        out.update(temporal=str(e.temporal) if e.temporal else "none",
                   miou_frame_mean=float(np.mean(e.frame_miou)) if e.frame_miou else None,
                   **e.stability.summary(),
                   per_frame=[{"stem": s_, "miou": m} for s_, m in zip(stems, e.frame_miou)],
                   per_pair={"tc": e.stability.tc, "flicker": e.stability.flicker})
    return out


def print_table(entries: list[Entry], results: list[dict], split: DatasetSplit,
                filter_mode: str) -> None:
    """Classes down, entries across; IoU and accuracies in %."""
    names = split.labels.class_names
    labels = [e.label for e in entries]
    settings = [str(e.temporal or "none") for e in entries]
    print(f"{split.name} {split.split}: {len(split.pairs)} images, filter {filter_mode}")
    if len({e.model_label for e in entries}) == 1 and len(set(settings)) == len(entries) > 1:
        print(f"model {entries[0].model_label}; columns: temporal smoothing")
        labels = settings
    width = max(9, *(len(x) for x in labels))
    first = max(16, *(len(n) for n in names))

    def row(title, values, fmt="{:.1f}"):
        cells = ["-" if v is None else fmt.format(v) for v in values]
        print(f"{title:<{first}} " + " ".join(f"{c:>{width}}" for c in cells))

    print(f"{'IoU %':<{first}} " + " ".join(f"{x:>{width}}" for x in labels))
    for n in names:
        row(n, [None if r["per_class_iou"][n] is None else 100 * r["per_class_iou"][n]
                for r in results])
    video = entries[0].stability is not None       # stability figures compare to 0.01
    row("mIoU", [100 * r["miou"] for r in results], "{:.2f}" if video else "{:.1f}")
    row("pixel acc", [100 * r["pixel_acc"] for r in results])
    row("mean class acc", [100 * r["mean_class_acc"] for r in results])
    if video:
        row("mIoU frame mean", [_pct(r["miou_frame_mean"]) for r in results], "{:.2f}")
        row("TC", [_pct(r["tc"]) for r in results], "{:.2f}")
        row("flicker %", [_pct(r["flicker"]) for r in results], "{:.3f}")
    if len(entries) > 1:
        row("agreement vs 1st", [100 * r["agreement"] for r in results], "{:.3f}")
    row("ms/image p50", [r["ms_per_image_p50"] for r in results])   # entries run in turn


def _pct(v):
    return None if v is None else 100 * v


def results_json(results: list[dict]) -> dict:
    """One model: the object itself (DESIGN.md contract). Several: {"reference", "results"}."""
    if len(results) == 1:
        obj = dict(results[0])
        obj.pop("agreement")          # always 1.0 against itself
        return obj
    return {"reference": results[0]["model"], "results": results}


def confusion_paths(out: str | Path, n: int) -> list[Path]:
    out = Path(out)
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{k}{out.suffix or '.png'}") for k in range(1, n + 1)]


def save_confusion_png(cm: np.ndarray, class_names, path: str | Path, title: str) -> None:
    """(C, C) counts -> PNG of the row-normalized matrix (rows: ground truth) in %."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, np.float64)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) * 100
    c = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * c, 0.8 + 0.5 * c), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(c), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(c), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title, fontsize=9)
    for i in range(c):
        for j in range(c):
            if norm[i, j] >= 0.5:
                ax.text(j, i, f"{norm[i, j]:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 60 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of ground-truth row")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
