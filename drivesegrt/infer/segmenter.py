"""Segmenter: preprocess + engine + postprocess, one frame at a time.

The contract every segmenter keeps (this CPU one and ``infer.cuda.CudaSegmenter``):

    labels = seg(frame)                 # (H, W) uint8 class ids at the frame's size
    job = seg.submit(frame)             # start one frame ...
    result = job.result()               # ... collect it (Segmented: labels, overlay, stages_ms)
    jobs = seg.submit_batch(frames)     # several frames (any sizes), one engine call

``submit`` does the work that must happen in frame order on the engine's thread (CPU:
preprocess + engine; CUDA: queue it on the device); ``result`` finishes it (CPU: the upsample
and argmax; CUDA: wait for the download). The pipeline calls ``submit`` on its infer thread and
``result`` on its publish thread, so the engine never waits for the upsample. With temporal
smoothing (``infer.temporal``) or confidence maps, ``result`` also smooths the class
probabilities at model resolution (in frame order) and upsamples the top-class probability.
Everything about the model (input size, mean/std, classes, palette, input/output format) comes
from ``engine.spec.meta``; nothing is hard-coded here. ``submit_batch`` (several cameras) gives
each frame the same result ``submit`` would: each is preprocessed to the model size on its own,
the engine runs once on the stacked batch, and each job returns its frame to its own size.
Results may be collected on several threads at once (one per camera): the postprocess buffers
are per thread.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass

import cv2
import numpy as np

from ..engines.base import Engine
from ..labels import LabelSet, remap_table
from ..preprocess import RESIZE_MODES, preprocess
from ..timing import ms_since, now
from .postprocess import FILTER_MODES, Postprocessor, upsample_plane
from .temporal import TemporalFilter, TemporalSpec, low_res_gray, softmax


@dataclass
class Segmented:
    """One segmented frame."""
    labels: np.ndarray                  # (H, W) uint8 class ids at frame size
    overlay: np.ndarray | None          # (H, W, 3) uint8 BGR blend when made on the device
    stages_ms: dict[str, float]         # preprocess, infer, postprocess
    confidence: np.ndarray | None = None   # (H, W) uint8 top-class probability x 255, if asked
    temporal: str | None = None         # smoothing: start | cut | smoothed (None: off)


class Job(ABC):
    """A submitted frame; ``result()`` collects it, once."""

    @abstractmethod
    def result(self) -> Segmented:
        ...


class _HostJob(Job):
    def __init__(self, seg: "Segmenter", raw, times: dict[str, float]):
        self._seg, self._raw, self._times = seg, raw, times

    def result(self) -> Segmented:
        if self._raw is None:
            raise RuntimeError("result() was already collected for this frame")
        raw, self._raw = self._raw, None
        t0 = now()
        labels, confidence, status = self._seg._finish(*raw)
        return Segmented(labels, None, {**self._times, "postprocess": ms_since(t0)},
                         confidence, status)


class Segmenter:
    """preprocess + engine.infer + postprocess for one frame (the pipeline, eval and the Python
    API use it).

    filter_mode: ``linear`` | ``point`` (see postprocess). resize: ``stretch`` | ``letterbox``.
    remap: optional reduced label set name (e.g. ``driving5``). input_size: (H, W) override of
    the model's input size (fully convolutional models only). temporal: smooth the class
    probabilities over consecutive frames (``infer.temporal``; ``reset()`` marks a gap).
    confidence: also return the top-class probability map. Both need a model with logits out.
    ``submit`` from one thread; ``result`` of its jobs may be called from another, in order.
    """

    slots: int = 0      # frames in flight at most (0: no limit; engines return fresh arrays)

    def __init__(self, engine: Engine, filter_mode: str = "linear", resize: str = "stretch",
                 remap: str | None = None, input_size: tuple[int, int] | None = None,
                 temporal: TemporalSpec | None = None, confidence: bool = False):
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize mode {resize!r}; allowed: {', '.join(RESIZE_MODES)}")
        if filter_mode not in FILTER_MODES:
            raise ValueError(f"filter mode {filter_mode!r}; allowed: {', '.join(FILTER_MODES)}")
        self.engine = engine
        self.meta = engine.spec.meta
        self.resize = resize
        self.input_size = self._checked_size(
            input_size or self.meta.input_size,
            "model.input_size" if input_size else "the model's metadata input_size")
        source = LabelSet(self.meta.label_set, self.meta.class_names, self.meta.palette,
                          self.meta.ignore_index)
        lut, target = (None, source) if remap is None else remap_table(source, remap)
        self._labels = target
        self._lut = lut
        self._filter_mode = filter_mode
        self._local = threading.local()      # each collecting thread's Postprocessor
        if (temporal is not None or confidence) and self.meta.output == "labels":
            wanted = "temporal smoothing" if temporal is not None else "confidence maps"
            raise ValueError(f"{wanted} needs class scores, but this model ends in an argmax "
                             f"(labels out); export it without --argmax")
        self.temporal = temporal
        self.confidence = bool(confidence)
        self._smooth = TemporalFilter(temporal) if temporal is not None else None
        self._gap = False           # the next submitted frame does not follow the last one

    @property
    def filter_mode(self) -> str:
        return self._filter_mode

    def set_filter(self, mode: str) -> None:
        """Upsample with ``mode`` from the next collected result on (the latency budget's
        first step); ValueError naming it when it is not a filter mode."""
        if mode not in FILTER_MODES:
            raise ValueError(f"filter mode {mode!r}; allowed: {', '.join(FILTER_MODES)}")
        self._filter_mode = mode

    def set_input_size(self, input_size: tuple[int, int]) -> None:
        """Run the model at ``input_size`` (H, W) from the next submit on; ValueError when the
        model's graph takes only its fixed size."""
        self.input_size = self._checked_size(input_size, "input size")
        self.reset()                     # smoothing state is at the old model resolution

    def _checked_size(self, input_size, what: str) -> tuple[int, int]:
        """(H, W) the model can run at; ValueError (``what`` names the setting) when it is
        not two sides >= 8 or the model's graph takes only its fixed size."""
        size = tuple(int(v) for v in input_size)
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"input size must be (height, width) >= 8, got {size}")
        fixed = self.engine.spec.fixed_input_size
        if fixed is not None and size != tuple(fixed):
            raise ValueError(f"{what} {size[0]}x{size[1]}: the model's graph takes a fixed "
                             f"{fixed[0]}x{fixed[1]} input (export it with --dynamic-hw to run "
                             f"other sizes)")
        return size

    def _post(self, out, geom) -> np.ndarray:
        try:
            post = self._local.post
        except AttributeError:           # this thread's first result
            post = self._local.post = Postprocessor(self._filter_mode, self._lut)
        post.filter_mode = self._filter_mode
        return post(out, geom)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names of the ids this Segmenter returns (after remap)."""
        return self._labels.class_names

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        """RGB color per returned class id (after remap)."""
        return self._labels.palette

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> (H, W) uint8 class ids at the frame's size."""
        return self.segment(frame).labels

    def segment(self, frame: np.ndarray) -> Segmented:
        """One frame, start to end: labels, device overlay (None here) and stage times."""
        return self.submit(frame).result()

    def submit(self, frame: np.ndarray) -> Job:
        """Preprocess and run the engine on one (H, W, 3) uint8 BGR frame now; the job's
        ``result()`` runs the postprocess (engines return fresh output arrays, so the job stays
        valid while later frames are inferred)."""
        t0 = now()
        batch, geom = preprocess(frame, self.input_size, self.meta.mean, self.meta.std,
                                 self.resize, self.meta.input_format)
        t1 = now()
        out = self.engine.infer(batch)
        t2 = now()
        gray, restart, self._gap = None, self._gap, False
        if self._smooth is not None:       # the thumbnail needs the frame: take it now
            gray = low_res_gray(frame, geom, out.shape[-2:], self.resize)
        return _HostJob(self, (out[0], geom, gray, restart),
                        {"preprocess": (t1 - t0) * 1e3 + ms_since(t2), "infer": (t2 - t1) * 1e3})

    def submit_batch(self, frames: list[np.ndarray]) -> list[Job]:
        """Several (H_i, W_i, 3) uint8 BGR frames, one engine call on their (N, ...) batch;
        one job per frame, in order, each collecting what ``submit(frame)`` would. Stage times:
        each frame gets its own preprocess and the batch's whole infer time (what it waited)."""
        if not frames:
            return []
        if self._smooth is not None:
            raise ValueError("temporal smoothing follows one frame sequence; it cannot run on "
                             "a batch of several cameras")
        parts, geoms, pre_ms = [], [], []
        for frame in frames:
            t = now()
            part, geom = preprocess(frame, self.input_size, self.meta.mean, self.meta.std,
                                    self.resize, self.meta.input_format)
            parts.append(part)
            geoms.append(geom)
            pre_ms.append(ms_since(t))
        batch = np.concatenate(parts)                          # (N, ...) engine input
        t1 = now()
        out = self.engine.infer(batch)                         # (N, C, h, w) or (N, h, w)
        t2 = now()
        if len(out) != len(frames):
            raise ValueError(f"engine returned {len(out)} results for a batch of {len(frames)}")
        infer_ms = (t2 - t1) * 1e3
        return [_HostJob(self, (out[i], geoms[i], None, False),
                         {"preprocess": pre_ms[i], "infer": infer_ms})
                for i in range(len(frames))]

    def reset(self) -> None:
        """The next submitted frame does not follow the previous one (a cut, a gap in the
        source): temporal smoothing starts afresh there. No effect without smoothing."""
        self._gap = True

    def _finish(self, out, geom, gray, restart) -> tuple:
        """Engine output of one frame -> (labels, confidence map or None, temporal status or
        None); called in frame order."""
        if self._smooth is None and not self.confidence:
            return self._post(out, geom), None, None
        if not isinstance(out, np.ndarray):                 # torch tensor (e.g. CUDA)
            out = out.detach().cpu().numpy()
        if out.ndim != 3:
            raise ValueError(f"smoothing and confidence need (C,h,w) scores, got shape "
                             f"{out.shape}")
        scores, status = softmax(out), None                 # (C, h, w) float32
        if self._smooth is not None:
            scores, status = self._smooth(scores, gray, restart)
        labels = self._post(scores, geom)
        confidence = None
        if self.confidence:
            top = upsample_plane(scores.max(0), geom)        # (H, W) float32
            confidence = cv2.convertScaleAbs(top, alpha=255.0)   # rounds and saturates
        return labels, confidence, status

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
            except Exception as e:  # runtimes raise their own types (ORT: InvalidArgument, ...)
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
