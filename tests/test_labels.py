"""Label sets and the maps between them, as data: Cityscapes' official table, maps that round-trip
through their lookup tables, and ``drivesegrt eval`` scoring a Cityscapes model on CamVid
through a map."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from helpers import CAMVID, SHARED

from drivesegrt import cli
from drivesegrt.data.splits import open_split
from drivesegrt.infer.build import load_segmenter
from drivesegrt.labels import (
    CAMVID11,
    CITYSCAPES19,
    DRIVING5,
    LABEL_MAPS,
    LabelMap,
    get_label_map,
    get_label_set,
    remap_table,
)
from drivesegrt.meta import ModelMeta
from drivesegrt.models.checkpoint import save_checkpoint
from drivesegrt.models.espnetv2 import CITYSCAPES_PYRAMID_CHANNELS, cityscapes_espnetv2
from drivesegrt.train.metrics import confusion_matrix, scores

# The official Cityscapes table (cityscapesScripts labels.py): train id -> (name, color).
OFFICIAL = [("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)), ("building", (70, 70, 70)),
            ("wall", (102, 102, 156)), ("fence", (190, 153, 153)), ("pole", (153, 153, 153)),
            ("traffic light", (250, 170, 30)), ("traffic sign", (220, 220, 0)),
            ("vegetation", (107, 142, 35)), ("terrain", (152, 251, 152)),
            ("sky", (70, 130, 180)), ("person", (220, 20, 60)), ("rider", (255, 0, 0)),
            ("car", (0, 0, 142)), ("truck", (0, 0, 70)), ("bus", (0, 60, 100)),
            ("train", (0, 80, 100)), ("motorcycle", (0, 0, 230)), ("bicycle", (119, 11, 32))]


def test_cityscapes19_is_the_official_train_id_table():
    assert list(zip(CITYSCAPES19.class_names, CITYSCAPES19.palette)) == OFFICIAL
    assert CITYSCAPES19.ignore_index == 255


@pytest.mark.parametrize("name", list(LABEL_MAPS))
def test_maps_round_trip_through_their_lookup_table(name):
    """Names -> ids (lut) -> names gives the map back; sources_of is the lut's inverse."""
    m = get_label_map(name)
    source, target = get_label_set(m.source), get_label_set(m.target)
    assert m.name == name and set(m.mapping) <= set(source.class_names)
    assert set(m.mapping.values()) <= set(target.class_names)
    lut = m.lut()
    back = {source.class_names[i]: target.class_names[lut[i]] for i in range(source.num_classes)
            if lut[i] != target.ignore_index}
    assert back == {n: m.mapping.get(n, m.default) for n in source.class_names
                    if m.mapping.get(n, m.default) is not None}
    assert (lut[source.num_classes:] == target.ignore_index).all()
    sources = m.sources_of()
    assert len(sources) == target.num_classes
    assert sorted(i for ids in sources for i in ids) == \
        [i for i in range(source.num_classes) if lut[i] != target.ignore_index]
    assert all(lut[i] == k for k, ids in enumerate(sources) for i in ids)


def test_cityscapes_to_camvid_is_source_md_mapping_and_reaches_every_camvid_class():
    sources = get_label_map("cityscapes19-camvid11").sources_of()
    named = {CAMVID11.class_names[k]: [CITYSCAPES19.class_names[i] for i in ids]
             for k, ids in enumerate(sources)}
    assert named == {
        "Sky": ["sky"], "Building": ["building", "wall"], "Pole": ["pole"], "Road": ["road"],
        "Pavement": ["sidewalk"], "Tree": ["vegetation", "terrain"],
        "SignSymbol": ["traffic light", "traffic sign"], "Fence": ["fence"],
        "Car": ["car", "truck", "bus", "train"], "Pedestrian": ["person"],
        "Bicyclist": ["rider", "motorcycle", "bicycle"]}


def test_cityscapes_to_driving5_groups_as_the_issue_says():
    lut = get_label_map("cityscapes19-driving5").lut()
    named = {n: DRIVING5.class_names[lut[i]] for i, n in enumerate(CITYSCAPES19.class_names)}
    assert [n for n, t in named.items() if t == "pole"] == ["pole", "traffic light",
                                                            "traffic sign"]
    assert [n for n, t in named.items() if t == "car"] == ["car", "truck", "bus"]
    assert named["road"] == "road" and named["sidewalk"] == "sidewalk"
    assert named["train"] == named["sky"] == named["person"] == "other"


