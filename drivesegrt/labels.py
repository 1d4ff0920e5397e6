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

@dataclass(frozen=True)
class LabelMap:
    """A many-to-one map between label sets, as data: ``mapping`` names, for each source class,
    its target class; a source class left out maps to ``default`` (a target class name, or None
    for the target's void, ignored when scoring)."""
    source: str
    target: str
    mapping: dict[str, str]
    default: str | None = None

    @property
    def name(self) -> str:
        return f"{self.source}-{self.target}"

    def lut(self) -> np.ndarray:
        """(256,) uint8: source class id -> target class id; void and unmapped source ids ->
        the target's ``ignore_index``."""
        source, target = get_label_set(self.source), get_label_set(self.target)
        lut = np.full(256, target.ignore_index, dtype=np.uint8)
        for i, name in enumerate(source.class_names):
            to = self.mapping.get(name, self.default)
            if to is not None:
                lut[i] = target.class_names.index(to)
        return lut

    def sources_of(self) -> list[list[int]]:
        """For each target class id, the source class ids that map to it (maybe none)."""
        lut = self.lut()
        n = get_label_set(self.source).num_classes
        return [[i for i in range(n) if lut[i] == k]
                for k in range(get_label_set(self.target).num_classes)]


LABEL_MAPS = {m.name: m for m in (
    # SOURCE.md of the ESPNetv2 Cityscapes weights: how their zero-shot CamVid scores were taken
    LabelMap("cityscapes19", "camvid11", {
        "road": "Road", "sidewalk": "Pavement", "building": "Building", "wall": "Building",
        "fence": "Fence", "pole": "Pole", "traffic light": "SignSymbol",
        "traffic sign": "SignSymbol", "vegetation": "Tree", "terrain": "Tree", "sky": "Sky",
        "person": "Pedestrian", "rider": "Bicyclist", "motorcycle": "Bicyclist",
        "bicycle": "Bicyclist", "car": "Car", "truck": "Car", "bus": "Car", "train": "Car"}),
    # The driving view: what a planner cares about; everything else is "other".
    LabelMap("cityscapes19", "driving5", {
        "road": "road", "sidewalk": "sidewalk", "pole": "pole", "traffic light": "pole",
        "traffic sign": "pole", "car": "car", "truck": "car", "bus": "car"}, default="other"),
    LabelMap("camvid11", "driving5", {
        "Road": "road", "Pavement": "sidewalk", "Pole": "pole", "SignSymbol": "pole",
        "Car": "car"}, default="other"),
)}


def get_label_set(name: str) -> LabelSet:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; allowed: {', '.join(LABEL_SETS)}") from None


def get_label_map(name: str) -> LabelMap:
    """A map by name, ``SOURCE-TARGET`` (``LABEL_MAPS``)."""
    try:
        return LABEL_MAPS[name]
    except KeyError:
        raise ValueError(f"unknown label map {name!r}; allowed: {', '.join(LABEL_MAPS)}") from None


def maps_between(source: str, target: str) -> list[LabelMap]:
    """The maps from label set ``source`` to ``target``."""
    return [m for m in LABEL_MAPS.values() if (m.source, m.target) == (source, target)]


def remap_table(source: LabelSet, target_name: str) -> tuple[np.ndarray, LabelSet]:
    """A 256-entry uint8 lookup table mapping ``source`` class ids to ``target_name`` ids.

    The identity for the source's own set; else the one ``LABEL_MAPS`` entry between them. Ids
    outside the source classes (void) map to 255.
    """
    target = get_label_set(target_name)
    if target.name == source.name:
        return np.arange(256, dtype=np.uint8), target
    found = maps_between(source.name, target.name)
    if len(found) != 1:
        allowed = [source.name] + [m.target for m in LABEL_MAPS.values()
                                   if m.source == source.name]
        raise ValueError(f"no remap from label set {source.name!r} to {target_name!r}; "
                         f"allowed targets: {', '.join(allowed)}")
    lut = found[0].lut()
    lut[source.num_classes:] = 255
    return lut, target


def palette_lut(palette, bgr: bool = True) -> np.ndarray:
    """(256, 3) uint8 color table; ids without a color are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    arr = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    lut[: len(arr)] = arr[:, ::-1] if bgr else arr
    return lut
