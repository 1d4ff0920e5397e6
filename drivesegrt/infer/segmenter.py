"""Segmenter: preprocess + engine.infer + postprocess for one frame.

Shared by the streaming pipeline (its infer stage) and ``drivesegrt eval``. Everything about
the model (input size, mean/std, classes, palette, input/output format) comes from
``engine.spec.meta``; nothing is hard-coded here.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from ..engines.base import Engine
from ..labels import LabelSet, remap_table
from ..preprocess import RESIZE_MODES, preprocess
from ..timing import ms_since, now
from .postprocess import FILTER_MODES, Postprocessor


class Segmenter:
    """preprocess + engine.infer + postprocess for one frame (shared by the pipeline and eval).

    filter_mode: ``linear`` | ``point`` (see postprocess). resize: ``stretch`` | ``letterbox``.
    remap: optional reduced label set name (e.g. ``driving5``). input_size: (H, W) override of
    the model's input size (fully convolutional models only).
    Not thread-safe: use one Segmenter per thread (it reuses buffers).
    """

    def __init__(self, engine: Engine, filter_mode: str = "linear", resize: str = "stretch",
                 remap: str | None = None, input_size: tuple[int, int] | None = None):
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize mode {resize!r}; allowed: {', '.join(RESIZE_MODES)}")
        if filter_mode not in FILTER_MODES:
            raise ValueError(f"filter mode {filter_mode!r}; allowed: {', '.join(FILTER_MODES)}")
        self.engine = engine
        self.meta = engine.spec.meta
        self.resize = resize
        self.input_size = tuple(int(v) for v in (input_size or self.meta.input_size))
        if len(self.input_size) != 2 or min(self.input_size) < 8:
            raise ValueError(f"input size must be (height, width) >= 8, got {self.input_size}")
        source = LabelSet(self.meta.label_set, self.meta.class_names, self.meta.palette,
                          self.meta.ignore_index)
        lut, target = (None, source) if remap is None else remap_table(source, remap)
        self._labels = target
        self._post = Postprocessor(filter_mode, lut)

    @property
    def filter_mode(self) -> str:
        return self._post.filter_mode

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names of the ids this Segmenter returns (after remap)."""
        return self._labels.class_names

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        """RGB color per returned class id (after remap)."""
        return self._labels.palette

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """(H,W,3) uint8 BGR -> ((H,W) uint8 class ids at frame size,
        {"preprocess": ms, "infer": ms, "postprocess": ms})"""
        raw, times = self.infer(frame)
        labels, times["postprocess"] = self.postprocess(raw)
        return labels, times

    def infer(self, frame: np.ndarray) -> tuple[tuple, dict[str, float]]:
        """The first half of ``__call__``: preprocess + engine. Returns (raw, {"preprocess",
        "infer" ms}) where raw = (engine output for this frame, geometry) goes to
        :meth:`postprocess`, which the pipeline runs on its publish thread so the engine thread
        is not held up by the upsample (engines return fresh output arrays, so raw stays
        valid while the next frame is inferred)."""
        t0 = now()
        batch, geom = preprocess(frame, self.input_size, self.meta.mean, self.meta.std,
                                 self.resize, self.meta.input_format)
        t1 = now()
        out = self.engine.infer(batch)
        return (out[0], geom), {"preprocess": (t1 - t0) * 1e3, "infer": ms_since(t1)}

    def postprocess(self, raw: tuple) -> tuple[np.ndarray, float]:
        """raw from :meth:`infer` -> ((H,W) uint8 class ids at frame size, ms)."""
        t0 = now()
        labels = self._post(*raw)
        return labels, ms_since(t0)

    def close(self) -> None:
        """Release what this Segmenter owns (nothing on the CPU; see CudaSegmenter)."""

    def warmup(self, runs: int = 2) -> None:
        """Run on a blank frame to warm the engine up and check that its output agrees with
        the model's metadata (class count, shape); ValueError naming the mismatch if not."""
        h, w = self.input_size
        frame = np.zeros((h, w, 3), np.uint8)
        batch, _ = preprocess(frame, self.input_size, self.meta.mean, self.meta.std,
                              self.resize, self.meta.input_format)
        for _ in range(runs):
            try:
                out = self.engine.infer(batch)
            except (RuntimeError, ValueError, TypeError) as e:
                first = (str(e).splitlines() or [type(e).__name__])[0]
                raise ValueError(f"model does not accept input {tuple(batch.shape)} "
                                 f"({self.meta.input_format}): {first}") from None
        self._check_output(out)

    def _check_output(self, out) -> None:
        shape = tuple(out.shape)
        n = self.meta.num_classes
        if self.meta.output == "labels":
            if len(shape) != 3:
                raise ValueError(f"model declares label output (N,h,w) but returns {shape}")
            return
        if len(shape) != 4:
            raise ValueError(f"model declares logits (N,C,h,w) but returns shape {shape}")
        if shape[1] != n:
            raise ValueError(f"model outputs {shape[1]} classes but its metadata names {n} "
                             f"({', '.join(self.meta.class_names[:4])}, ...)")


