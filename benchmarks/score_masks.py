"""Score the masks a `drivesegrt run --save-masks` wrote against a labelled split.

    drivesegrt run --source ../shared/data/camvid/test --save-masks --output runs/camvid_test
    python benchmarks/score_masks.py runs/camvid_test/masks --data ../shared/data/camvid --split test

Shows that the pipeline's masks score what `drivesegrt eval` reports (they share pre/post-processing).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from drivesegrt.data.splits import open_split  # noqa: E402
from drivesegrt.train.metrics import confusion_matrix, scores  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("masks", type=Path)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    args = p.parse_args()
    split = open_split(args.data, args.split)
    n = split.labels.num_classes
    cm = np.zeros((n, n), np.int64)
    for img, lab_path in split.pairs:
        mask = cv2.imread(str(args.masks / f"{img.stem}.png"), cv2.IMREAD_UNCHANGED)
        if mask is None:
            print(f"missing mask for {img.name} in {args.masks}", file=sys.stderr)
            return 2
        cm += confusion_matrix(mask, split.read_label(lab_path, mask.shape), n)
    s = scores(cm, split.labels.class_names)
    print(f"{len(split.pairs)} masks: mIoU {100 * s['miou']:.2f}  pixel acc "
          f"{100 * s['pixel_acc']:.2f}  mean class acc {100 * s['mean_class_acc']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
