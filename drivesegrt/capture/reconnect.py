"""Reconnect with backoff for live captures (network streams, cameras).

A real camera or RTSP/HTTP stream goes away: the network drops, the encoder reboots, the
server restarts. :class:`Reconnector` wraps an *opener* (a function returning an opened
``cv2.VideoCapture``-like object) and turns "read failed" into "reopen with backoff until it is
back", so the capture thread — and the run — survives the outage:

    rc = Reconnector(open_capture, "stream rtsp://cam/1", timeout_s=30)
    image = rc.read()          # (H, W, 3) uint8 BGR, or None once it gave up or was cancelled

Retries wait 0.5 s, 1 s, 2 s, 4 s, 5 s, 5 s, ... (:class:`Backoff`). ``timeout_s`` bounds one
outage: a stream away longer than that ends the read loop (``read`` returns None, ``gave_up``
says why) so the pipeline drains and finalizes like at the end of a file. ``cancel()`` (from
another thread) ends a wait at once. ``reconnects`` counts outages recovered from and
``outage_s`` their total length (last good frame → first good frame again).
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..timing import now


@dataclass(frozen=True)
class Backoff:
    """Retry delays: ``initial`` seconds, multiplied by ``factor`` up to ``maximum``."""

    initial: float = 0.5
    maximum: float = 5.0
    factor: float = 2.0

    def __post_init__(self):
        if not (0 < self.initial <= self.maximum) or self.factor < 1:
            raise ValueError(f"bad backoff {self}: need 0 < initial <= maximum and factor >= 1")

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(self.maximum, delay * self.factor)


def _log(msg: str) -> None:
    print(f"drivesegrt: {msg}", file=sys.stderr, flush=True)


class Reconnector:
    """Reads images from a capture that ``opener()`` (re)opens; reopens with backoff on failure.

    opener: returns an opened capture (``read() -> (ok, image)``, ``release()``) or raises
    ValueError/OSError when it cannot open. what: names the capture in log lines.
    timeout_s: give up after an outage this long (None: retry forever). ``cap``: an already
    opened capture to start with; without one the first open happens here and its error
    propagates (a source that is not there at start is bad input, not an outage).
    Thread use: ``read`` from one thread; ``cancel`` from any.
    """

    def __init__(self, opener: Callable[[], object], what: str, timeout_s: float | None = None,
                 backoff: Backoff = Backoff(), cap=None, log: Callable[[str], None] = _log):
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"reconnect timeout must be > 0 seconds, got {timeout_s}")
        self._opener = opener
        self.what = what
        self.timeout_s = timeout_s
        self.backoff = backoff
        self._cap = cap if cap is not None else opener()
        self._log = log
        self._cancel = threading.Event()
        self._busy = threading.Lock()         # held by read(): close() never releases mid-read
        self._delays: Iterator[float] = iter(())
        self._t_good = now()                  # last good frame (start of an outage)
        self._lost_at: float | None = None    # set while in an outage
        self.reconnects = 0
        self.attempts = 0                     # reopen attempts, successful or not
        self.outage_s = 0.0                   # total of recovered and final outages
        self.gave_up: str | None = None       # why read() ended the stream, when it did

    def read(self) -> np.ndarray | None:
        """The next image; blocks through outages. None: gave up (timeout) or cancelled."""
        with self._busy:
            return self._read()

    def _read(self) -> np.ndarray | None:
        while not self._cancel.is_set() and self.gave_up is None:
            if self._cap is not None:
                ok, image = self._cap.read()
                if ok and image is not None:
                    self._on_frame()
                    return image
                self._release()
                if self._cancel.is_set():
                    break
            self._on_lost()
            if not self._reopen():
                break
        if self._lost_at is not None:           # ended inside an outage: count its length too
            self.outage_s += now() - self._lost_at
            self._lost_at = None
        return None

    def _on_frame(self) -> None:
        t = now()
        if self._lost_at is not None:
            outage = t - self._t_good
            self.outage_s += outage
            self.reconnects += 1
            self._lost_at = None
            self._log(f"{self.what} is back after {outage:.1f} s (reconnect {self.reconnects})")
        self._t_good = t

    def _on_lost(self) -> None:
        if self._lost_at is None:
            self._lost_at = self._t_good
            self._delays = self.backoff.delays()   # one schedule per outage, even when a
            #                                        reopen succeeds but delivers no frame
            limit = (f"giving up after {self.timeout_s:g} s" if self.timeout_s
                     else "no timeout")
            self._log(f"{self.what} lost; reconnecting with backoff "
                      f"{self.backoff.initial:g}..{self.backoff.maximum:g} s ({limit})")

    def _reopen(self) -> bool:
        """Retry until open (True) or past the timeout / cancelled (False)."""
        deadline = None if self.timeout_s is None else self._lost_at + self.timeout_s
        for delay in self._delays:
            wait = delay if deadline is None else max(0.0, min(delay, deadline - now()))
            if self._cancel.wait(wait):
                return False
            self.attempts += 1
            try:
                self._cap = self._opener()
                return True
            except (ValueError, OSError):
                self._cap = None
            if deadline is not None and now() >= deadline:
                self.gave_up = (f"{self.what} did not come back within {self.timeout_s:g} s "
                                f"(reconnect timeout)")
                self._log(f"{self.gave_up}; ending the run")
                return False
        return False  # not reached: delays() is endless

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def cancel(self) -> None:
        """Make ``read`` return None soon (it finishes a read in progress first)."""
        self._cancel.set()

    def close(self, wait_s: float = 2.0) -> None:
        """Cancel and release the capture, unless a read is still stuck in it after
        ``wait_s`` (releasing under a reading thread would crash the decoder)."""
        self.cancel()
        if self._busy.acquire(timeout=wait_s):
            try:
                self._release()
            finally:
                self._busy.release()

    def describe(self) -> dict:
        return {"reconnects": self.reconnects, "reconnect_attempts": self.attempts,
                "outage_s": round(self.outage_s, 3)}
