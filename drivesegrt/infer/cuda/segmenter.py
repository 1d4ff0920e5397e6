"""CudaSegmenter: the Segmenter contract on a CUDA device; the frame crosses the bus once.

    seg = CudaSegmenter(engine, "linear", overlay_alpha=0.5)   # engine.spec.device: cuda[:N]
    labels = seg(frame)           # (H, W) uint8 ids
    job = seg.submit(frame)       # or: queue frames ahead, collect them in order
    r = job.result()              # Segmented: labels, overlay (palette blend made on the
                                  # device), stages_ms {"preprocess", "infer", "postprocess"}

Per frame, on three CUDA streams this object owns, linked by CUDA events:

    upload stream    pinned staging -> device (non_blocking); resize + BGR->RGB + normalize into
                     the slot's input batch (engine dtype; NCHW, or channels_last for torch)
    compute stream   engine.infer on device tensors (torch eager or CUDA graph, ONNX Runtime IO
                     binding, TensorRT); upsample + argmax (+ remap) to uint8 labels; palette
                     lookup + alpha blend
    download stream  uint8 labels (and overlay) -> pinned host buffers (non_blocking)

Only uint8 crosses back, never logits. A ring of ``slots`` (default 2) holds each in-flight
frame's buffers, all allocated on the first frame of a size and reused: submitting frame N+1
before collecting frame N (the pipeline submits on its infer thread and collects on its publish
thread) lets N+1's upload and preprocess run while N is inferred. ``submit`` waits while all
slots are in flight; ``result`` waits on that frame's download event only. Stage times are CUDA-event times (``timing.StageTimer``); ``preprocess`` also includes the
host memcpy into pinned memory, ``postprocess`` runs until the download has finished (so it
includes the overlay blend; the publish stage's ``overlay`` time then covers legend and HUD).

Everything is torch ops, so with an engine on the CPU it runs on CPU tensors (no streams, no
pinned memory, host clocks): that is how tests check it against the CPU Segmenter without a GPU.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import numpy as np

from ...engines.base import Engine
from ...timing import StageTimer, ms_since, now
from ..segmenter import Job, Segmented, Segmenter
from .postprocess import DeviceOverlay, DevicePostprocessor
from .preprocess import DevicePreprocessor, FrameUploader


def _stream_context(stream):
    """``torch.cuda.stream(stream)``, or nothing on the CPU (stream None)."""
    if stream is None:
        return contextlib.nullcontext()
    import torch

    return torch.cuda.stream(stream)


@dataclass
class _Slot:
    """Buffers and events of one in-flight frame (device tensors unless noted)."""
    index: int
    timer: StageTimer
    frame_hw: tuple[int, int] | None = None
    batch: object = None          # engine input, (1, 3, ih, iw) or (1, ih, iw, 3)
    labels: object = None         # (H, W) uint8
    overlay: object = None        # (H, W, 3) uint8 BGR
    host_labels: object = None    # (H, W) uint8, pinned host memory
    host_overlay: object = None   # (H, W, 3) uint8, pinned host memory
    events: dict = field(default_factory=dict)   # prepped / computed / released (CUDA)
    busy: bool = False


class InFlight(Job):
    """A submitted frame; ``result()`` waits for it (once)."""

    def __init__(self, segmenter: "CudaSegmenter", slot: _Slot):
        self._seg, self._slot, self._done = segmenter, slot, False

    def result(self) -> Segmented:
        """Labels, the device-made overlay (None without ``overlay_alpha``) and stage times."""
        if self._done:
            raise RuntimeError("result() was already collected for this frame")
        self._done = True
        return self._seg._collect(self._slot)


class CudaSegmenter(Segmenter):
    """preprocess + engine + postprocess (+ overlay blend) on the engine's device.

    Arguments as :class:`Segmenter`, plus overlay_alpha (None: no device overlay; else the
    palette opacity, as ``visualize.Overlay``), slots (frames in flight at most) and chunk_bytes
    (cap on the float block of the ``linear`` upsample). Owns CUDA streams and buffers:
    ``close()`` releases them. ``submit`` from one thread; ``result`` may be called from another.
    """

    def __init__(self, engine: Engine, filter_mode: str = "linear", resize: str = "stretch",
                 remap: str | None = None, input_size: tuple[int, int] | None = None,
                 overlay_alpha: float | None = None, slots: int = 2,
                 chunk_bytes: int = 64 << 20):
        import torch

        super().__init__(engine, filter_mode, resize, remap, input_size)
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.device = torch.device(engine.spec.device)
        self.cuda = self.device.type == "cuda"
        self.slots = int(slots)
        self._pre = DevicePreprocessor(self.input_size, self.meta.mean, self.meta.std, resize,
                                       self.meta.input_format)
        self._dpost = DevicePostprocessor(filter_mode, self._lut, chunk_bytes)
        self._doverlay = None if overlay_alpha is None else DeviceOverlay(self.palette,
                                                                          overlay_alpha)
        self._uploader = FrameUploader(self.device, self.slots)
        self._streams = ([torch.cuda.Stream(device=self.device) for _ in range(3)]
                         if self.cuda else [None, None, None])      # upload, compute, download
        self._ring = [_Slot(i, StageTimer(self.device)) for i in range(self.slots)]
        self._next = 0
        self._closed = False
        self._freed = threading.Condition()      # a slot became free (result collected)

    def warmup(self, runs: int = 2) -> None:
        """Check the engine against the metadata (host path, as Segmenter), then run the device
        path on blank frames (allocates the buffers, captures CUDA graphs)."""
        super().warmup(runs=1)
        frame = np.zeros((*self.input_size, 3), np.uint8)
        for _ in range(runs):
            self(frame)

    def submit(self, frame: np.ndarray, block: bool = True) -> InFlight:
        """Queue one (H, W, 3) uint8 BGR frame; returns at once on CUDA (after the host memcpy
        into pinned memory). At most ``slots`` frames may be in flight: when all are, wait for
        another thread to collect one (``block``), else RuntimeError."""
        import torch

        if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3
                and frame.shape[2] == 3):
            raise ValueError(f"frames must be (H, W, 3) uint8 numpy arrays, got "
                             f"{getattr(frame, 'dtype', type(frame).__name__)} "
                             f"{getattr(frame, 'shape', '')}")
        if self._closed:
            raise RuntimeError("this CudaSegmenter is closed")
        slot = self._ring[self._next % self.slots]
        with self._freed:
            if slot.busy and not block:
                raise RuntimeError(f"{self.slots} frames already in flight; collect a result "
                                   f"first")
            while slot.busy:
                self._freed.wait()
            slot.busy = True
        self._next += 1
        try:
            with torch.inference_mode():
                self._run(frame, slot)
        except BaseException:
            self._release(slot)
            raise
        return InFlight(self, slot)

    def _release(self, slot: _Slot) -> None:
        with self._freed:
            slot.busy = False
            self._freed.notify_all()

    def _run(self, frame: np.ndarray, slot: _Slot) -> None:
        up, compute, down = self._streams
        timer, ev = slot.timer, slot.events
        timer.reset()
        self._ensure_buffers(slot, frame.shape[:2])
        t0 = now()
        self._uploader.stage(frame, slot.index)                  # host memcpy into pinned
        timer.add_host_ms("preprocess", ms_since(t0))
        with _stream_context(up):
            if self.cuda:
                up.wait_event(ev["released"])                    # slot's last frame is done
            timer.start("preprocess")
            frame_dev = self._uploader.copy(slot.index)          # (H, W, 3) uint8, device
            geom = self._pre(frame_dev, slot.batch)
            timer.stop("preprocess")
            if self.cuda:
                ev["prepped"].record()
        with _stream_context(compute):
            if self.cuda:
                compute.wait_event(ev["prepped"])
            timer.start("infer")
            out = self._as_tensor(self.engine.infer(slot.batch))  # (1, C, h, w) | (1, h, w)
            timer.stop("infer")
            timer.start("postprocess")
            self._dpost(out[0], geom, slot.labels)               # (H, W) uint8
            if self._doverlay is not None:
                self._doverlay(frame_dev, slot.labels, slot.overlay)
            if self.cuda:
                ev["computed"].record()
        if not self.cuda:
            timer.stop("postprocess")
            return
        with _stream_context(down):
            down.wait_event(ev["computed"])
            slot.host_labels.copy_(slot.labels, non_blocking=True)
            if self._doverlay is not None:
                slot.host_overlay.copy_(slot.overlay, non_blocking=True)
            timer.stop("postprocess")
            ev["released"].record()                              # frame, batch, outputs free

    def _collect(self, slot: _Slot):
        try:
            if self.cuda:
                slot.events["released"].synchronize()
                labels, overlay = slot.host_labels, slot.host_overlay
            else:
                labels, overlay = slot.labels, slot.overlay
            # Copies: the pinned buffers are reused by this slot's next frame, while sinks
            # may still hold these arrays.
            labels = labels.numpy().copy()
            overlay = overlay.numpy().copy() if self._doverlay is not None else None
            return Segmented(labels, overlay, slot.timer.read())
        finally:
            self._release(slot)

    def _as_tensor(self, out):
        import torch

        if isinstance(out, np.ndarray):                  # an engine that answered on the host
            out = torch.from_numpy(out).to(self.device)
        return out

    def _ensure_buffers(self, slot: _Slot, frame_hw: tuple[int, int]) -> None:
        """Allocate the slot's buffers on its first frame and when the frame size changes."""
        import torch

        dev = self.device
        if slot.batch is None:
            slot.batch = self._pre.new_batch(dev, getattr(torch, self.engine.input_dtype),
                                             self.engine.channels_last)
            if self.cuda:
                slot.events = {k: torch.cuda.Event() for k in ("prepped", "computed", "released")}
        if slot.frame_hw == tuple(frame_hw):
            return
        if self.cuda:
            slot.events["released"].synchronize()        # nothing may still use the old ones
        h, w = frame_hw
        slot.labels = torch.empty((h, w), dtype=torch.uint8, device=dev)
        with_overlay = self._doverlay is not None
        slot.overlay = torch.empty((h, w, 3), dtype=torch.uint8, device=dev) if with_overlay \
            else None
        if self.cuda:
            slot.host_labels = torch.empty((h, w), dtype=torch.uint8, pin_memory=True)
            slot.host_overlay = torch.empty((h, w, 3), dtype=torch.uint8, pin_memory=True) \
                if with_overlay else None
        slot.frame_hw = tuple(frame_hw)

    def close(self) -> None:
        """Wait for in-flight work and release streams and buffers (idempotent)."""
        for s in self._streams:
            if s is not None:
                s.synchronize()
        self._uploader.close()
        self._ring = [_Slot(i, slot.timer) for i, slot in enumerate(self._ring)]
        self._streams = [None, None, None]
        self._closed = True
