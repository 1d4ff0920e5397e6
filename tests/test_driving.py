"""Per-frame driving figures (coverage, drivable area, ROI shares, confidence) and `run` with
every new output option on the real clips."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import (
    CAMVID_CLIP,
    HIGHWAY_CLIP,
    cli_main,
    read_jsonl,
    read_summary,
    tiny_onnx,
)

from drivesegrt.labels import CAMVID11
from drivesegrt.publish.driving import DrivingFigures, parse_roi

ROAD, BUILDING, CAR = (CAMVID11.class_names.index(n) for n in ("Road", "Building", "Car"))
H, W = 200, 300
TRAPEZOID = [(50, 199), (130, 100), (170, 100), (250, 199)]       # (x, y), bottom wide


def road_scene(obstacle: bool = False) -> np.ndarray:
    """Building everywhere, a road trapezoid from the bottom edge to row 100, a separate road
    patch top left; optionally a car on the road in the centre band, rows 150..159."""
    labels = np.full((H, W), BUILDING, np.uint8)
    cv2.fillPoly(labels, [np.array(TRAPEZOID, np.int32)], ROAD)
    labels[10:40, 10:60] = ROAD
    if obstacle:
        labels[150:160, 140:160] = CAR
    return labels


def test_drivable_area_of_a_known_road_shape():
    fig = DrivingFigures(CAMVID11.class_names, coverage=False)
    rec = fig.measure(road_scene())
    assert set(rec) == {"drivable"}
    d = rec["drivable"]
    # the trapezoid only (the top-left patch is not connected to the ego position)
    area = cv2.contourArea(np.array(TRAPEZOID, np.float32))
    assert d["share"] == pytest.approx(area / (H * W), rel=0.03)
    corners = sorted(map(tuple, d["polygon"]))
    assert len(corners) == 4
    for got, want in zip(corners, sorted(TRAPEZOID)):
        assert abs(got[0] - want[0]) <= 2 and abs(got[1] - want[1]) <= 2
    assert d["free_ahead"] == pytest.approx(100 / H, abs=0.01)       # rows 100..199


def test_an_obstacle_in_the_centre_band_shortens_the_free_space_ahead():
    d = DrivingFigures(CAMVID11.class_names).measure(road_scene(obstacle=True))["drivable"]
    assert d["free_ahead"] == pytest.approx(40 / H, abs=0.01)        # rows 160..199
    assert len(d["polygon"]) >= 4           # the outer outline; the car is a hole inside it


def test_no_road_at_the_ego_position_is_an_empty_drivable_area():
    labels = np.full((H, W), BUILDING, np.uint8)
    labels[10:40, 10:60] = ROAD
    d = DrivingFigures(CAMVID11.class_names).measure(labels)["drivable"]
    assert d == {"share": 0.0, "free_ahead": 0.0, "polygon": []}


def test_coverage_and_roi_shares():
    labels = np.full((H, W), BUILDING, np.uint8)
    labels[:, : W // 2] = ROAD
    rng = np.random.default_rng(0)
    rois = {"left": (0, 0, 0.5, 1), "ego": (0.35, 0.55, 0.65, 1.0),
            "tiny": (0.5, 0.5, 0.5001, 0.5001)}
    fig = DrivingFigures(CAMVID11.class_names, drivable=False, rois=rois)
    rec = fig.measure(labels)
    assert rec["coverage"]["Road"] == 0.5 and rec["coverage"]["Building"] == 0.5
    assert rec["roi"]["left"]["Road"] == 1.0
    assert rec["roi"]["ego"]["Road"] == pytest.approx(0.5, abs=0.01)
    noisy = rng.integers(0, 11, (H, W), dtype=np.uint8)
    rec = fig.measure(noisy)
    for shares in [rec["coverage"], *rec["roi"].values()]:
        assert list(shares) == list(CAMVID11.class_names)
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-4)
    assert sum(rec["roi"]["tiny"].values()) == pytest.approx(1.0)     # one pixel at least


def test_confidence_figures():
    fig = DrivingFigures(CAMVID11.class_names, coverage=False, drivable=False,
                         confidence_low=0.5)
    conf = np.full((10, 10), 255, np.uint8)
    conf[:2] = 127                            # 127/255 < 0.5 <= 128/255
    conf[2:4] = 128
    rec = fig.measure(np.zeros((10, 10), np.uint8), conf)
    assert rec == {"confidence": {"mean": round(float(conf.mean()) / 255, 5), "low_share": 0.2}}


@pytest.mark.parametrize("text, message", [
    ("ego", "region 'ego': expected NAME=x0,y0,x1,y1 (fractions of the frame)"),
    ("ego=0,0,1", "region 'ego': expected four numbers x0,y0,x1,y1, got '0,0,1'"),
    ("ego=0.5,0,0.4,1", "region 'ego': 0.5,0,0.4,1 must be fractions of the frame with "
                        "0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"),
])
def test_bad_regions(text, message):
    with pytest.raises(ValueError) as e:
        parse_roi(text)
    assert str(e.value) == message


def test_a_model_without_road_cannot_measure_a_drivable_area():
    with pytest.raises(ValueError) as e:
        DrivingFigures(("sky", "tree"))
    assert str(e.value) == ("no drivable class road among the model's classes (sky, tree); "
                            "name one in figures.drivable_classes or turn figures.drivable off")


def test_drawing_outlines_the_polygon():
    fig = DrivingFigures(CAMVID11.class_names, draw=True)
    rec = fig.measure(road_scene())
    img = np.zeros((H, W, 3), np.uint8)
    fig.draw(img, rec)
    edge = img[196:200, 150]                                   # the bottom edge, antialiased
    assert edge[:, 0].max() == 0 and edge[:, 1].max() > 200 and edge[:, 2].max() > 200
    assert img[150, 150].tolist() == [0, 0, 0]               # inside: untouched


# ------------------------------------------------------------------ run, every option

@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("m") / "tiny.onnx", input_size=(360, 480),
                     uint8_input=True)


@pytest.mark.parametrize("clip, size, n", [(CAMVID_CLIP, (480, 360), 24),
                                           (HIGHWAY_CLIP, (960, 540), 12)])
def test_run_with_every_option_writes_well_formed_json_per_frame(
        shared_data, tmp_path, capsys, one_thread_config, clip, size, n):
    """The bundled model on the CamVid clip (real road), a tiny one on the highway clip."""
    out = tmp_path / "run"
    model_args = [] if clip == CAMVID_CLIP else ["--model", tiny_onnx(
        tmp_path / "t.onnx", input_size=(180, 320), uint8_input=True)]
    rc = cli_main("run", "--source", clip, *model_args, "--config", one_thread_config,
                  "--output", out, "--max-frames", n, "--temporal", "ema:0.5:flow",
                  "--save-confidence", "--save-masks", "--draw-drivable",
                  "--roi", "ego=0.35,0.55,0.65,1", "--roi", "left=0,0.5,0.3,1")
    capsys.readouterr()
    assert rc == 0
    recs = read_jsonl(out / "frames.jsonl")
    assert [r["index"] for r in recs] == list(range(n))
    classes = read_summary(out)["model"]["classes"]
    w, h = size
    for r in recs:
        assert r["temporal"] == ("start" if r["index"] == 0 else "smoothed")
        assert {"coverage", "drivable", "roi", "confidence", "stages_ms"} <= set(r)
        assert "figures" in r["stages_ms"]
        for shares in [r["coverage"], r["roi"]["ego"], r["roi"]["left"]]:
            assert list(shares) == classes and sum(shares.values()) == pytest.approx(1, abs=1e-3)
        d = r["drivable"]
        assert 0 <= d["share"] <= 1 and 0 <= d["free_ahead"] <= 1
        assert all(0 <= x < w and 0 <= y < h for x, y in d["polygon"])
        assert 0 <= r["confidence"]["low_share"] <= 1 and 0 < r["confidence"]["mean"] <= 1
    if clip == CAMVID_CLIP:                   # the bundled model sees the road ahead
        assert min(r["drivable"]["share"] for r in recs) > 0.15
        assert min(len(r["drivable"]["polygon"]) for r in recs) >= 3
    confs = sorted((out / "confidence").iterdir())
    assert [p.name for p in confs] == [p.name for p in sorted((out / "masks").iterdir())]
    c = cv2.imread(str(confs[-1]), cv2.IMREAD_UNCHANGED)
    assert c.shape == (h, w) and c.dtype == np.uint8
    assert round(float(c.mean()) / 255, 5) == recs[-1]["confidence"]["mean"]
    s = read_summary(out)
    assert s["model"]["temporal"] == "ema:0.5:flow" and "figures" in s["stages_ms"]
    assert s["config"]["figures"]["roi"] == ["ego=0.35,0.55,0.65,1", "left=0,0.5,0.3,1"]


def test_figures_none_and_default(tmp_path, capsys, model, one_thread_config):
    src = "synthetic:?w=320&h=180&frames=3"
    rc = cli_main("run", "--source", src, "--model", model, "--config", one_thread_config,
                  "--output", tmp_path / "a", "--figures", "none", "--no-video")
    assert rc == 0
    rec = read_jsonl(tmp_path / "a" / "frames.jsonl")[0]
    assert not {"coverage", "drivable", "roi", "confidence", "temporal"} & set(rec)
    assert "figures" not in rec["stages_ms"]
    rc = cli_main("run", "--source", src, "--model", model, "--config", one_thread_config,
                  "--output", tmp_path / "b", "--no-video")
    assert rc == 0
    rec = read_jsonl(tmp_path / "b" / "frames.jsonl")[0]
    assert {"coverage", "drivable"} <= set(rec) and "confidence" not in rec
    cfg = tmp_path / "stats.yaml"
    cfg.write_text("model:\n  threads: 1\nconfidence:\n  stats: true\n  low_threshold: 1.0\n")
    rc = cli_main("run", "--source", src, "--model", model, "--config", cfg, "--output",
                  tmp_path / "c", "--no-video", "--figures", "none")
    assert rc == 0
    rec = read_jsonl(tmp_path / "c" / "frames.jsonl")[0]
    assert set(rec["confidence"]) == {"mean", "low_share"} and rec["confidence"]["low_share"] == 1
    assert "coverage" not in rec and not (tmp_path / "c" / "confidence").exists()
    capsys.readouterr()


@pytest.mark.parametrize("args, message", [
    (["--temporal", "ema:2"], "config key 'temporal.smoothing': 'ema:2' is not allowed; "
                              "expected none | ema:ALPHA | ema:ALPHA:flow (0 < ALPHA <= 1)"),
    (["--roi", "ego=0,0,2,1"], "config key 'figures.roi': region 'ego': 0,0,2,1 must be "
                               "fractions of the frame with 0 <= x0 < x1 <= 1 and "
                               "0 <= y0 < y1 <= 1"),
    (["--figures", "coverage", "--draw-drivable"],
     "config key 'overlay.draw_drivable': needs figures.drivable: true"),
    (["--figures", "lanes"], "run: argument --figures: 'lanes': expected a comma list of "
                             "coverage, drivable, or none (see 'drivesegrt run -h')"),
])
def test_bad_options_are_one_line_exit_2(tmp_path, capsys, args, message):
    rc = cli_main("run", "--source", "synthetic:?frames=2", "--output", tmp_path / "r", *args)
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == f"drivesegrt: error: {message}"


@pytest.mark.parametrize("flag, what", [(["--temporal", "ema:0.5"], "temporal smoothing"),
                                        (["--save-confidence"], "confidence maps")])
def test_argmax_models_need_logits_exit_2(tmp_path, capsys, flag, what):
    argmax = tiny_onnx(tmp_path / "a.onnx", argmax=True, uint8_input=True)
    rc = cli_main("run", "--source", "synthetic:?frames=2", "--model", argmax,
                  "--output", tmp_path / "r", *flag)
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == (f"drivesegrt: error: {what} needs class scores, but this "
                                       f"model ends in an argmax (labels out); export it without "
                                       f"--argmax")
    assert not (tmp_path / "r").exists()
