"""Label sets, palettes and remaps.

A label set is an ordered list of class names with an RGB palette. Models carry their own
label set in their metadata (see :mod:`drivesegrt.meta`); the tables here are the known sets
used for training and for the optional reduced "driving" view.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelSet:
    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB per class
    ignore_index: int = 255

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# SegNet's CamVid-11 order; id 11 is void (ignored in training and scoring).
CAMVID11 = LabelSet(
    name="camvid11",
    class_names=("Sky", "Building", "Pole", "Road", "Pavement", "Tree",
                 "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist"),
    palette=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
             (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
             (0, 128, 192)),
    ignore_index=11,
)

# Cityscapes 19 train ids.
CITYSCAPES19 = LabelSet(
    name="cityscapes19",
    class_names=("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                 "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                 "truck", "bus", "train", "motorcycle", "bicycle"),
    palette=((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
             (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
             (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
             (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)),
    ignore_index=255,
)

# Reduced driving view: what a planner cares about.
DRIVING5 = LabelSet(
    name="driving5",
    class_names=("road", "sidewalk", "pole", "car", "other"),
    palette=((128, 64, 128), (244, 35, 232), (250, 170, 30), (0, 0, 142), (70, 70, 70)),
    ignore_index=255,
)

LABEL_SETS = {s.name: s for s in (CAMVID11, CITYSCAPES19, DRIVING5)}

# Source label set -> {source class name: driving5 class name}; unlisted classes map to "other".
_TO_DRIVING5 = {
    "camvid11": {"Road": "road", "Pavement": "sidewalk", "Pole": "pole", "SignSymbol": "pole",
                 "Car": "car"},
    "cityscapes19": {"road": "road", "sidewalk": "sidewalk", "pole": "pole",
                     "traffic light": "pole", "traffic sign": "pole", "car": "car",
                     "truck": "car", "bus": "car"},
}


def get_label_set(name: str) -> LabelSet:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; allowed: {', '.join(LABEL_SETS)}") from None


def remap_table(source: LabelSet, target_name: str) -> tuple[np.ndarray, LabelSet]:
    """A 256-entry uint8 lookup table mapping source class ids to ``target_name`` ids.

    Ids outside the source classes (void) map to themselves' ignore index 255.
    """
    target = get_label_set(target_name)
    if target.name == source.name:
        lut = np.arange(256, dtype=np.uint8)
        return lut, target
    if target.name != "driving5" or source.name not in _TO_DRIVING5:
        raise ValueError(f"no remap from label set {source.name!r} to {target_name!r}; "
                         f"allowed targets: {source.name}, driving5")
    mapping = _TO_DRIVING5[source.name]
    lut = np.full(256, 255, dtype=np.uint8)
    for i, name in enumerate(source.class_names):
        lut[i] = target.class_names.index(mapping.get(name, "other"))
    return lut, target


def palette_lut(palette, bgr: bool = True) -> np.ndarray:
    """(256, 3) uint8 color table; ids without a color are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    arr = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    lut[: len(arr)] = arr[:, ::-1] if bgr else arr
    return lut
