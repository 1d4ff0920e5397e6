"""Regions check: does a model call sure road "road" and sure sky "sky" on highway footage it
was not trained on?

Runs each model over a video and scores the hand-drawn conservative regions of a regions file
(../shared/data/videos/regions/*.json: polygons per role, true in every frame):

- road recall: % of road-region pixels labelled the model's road class;
- sidewalk inside road: % of road-region pixels labelled its sidewalk class (the failure that
  matters: a car's planner must not see pavement on the highway);
- sky recall: % of sky-region pixels labelled its sky class;
- the most frequent other class inside the road region.

    python benchmarks/regions_check.py --model camvid --model cityscapes [--json OUT]

Models are loaded exactly as ``drivesegrt run`` loads them (bundled names or files, the same
Segmenter), so the masks scored are the ones ``run`` would write.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drivesegrt.engines import BACKENDS, DEFAULT_BACKEND  # noqa: E402
from drivesegrt.files import write_json  # noqa: E402
from drivesegrt.infer.build import load_segmenter  # noqa: E402

VIDEOS = ROOT.parent / "shared" / "data" / "videos"
VIDEO = VIDEOS / "udacity_lanelines_solidWhiteRight.mp4"
REGIONS = VIDEOS / "regions" / "udacity_lanelines_solidWhiteRight.json"
# What each role is called in each label set (a role a set lacks is not scored).
ROLE_CLASSES = {
    "road": {"camvid11": "Road", "cityscapes19": "road", "driving5": "road"},
    "sidewalk": {"camvid11": "Pavement", "cityscapes19": "sidewalk", "driving5": "sidewalk"},
    "sky": {"camvid11": "Sky", "cityscapes19": "sky"},
}


def region_masks(path: Path, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """{role: (H, W) bool} from the regions file's polygons; size (W, H) of the video."""
    spec = json.loads(path.read_text())
    if tuple(spec["size"]) != tuple(size):
        raise ValueError(f"{path}: regions drawn for {spec['size']}, the video is "
                         f"{list(size)}")
    masks = {}
    for role, polygons in spec["regions"].items():
        m = np.zeros((size[1], size[0]), np.uint8)
        cv2.fillPoly(m, [np.asarray(p, np.int32) for p in polygons], 1)
        masks[role] = m.astype(bool)
    return masks


def frames(video: Path, every: int):
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {video}")
    i = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0:
            yield frame
        i += 1
    cap.release()


def check(model: str, backend: str, threads: int, video: Path, regions: Path,
          every: int) -> dict:
    seg = load_segmenter(model, backend=backend, threads=threads)
    try:
        label_set = seg.meta.label_set
        names = list(seg.class_names)
        cap = cv2.VideoCapture(str(video))
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        cap.release()
        masks = region_masks(regions, size)
        counts = {role: np.zeros(256, np.int64) for role in masks}   # class histogram
        n = 0
        for frame in frames(video, every):
            labels = seg(frame)                                        # (H, W) uint8
            for role, m in masks.items():
                counts[role] += np.bincount(labels[m], minlength=256)
            n += 1
    finally:
        seg.close()
        seg.engine.close()

    def share(role: str, cls_role: str) -> float | None:
        name = ROLE_CLASSES[cls_role].get(label_set)
        if role not in counts or name is None:
            return None
        return float(counts[role][names.index(name)] / counts[role].sum())

    road = counts.get("road")
    others = {names[i]: int(c) for i, c in enumerate(road[: len(names)])
              if c and names[i] != ROLE_CLASSES["road"].get(label_set)} if road is not None else {}
    top = max(others, key=others.get) if others else None
    return {"model": model, "backend": backend, "label_set": label_set, "frames": n,
            "road_recall": share("road", "road"),
            "sidewalk_in_road": share("road", "sidewalk"),
            "sky_recall": share("sky", "sky"),
            "top_other_in_road": top,
            "top_other_in_road_share": (others[top] / road.sum()) if top else None}


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", metavar="NAME|PATH",
                   help="bundled model name or file (repeat); default: the bundled default")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=list(BACKENDS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--video", type=Path, default=VIDEO)
    p.add_argument("--regions", type=Path, default=REGIONS)
    p.add_argument("--every", type=int, default=1, help="score every N-th frame (default: all)")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    args = p.parse_args(argv)
    if args.every < 1:
        raise SystemExit(f"--every must be >= 1, got {args.every}")
    results = [check(m, args.backend, args.threads, args.video, args.regions, args.every)
               for m in (args.model or [None])]
    print(f"regions check: {args.video.name}, {results[0]['frames']} frames, {args.backend}")
    print(f"{'model':<40} {'labels':<13} {'road recall %':>13} {'sidewalk in road %':>18} "
          f"{'sky recall %':>12}  most frequent other class in road")
    for r in results:
        other = (f"{r['top_other_in_road']} {pct(r['top_other_in_road_share'])} %"
                 if r["top_other_in_road"] else "-")
        print(f"{str(r['model']):<40} {r['label_set']:<13} {pct(r['road_recall']):>13} "
              f"{pct(r['sidewalk_in_road']):>18} {pct(r['sky_recall']):>12}  {other}")
    if args.json:
        write_json(args.json, {"video": str(args.video), "regions": str(args.regions),
                               "results": results})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
