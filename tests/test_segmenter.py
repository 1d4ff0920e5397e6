"""Segmenter: one frame through preprocess + engine + postprocess."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pipeline_helpers import make_tiny_checkpoint

from drivesegrt.engines import load_engine
from drivesegrt.infer.segmenter import Segmenter


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.set_num_threads(1)
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("seg") / "tiny.pt")
    eng = load_engine("torch", path)
    yield eng
    eng.close()


@pytest.mark.parametrize("filter_mode", ["linear", "point"])
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_segmenter_labels_at_frame_size(engine, filter_mode, resize):
    frame = np.random.default_rng(0).integers(0, 255, (270, 500, 3), dtype=np.uint8)
    seg = Segmenter(engine, filter_mode, resize)
    labels, times = seg(frame)
    assert labels.shape == (270, 500) and labels.dtype == np.uint8
    assert labels.max() < len(seg.class_names)
    assert set(times) == {"preprocess", "infer", "postprocess"}
    assert all(v >= 0 for v in times.values())


def test_segmenter_remap_to_driving5(engine):
    frame = np.full((90, 120, 3), 100, np.uint8)
    seg = Segmenter(engine, remap="driving5")
    labels, _ = seg(frame)
    assert seg.class_names == ("road", "sidewalk", "pole", "car", "other")
    assert len(seg.palette) == 5
    assert labels.max() < 5


def test_segmenter_matches_engine_logits(engine):
    """linear filter == F.interpolate(bilinear) + argmax of the engine's own logits."""
    frame = np.random.default_rng(1).integers(0, 255, (360, 480, 3), dtype=np.uint8)
    seg = Segmenter(engine, "linear")
    labels, _ = seg(frame)
    from drivesegrt.preprocess import preprocess
    x, _ = preprocess(frame, (360, 480), engine.spec.meta.mean, engine.spec.meta.std)
    logits = torch.from_numpy(engine.infer(x))
    ref = torch.nn.functional.interpolate(logits, size=(360, 480), mode="bilinear",
                                          align_corners=False)[0].argmax(0).numpy()
    assert (labels == ref).mean() >= 0.999


def test_warmup_rejects_class_mismatch(engine):
    from dataclasses import replace

    class Liar:
        spec = replace(engine.spec, meta=replace(engine.spec.meta,
                                                 class_names=engine.spec.meta.class_names[:5],
                                                 palette=engine.spec.meta.palette[:5]))
        infer = staticmethod(engine.infer)

    with pytest.raises(ValueError, match="outputs 11 classes but its metadata names 5"):
        Segmenter(Liar()).warmup(runs=1)


def test_bad_modes_rejected(engine):
    with pytest.raises(ValueError, match="allowed: linear, point"):
        Segmenter(engine, filter_mode="cubic")
    with pytest.raises(ValueError, match="allowed: stretch, letterbox"):
        Segmenter(engine, resize="crop")


def test_deferred_postprocess_gives_the_same_labels(engine):
    """The pipeline infers on one thread and postprocesses on another: the split must give
    exactly what one call gives, frame by frame, in order."""
    from drivesegrt.frame import Frame
    from drivesegrt.infer.segmenter import segment_frames

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (135, 240, 3), dtype=np.uint8) for _ in range(4)]
    seg = Segmenter(engine)
    frames = [Frame(i, img, 0.0) for i, img in enumerate(images)]
    out = list(segment_frames(seg, iter(frames), defer_postprocess=True))
    assert [f.index for f, _ in out] == [0, 1, 2, 3]
    for (frame, error), image in zip(out, images):
        assert error is None and frame.labels is None and frame.raw is not None
        assert set(frame.stages_ms) == {"preprocess", "infer"}
        labels, ms = seg.postprocess(frame.raw)
        assert ms >= 0
        assert np.array_equal(labels, seg(image)[0])
