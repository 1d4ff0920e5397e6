"""Segmenter: one frame through preprocess + engine + postprocess."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from drivesegrt.infer.segmenter import Segmenter


@pytest.mark.parametrize("filter_mode", ["linear", "point"])
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_segmenter_labels_at_frame_size(tiny_engine, filter_mode, resize):
    frame = np.random.default_rng(0).integers(0, 255, (270, 500, 3), dtype=np.uint8)
    seg = Segmenter(tiny_engine, filter_mode, resize)
    result = seg.segment(frame)
    labels, times = result.labels, result.stages_ms
    assert labels.shape == (270, 500) and labels.dtype == np.uint8
    assert labels.max() < len(seg.class_names)
    assert result.overlay is None                       # the CPU segmenter does not blend
    assert list(times) == ["preprocess", "infer", "postprocess"]
    assert all(v >= 0 for v in times.values())
    assert np.array_equal(seg(frame), labels)           # __call__: the labels alone


def test_segmenter_remap_to_driving5(tiny_engine):
    """remap maps every CamVid class through the driving5 table, class by class."""
    from drivesegrt.labels import DRIVING5

    frame = np.random.default_rng(3).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    full = Segmenter(tiny_engine)(frame)
    seg = Segmenter(tiny_engine, remap="driving5")
    labels = seg(frame)
    assert seg.class_names == DRIVING5.class_names
    assert seg.palette == DRIVING5.palette
    expected = {"Road": "road", "Pavement": "sidewalk", "Pole": "pole", "SignSymbol": "pole",
                "Car": "car"}
    names = tiny_engine.spec.meta.class_names
    table = np.array([DRIVING5.class_names.index(expected.get(n, "other")) for n in names])
    assert np.array_equal(labels, table[full])


def test_segmenter_matches_engine_logits(tiny_engine):
    """linear filter == F.interpolate(bilinear) of the engine's own logits to the frame size
    (stretch) + argmax."""
    from drivesegrt.preprocess import preprocess

    frame = np.random.default_rng(1).integers(0, 255, (360, 480, 3), dtype=np.uint8)
    seg = Segmenter(tiny_engine, "linear")
    labels = seg(frame)
    meta = tiny_engine.spec.meta
    x, _ = preprocess(frame, meta.input_size, meta.mean, meta.std)     # (1, 3, 96, 128)
    logits = torch.from_numpy(tiny_engine.infer(x))                    # (1, 11, 24, 32)
    ref = torch.nn.functional.interpolate(logits, size=(360, 480), mode="bilinear",
                                          align_corners=False)[0].argmax(0).numpy()
    assert (labels == ref).mean() >= 0.999


def test_warmup_rejects_class_mismatch(tiny_engine):
    from dataclasses import replace

    class Liar:
        spec = replace(tiny_engine.spec, meta=replace(tiny_engine.spec.meta,
                                                 class_names=tiny_engine.spec.meta.class_names[:5],
                                                 palette=tiny_engine.spec.meta.palette[:5]))
        infer = staticmethod(tiny_engine.infer)

    with pytest.raises(ValueError, match="outputs 11 classes but its metadata names 5"):
        Segmenter(Liar()).warmup(runs=1)


def test_bad_modes_rejected(tiny_engine):
    with pytest.raises(ValueError, match="allowed: linear, point"):
        Segmenter(tiny_engine, filter_mode="cubic")
    with pytest.raises(ValueError, match="allowed: stretch, letterbox"):
        Segmenter(tiny_engine, resize="crop")


def test_submitted_jobs_collected_later_give_the_same_labels(tiny_engine):
    """The pipeline submits on its infer thread and collects on its publish thread: frames
    submitted ahead and collected afterwards give exactly what one call gives."""
    import threading

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (135, 240, 3), dtype=np.uint8) for _ in range(4)]
    seg = Segmenter(tiny_engine)
    jobs = [seg.submit(img) for img in images]          # all in flight: no slot limit
    results = []
    t = threading.Thread(target=lambda: results.extend(j.result() for j in jobs))
    t.start()
    t.join()
    for result, image in zip(results, images):
        assert list(result.stages_ms) == ["preprocess", "infer", "postprocess"]
        assert np.array_equal(result.labels, seg(image))
    with pytest.raises(RuntimeError, match="already collected"):
        jobs[0].result()