def make_segmenter(engine: Engine, filter_mode: str = "linear", resize: str = "stretch",
                   remap: str | None = None, input_size: tuple[int, int] | None = None,
                   overlay_alpha: float | None = None) -> Segmenter:
    """The Segmenter for the engine's device: :class:`CudaSegmenter` (pre/postprocess and the
    overlay blend on the GPU, ``overlay_alpha`` its opacity) when the engine runs on CUDA and
    torch can use it, else the CPU :class:`Segmenter` (``overlay_alpha`` unused: the publish
    stage blends; e.g. ONNX Runtime's CUDA EP beside a CPU-only torch takes numpy)."""
    if engine.spec.device.startswith("cuda") and _torch_has_cuda():
        from .cuda.segmenter import CudaSegmenter

        return CudaSegmenter(engine, filter_mode, resize, remap, input_size,
                             overlay_alpha=overlay_alpha)
    return Segmenter(engine, filter_mode, resize, remap, input_size)


def _torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def segment_frames(segmenter: Segmenter, frames: Iterable, lookahead: int = 0,
                   defer_postprocess: bool = False) -> Iterator:
    """Yield ``(frame, error)`` for each Frame of ``frames``, in order: ``labels`` and
    ``stages_ms`` filled in, and ``overlay`` when the segmenter blends on the device
    (CudaSegmenter), else left None. A frame the segmenter fails on comes with the exception
    (``error``, labels left None), so the caller can count it and go on.

    lookahead: frames submitted before the oldest one is collected (segmenters with
    ``submit``; capped at their ``slots - 1``). 1 lets frame N+1 upload and preprocess while N
    is inferred; use 0 for live sources, where waiting for the next frame adds latency.
    defer_postprocess: CPU segmenters leave ``labels`` None and put ``Segmenter.infer``'s raw
    output in ``frame.raw`` for the caller to finish with ``segmenter.postprocess`` elsewhere.
    """
    submit = getattr(segmenter, "submit", None)
    lookahead = min(lookahead, getattr(segmenter, "slots", 1) - 1)
    if submit is None:
        for frame in frames:
            try:
                if defer_postprocess:
                    frame.raw, times = segmenter.infer(frame.image)
                else:
                    frame.labels, times = segmenter(frame.image)
            except Exception as e:  # one bad frame must not end the stream
                yield frame, e
                continue
            frame.stages_ms.update(times)
            yield frame, None
        return
    pending: deque = deque()

    def finish():
        frame, job = pending.popleft()
        try:
            frame.labels, frame.overlay, times = job.result()
        except Exception as e:
            return frame, e
        frame.stages_ms.update(times)
        return frame, None

    try:
        for frame in frames:
            try:
                job = submit(frame.image)
            except Exception as e:
                while pending:          # keep frame order: collect the earlier ones first
                    yield finish()
                yield frame, e
                continue
            pending.append((frame, job))
            if len(pending) > lookahead:
                yield finish()
        while pending:
            yield finish()
    finally:
        while pending:               # the consumer stopped early: free the segmenter's slots
            finish()