def test_unmapped_classes_go_to_the_targets_void():
    m = LabelMap("cityscapes19", "camvid11", {"road": "Road"})
    lut = m.lut()
    assert lut[0] == 3 and (lut[1:] == CAMVID11.ignore_index).all()
    assert m.sources_of()[3] == [0] and m.sources_of()[0] == []


def test_remap_table_uses_the_maps_and_names_the_allowed_targets():
    lut, target = remap_table(CITYSCAPES19, "camvid11")
    assert target is CAMVID11 and lut[0] == 3 and lut[13] == 8 and lut[19] == 255
    with pytest.raises(ValueError) as e:
        remap_table(DRIVING5, "camvid11")
    assert str(e.value) == ("no remap from label set 'driving5' to 'camvid11'; allowed "
                            "targets: driving5")
    with pytest.raises(ValueError) as e:
        get_label_map("camvid11-cityscapes19")
    assert str(e.value) == ("unknown label map 'camvid11-cityscapes19'; allowed: "
                            + ", ".join(LABEL_MAPS))


@pytest.fixture(scope="module")
def cityscapes_checkpoint(tmp_path_factory):
    """The authors' ESPNetv2 s=0.5 Cityscapes weights as a drivesegrt checkpoint (19 classes)."""
    weights = SHARED / "weights" / "espnetv2_cityscapes"
    if not weights.is_dir() or not CAMVID.is_dir():
        pytest.skip(f"ESPNetv2 Cityscapes weights or CamVid not found under {SHARED}")
    torch.set_num_threads(1)     # the eval CLI runs torch in this process; cores are shared
    path = tmp_path_factory.mktemp("cs") / "espnetv2_cityscapes.pt"
    meta = ModelMeta.for_label_set("espnetv2", CITYSCAPES19, input_size=(256, 320),
                                   arch_kwargs={"s": 0.5,
                                                "pyramid_channels": CITYSCAPES_PYRAMID_CHANNELS})
    save_checkpoint(path, cityscapes_espnetv2(0.5, weights), meta)
    return path


def test_eval_scores_a_cityscapes_model_on_camvid_through_the_map(cityscapes_checkpoint,
                                                                  tmp_path, capsys):
    """Automatic map (printed), the same numbers with --label-map named, and both equal the
    scores of the model's own masks mapped by hand."""
    out = tmp_path / "auto.json"
    assert cli.main(["eval", "--model", str(cityscapes_checkpoint), "--backend", "torch",
                     "--data", str(CAMVID), "--max-images", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert ("espnetv2_cityscapes.pt: cityscapes19 predictions scored as camvid11 through "
            "label map cityscapes19-camvid11\n") in printed
    auto = json.loads(out.read_text())
    assert auto["label_map"] == "cityscapes19-camvid11" and auto["images"] == 2
    assert list(auto["per_class_iou"]) == list(CAMVID11.class_names)

    named = tmp_path / "named.json"
    assert cli.main(["eval", "--model", str(cityscapes_checkpoint), "--backend", "torch",
                     "--data", str(CAMVID), "--max-images", "2", "--json", str(named),
                     "--label-map", "cityscapes19-camvid11"]) == 0
    assert json.loads(named.read_text())["miou"] == auto["miou"]

    split = open_split(CAMVID, "test")
    seg = load_segmenter(cityscapes_checkpoint, backend="torch")
    lut = get_label_map("cityscapes19-camvid11").lut()
    cm = 0
    for img, lab in split.pairs[:2]:
        pred = lut[seg(cv2.imread(str(img)))]
        cm = cm + confusion_matrix(pred, split.read_label(lab), 11)
    assert auto["miou"] == scores(cm, CAMVID11.class_names)["miou"]
    assert auto["per_class_iou"]["Road"] > 0.4    # a scrambled map would score no road


def test_eval_rejects_a_map_that_does_not_fit(cityscapes_checkpoint, capsys):
    assert cli.main(["eval", "--model", str(cityscapes_checkpoint), "--backend", "torch",
                     "--data", str(CAMVID), "--max-images", "1",
                     "--label-map", "camvid11-driving5"]) == 2
    assert capsys.readouterr().err == (
        f"drivesegrt: error: {cityscapes_checkpoint}: --label-map camvid11-driving5 maps "
        f"camvid11 to driving5; the model predicts cityscapes19, the dataset is camvid11\n")


def test_void_predictions_count_as_misses():
    """A class the map sends to void is an error for the pixel's true class, not ignored."""
    cm = np.array([[5, 0], [0, 5]])
    s = scores(cm, ["a", "b"], missed=np.array([5, 0]))
    assert s["per_class_iou"] == {"a": 0.5, "b": 1.0} and s["pixel_acc"] == 10 / 15
