"""Recorded video files (anything FFmpeg decodes), read with PyAV.

PyAV rather than OpenCV's reader: ``cv2.VideoCapture.read`` reports a packet it cannot decode
as the end of the file, so one damaged frame mid-file silently ended a run. Here every packet
goes to the decoder; what it cannot decode is skipped and counted (``frames_corrupt``), and
decoding goes on with the next packet, so every frame FFmpeg can decode is delivered, in
order. Files of unknown length (raw H.264/MJPEG streams) have ``frame_count`` None.
"""
from __future__ import annotations

import heapq
from pathlib import Path

import av
import numpy as np

from .base import Source, _fps_or


def open_video(path: str | Path) -> av.container.InputContainer:
    """``path`` opened by FFmpeg, with at least one video stream; FileNotFoundError,
    PermissionError or ValueError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    if p.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(p), metadata_errors="ignore")
    except PermissionError:
        raise PermissionError(f"{path}: not readable (permission denied)") from None
    except av.FFmpegError:
        raise ValueError(f"{path}: cannot open as a video (unknown or corrupt format)") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path}: holds no video stream")
    return container


class VideoFileSource(Source):
    """A recorded video, decoded by PyAV. A packet FFmpeg cannot decode (damaged data) is
    skipped and counted in ``frames_corrupt``; a truncated file ends at its last whole
    frame. Frames come in presentation order, (H, W, 3) uint8 BGR."""

    kind = "video"

    def __init__(self, path: str):
        super().__init__(path)
        self._container = open_video(path)
        stream = self._container.streams.best("video")     # as ffmpeg and OpenCV choose
        # Frame and slice threads, as OpenCV's reader uses: decode keeps up with it.
        stream.thread_type = "AUTO"
        self._stream = stream
        self._packets = 0                 # video packets with data sent to the decoder
        self._decoded = 0                 # frames that came out of it
        self._lost = 0                    # packets known lost (their pts passed without a frame)
        self._pending: list[int] = []     # pts of packets sent whose frame has not come out
        self._ended = False
        self._frames = self._decode()
        first = next(self._frames, None)
        if first is None:
            self.close()
            raise ValueError(f"{path}: no decodable video frames")
        self._first: np.ndarray | None = first
        self.size = (first.shape[1], first.shape[0])
        self.fps = _fps_or(stream.average_rate or stream.guessed_rate or 0)
        self.frame_count = stream.frames or None

    @property
    def frames_corrupt(self) -> int:
        """Frames that could not be decoded, so far (exact once the file has ended)."""
        if self._ended:
            return max(0, self._packets - self._decoded)
        return min(self._lost, max(0, self._packets - self._decoded))

    def _decode(self):
        """Decoded frames as BGR arrays; packets the decoder rejects are skipped."""
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets, None)
            except av.FFmpegError as e:       # the container itself is damaged past here
                self.end_reason = (f"{self.spec}: unreadable data after frame "
                                   f"{self._decoded} ({e.strerror or type(e).__name__}); "
                                   f"the rest of the file is skipped")
                break
            if packet is None:
                break
            if packet.size:
                self._packets += 1
                if packet.pts is not None:
                    heapq.heappush(self._pending, packet.pts)
            try:
                frames = packet.decode()          # the last (empty) packet flushes
            except av.FFmpegError:
                continue                          # damaged data: counted by what never comes out
            for frame in frames:
                self._came_out(frame.pts)
                # threads=1: the decoder already uses the cores; a threaded conversion of
                # one frame costs more than it saves at these sizes.
                image = frame.to_ndarray(format="bgr24", threads=1)
                if frame.rotation:            # phone recordings: upright, as players show them
                    image = np.ascontiguousarray(np.rot90(image, (frame.rotation // 90) % 4))
                yield image
        self._ended = True
        if self.end_reason is None and self.frame_count and self._packets < self.frame_count:
            self.end_reason = (f"{self.spec}: the file ends after {self._packets} of its "
                               f"{self.frame_count} frames (truncated)")

    def _came_out(self, pts: int | None) -> None:
        """Frames come out in pts order: a packet with an earlier pts still waiting is lost."""
        self._decoded += 1
        if pts is None:
            return
        while self._pending and self._pending[0] < pts:
            heapq.heappop(self._pending)
            self._lost += 1
        if self._pending and self._pending[0] == pts:
            heapq.heappop(self._pending)

    def _next(self):
        if self._first is not None:
            image, self._first = self._first, None
            return image
        return next(self._frames, None)

    def close(self):
        self._frames.close()
        self._container.close()
