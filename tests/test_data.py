"""Datasets (CamVid, Cityscapes), joint augmentation alignment, class weights."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import CAMVID, CS_IDS, CS_TRAIN, make_camvid, make_cityscapes

from drivesegrt.data.camvid import SegmentationDataset, camvid_pairs, read_label
from drivesegrt.data.cityscapes import (
    cityscapes_pairs,
    label_id_lut,
    read_cityscapes_label,
)
from drivesegrt.data.class_weights import median_frequency_weights
from drivesegrt.data.splits import detect_dataset, open_split
from drivesegrt.data.transforms import TrainTransform, photometric_jitter
from drivesegrt.labels import CAMVID11, CITYSCAPES19

# --- joint augmentation: encode the label in the image's colors ------------------------------

COLORS = np.array(CAMVID11.palette + ((0, 0, 0),), np.uint8)   # id 11 (void) -> black


def decode(img: np.ndarray) -> np.ndarray:
    """Nearest palette color of each pixel -> class id (H, W)."""
    d = ((img[:, :, None, :].astype(np.int32) - COLORS[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


@pytest.fixture(scope="module")
def camvid_label(shared_data):
    _, lab_path = camvid_pairs(CAMVID, "train")[0]
    return read_label(lab_path, 11, 11)


def agreement(img, lab) -> float:
    """Fraction of labelled pixels whose color decodes to their label."""
    valid = lab != 11
    return float((decode(img)[valid] == lab[valid]).mean())


def test_augmentation_keeps_image_and_label_aligned(camvid_label):
    img = COLORS[camvid_label]                           # (H, W, 3) label painted as colors
    t = TrainTransform((180, 240), scale=(0.5, 1.5), flip=True, jitter=0.0, ignore_index=11,
                       seed=0)
    flips = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        out_img, out_lab = t(img, camvid_label, rng)
        assert out_img.shape == (180, 240, 3) and out_lab.shape == (180, 240)
        assert out_img.dtype == np.uint8 and out_lab.dtype == np.uint8
        # bilinear image vs nearest label differ only along class borders
        assert agreement(out_img, out_lab) > 0.95, seed
        # the same check has power: a label flipped alone disagrees
        if agreement(out_img, out_lab[:, ::-1]) < 0.8:
            flips += 1
    assert flips >= 6          # most crops are not left-right symmetric


def test_padding_uses_the_ignore_index():
    lab = np.zeros((20, 30), np.uint8)
    img = np.full((20, 30, 3), 200, np.uint8)
    t = TrainTransform((40, 50), scale=(1.0, 1.0), flip=False, jitter=0.0, ignore_index=11)
    out_img, out_lab = t(img, lab)
    assert out_lab.shape == (40, 50)
    assert (out_lab == 11).sum() == 40 * 50 - 20 * 30
    assert np.all(out_img[out_lab == 11] == 0) and np.all(out_img[out_lab == 0] == 200)


def test_augmentation_is_deterministic_with_a_seed(camvid_label):
    img = COLORS[camvid_label]

    def run(seed):
        t = TrainTransform((120, 160), ignore_index=11, seed=seed)
        return [t(img, camvid_label) for _ in range(3)]

    a, b, c = run(5), run(5), run(6)
    for (ia, la), (ib, lb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    assert any(not np.array_equal(ia, ic) for (ia, _), (ic, _) in zip(a, c))


def test_photometric_jitter_changes_colors_only():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = photometric_jitter(img, 0.25, np.random.default_rng(1))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    np.testing.assert_array_equal(photometric_jitter(img, 0.25, np.random.default_rng(1)), out)


def test_dataset_items_from_real_camvid(shared_data):
    pairs = camvid_pairs(CAMVID, "val")
    assert len(pairs) == 101 and all(i.name == l.name for i, l in pairs)
    ds = SegmentationDataset(pairs[:2], CAMVID11,
                             TrainTransform((96, 128), ignore_index=11, seed=0))
    img, lab = ds[0]
    assert img.shape == (96, 128, 3) and lab.shape == (96, 128)
    assert lab.max() <= 11
    raw_img, raw_lab = ds.load(1)
    assert raw_img.shape == (360, 480, 3) and raw_lab.shape == (360, 480)


# --- CamVid layout errors ---------------------------------------------------------------------

def load_all(root, split="train"):
    ds = open_split(root, split)
    return [SegmentationDataset(ds.pairs, ds.labels, label_fn=ds.read_label)[i]
            for i in range(len(ds.pairs))]


def test_camvid_missing_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="CamVid folder not found: .*trainannot"):
        camvid_pairs(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="dataset folder not found: .*nope"):
        open_split(tmp_path / "nope", "train")


def test_camvid_count_mismatch_and_unpaired_name(tmp_path):
    root = make_camvid(tmp_path)
    (root / "trainannot" / "f2.png").unlink()
    with pytest.raises(ValueError, match="3 images in train/ but 2 labels in trainannot/"):
        camvid_pairs(root, "train")
    cv2.imwrite(str(root / "trainannot" / "other.png"), np.zeros((8, 12), np.uint8))
    with pytest.raises(ValueError, match=r"f2.png: no label .*trainannot/f2.png"):
        camvid_pairs(root, "train")


def test_camvid_size_mismatch_names_the_label(tmp_path):
    root = make_camvid(tmp_path)
    cv2.imwrite(str(root / "trainannot" / "f1.png"), np.zeros((8, 10), np.uint8))
    with pytest.raises(ValueError, match=r"trainannot/f1.png: label size 10x8 differs from "
                                         r"its image 12x8"):
        load_all(root)


def test_camvid_out_of_range_id_names_the_label(tmp_path):
    root = make_camvid(tmp_path)
    bad = np.ones((8, 12), np.uint8)
    bad[3, 4] = 12
    cv2.imwrite(str(root / "trainannot" / "f2.png"), bad)
    with pytest.raises(ValueError, match=r"f2.png: label id 12 out of range \(0..10, void 11\)"):
        load_all(root)
    with pytest.raises(ValueError, match="unknown CamVid split 'training'"):
        camvid_pairs(root, "training")


def test_camvid_void_is_allowed(tmp_path):
    root = make_camvid(tmp_path, label_value=11)
    assert all(lab.max() == 11 for _, lab in load_all(root))


# --- Cityscapes -------------------------------------------------------------------------------

def test_cityscapes_label_ids_to_train_ids(tmp_path):
    root = make_cityscapes(tmp_path)
    pairs = cityscapes_pairs(root, "val")
    assert [p[0].parent.name for p in pairs] == ["aachen", "aachen", "bremen", "bremen"]
    for img, lab in pairs:
        assert img.name.replace("_leftImg8bit", "") == lab.name.replace("_gtFine_labelIds", "")
    ds = open_split(root, "val")
    assert ds.name == "cityscapes" and ds.labels is CITYSCAPES19
    items = [SegmentationDataset(ds.pairs, ds.labels, label_fn=ds.read_label)[i]
             for i in range(4)]
    np.testing.assert_array_equal(items[0][1], CS_TRAIN)
    np.testing.assert_array_equal(items[1][1], np.roll(CS_TRAIN, 1, axis=1))
    assert items[2][0][0, 0, 0] == 20


def test_cityscapes_lut_covers_the_19_classes():
    lut = label_id_lut()
    assert sorted(set(lut.tolist()) - {255}) == list(range(19))
    # names line up: label id 26 is 'car', train id 13
    assert CITYSCAPES19.class_names[lut[26]] == "car"
    assert CITYSCAPES19.class_names[lut[24]] == "person"


def test_cityscapes_errors(tmp_path):
    root = make_cityscapes(tmp_path)
    (root / "leftImg8bit" / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"Cityscapes folder not found: .*gtFine/train"):
        cityscapes_pairs(root, "train")
    lab = next((root / "gtFine" / "val" / "bremen").glob("*_labelIds.png"))
    bad = CS_IDS.copy()
    bad[0, 0] = 40
    cv2.imwrite(str(lab), bad)
    with pytest.raises(ValueError, match=rf"{lab.name}: label id 40 out of range"):
        read_cityscapes_label(lab)
    cv2.imwrite(str(lab), CS_IDS[:, :3])
    with pytest.raises(ValueError, match=rf"{lab.name}: label size 3x3 differs from its "
                                         r"image 4x3"):
        read_cityscapes_label(lab, (3, 4, 3))
    lab.unlink()
    with pytest.raises(ValueError, match="4 images in leftImg8bit/val/ but 3"):
        cityscapes_pairs(root, "val")


def test_detect_dataset(tmp_path):
    assert detect_dataset(make_cityscapes(tmp_path / "cs")) == "cityscapes"
    assert detect_dataset(make_camvid(tmp_path / "cv")) == "camvid"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a CamVid"):
        detect_dataset(tmp_path / "empty")


# --- class weights ----------------------------------------------------------------------------

def test_median_frequency_on_cityscapes_train_ids(tmp_path):
    root = make_cityscapes(tmp_path, per_city=1, cities=("a",))
    ds = open_split(root, "val")
    w = median_frequency_weights([p for _, p in ds.pairs], 19, 255, read_fn=ds.read_label)
    # one image, 12 px: each of the 9 present train ids covers 1 px -> all freq 1/12 -> weight 1
    present = sorted(set(CS_TRAIN.ravel().tolist()) - {255})
    np.testing.assert_allclose(w[present], 1.0)
    assert np.count_nonzero(w) == len(present)


def test_a_teacher_map_moves_with_its_image(camvid_label):
    img = COLORS[camvid_label]
    soft = np.eye(11, dtype=np.float32)[np.minimum(camvid_label, 10)]    # (H, W, 11) one-hot
    t = TrainTransform((180, 240), scale=(0.5, 1.5), flip=True, jitter=0.0, ignore_index=11)
    for seed in range(6):
        plain = t(img, camvid_label, np.random.default_rng(seed))
        out_img, out_lab, out_soft = t(img, camvid_label, np.random.default_rng(seed), soft=soft)
        # the map consumes no randomness: image and label are those of a call without it
        np.testing.assert_array_equal(out_img, plain[0])
        np.testing.assert_array_equal(out_lab, plain[1])
        assert out_soft.shape == (180, 240, 11) and out_soft.dtype == np.float32
        valid = out_lab != 11
        assert (out_soft.argmax(-1)[valid] == out_lab[valid]).mean() > 0.95, seed
    # padding carries no teacher opinion
    small = TrainTransform((40, 50), scale=(1.0, 1.0), flip=False, jitter=0.0, ignore_index=11)
    _, lab, out = small(np.zeros((20, 30, 3), np.uint8), np.zeros((20, 30), np.uint8),
                        soft=np.ones((20, 30, 4), np.float32))
    assert np.all(out[lab == 11] == 0) and np.all(out[lab == 0] == 1)
