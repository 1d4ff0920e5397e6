"""The latency budget (``--deadline-ms``): pure decisions, no threads, no clock of its own.

Feed it the age of every published frame (capture -> published) with the time it was
published; ``update(t)`` answers at most one step change at a time:

    ctl = DeadlineController(100.0, STEPS)
    ctl.observe(age_ms, t)               # per published frame, any camera
    change = ctl.update(t)               # None, or Change("degrade" | "restore", step, level)

Degrade: while the p95 of the ages seen in the last ``window_s`` exceeds the deadline, the next
step is taken, at most one per ``hold_s`` (time for the last step to show in the ages).
Restore: once the p95 stays below ``restore_below`` x deadline for ``restore_hold_s``, the last
step is undone. Hysteresis against flip-flop: the gap between the two thresholds, and a restore
that is followed by a degrade of the same step within ``restore_hold_s`` doubles the restore
hold (up to 8x), so a load that sits at the edge settles on the degraded level.

Steps, in the order they are taken (the caller passes those that apply to its run):

    point_filter   upsample the model output with 'point' instead of 'linear'
    overlay_half   draw a fresh overlay every other frame (masks and frames.jsonl stay per frame)
    skip_paced     skip every other frame of paced recorded sources (``pace: true`` cameras)
    input_small    a smaller model input (models with dynamic input sizes)
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

STEPS = ("point_filter", "overlay_half", "skip_paced", "input_small")
MAX_RESTORE_BACKOFF = 8.0


@dataclass(frozen=True)
class Change:
    action: str             # degrade | restore
    step: str               # one of STEPS
    level: int              # steps in force after the change
    p95_ms: float           # frame age p95 over the window when it was decided

    def record(self, deadline_ms: float) -> dict:
        """The frames.jsonl event line of this change."""
        return {"event": "deadline", "action": self.action, "step": self.step,
                "level": self.level, "frame_age_p95_ms": round(self.p95_ms, 3),
                "deadline_ms": deadline_ms}


class DeadlineController:
    """See the module docstring. ``observe`` may be called from several threads; ``update``
    from one. Times in seconds on one monotonic clock (the caller's)."""

    def __init__(self, deadline_ms: float, steps=STEPS, window_s: float = 1.0,
                 hold_s: float = 1.0, restore_below: float = 0.7, restore_hold_s: float = 2.0,
                 min_samples: int = 3):
        unknown = [s for s in steps if s not in STEPS]
        if unknown:
            raise ValueError(f"unknown deadline step {unknown[0]!r}; allowed: {', '.join(STEPS)}")
        if deadline_ms <= 0:
            raise ValueError(f"deadline must be > 0 ms, got {deadline_ms}")
        self.deadline_ms = float(deadline_ms)
        self.steps = tuple(steps)
        self.window_s, self.hold_s = float(window_s), float(hold_s)
        self.restore_below, self.base_restore_hold_s = float(restore_below), float(restore_hold_s)
        self.restore_hold_s = self.base_restore_hold_s
        self.min_samples = max(1, int(min_samples))
        self.level = 0
        self.changes: list[Change] = []
        self._ages: deque[tuple[float, float]] = deque()     # (t published, age ms)
        self._lock = threading.Lock()
        self._t_change: float | None = None
        self._slack_since: float | None = None
        self._restored: tuple[str, float] | None = None     # (step, t) of the last restore

    def observe(self, age_ms: float, t: float) -> None:
        with self._lock:
            self._ages.append((t, float(age_ms)))

    def p95(self, t: float) -> float | None:
        """Frame age p95 (ms) over the window ending at ``t``; None with too few frames."""
        with self._lock:
            while self._ages and self._ages[0][0] < t - self.window_s:
                self._ages.popleft()
            ages = [a for _, a in self._ages]
        if len(ages) < self.min_samples:
            return None
        return float(np.percentile(ages, 95))

    def update(self, t: float) -> Change | None:
        """The step change due at ``t``, applied to ``level`` and returned; None: keep."""
        p95 = self.p95(t)
        if p95 is None:
            return None
        since = float("inf") if self._t_change is None else t - self._t_change
        if p95 > self.deadline_ms:
            self._slack_since = None
            if self.level < len(self.steps) and since >= self.hold_s:
                step = self.steps[self.level]
                if self._restored is not None and self._restored[0] == step \
                        and t - self._restored[1] < self.restore_hold_s:
                    self.restore_hold_s = min(self.restore_hold_s * 2,
                                              self.base_restore_hold_s * MAX_RESTORE_BACKOFF)
                self.level += 1
                return self._changed(Change("degrade", step, self.level, p95), t)
            return None
        if p95 >= self.restore_below * self.deadline_ms:
            self._slack_since = None
            return None
        if self._slack_since is None:
            self._slack_since = t
        if self.level > 0 and t - self._slack_since >= self.restore_hold_s \
                and since >= self.restore_hold_s:
            self.level -= 1
            step = self.steps[self.level]
            self._restored = (step, t)
            self._slack_since = t                 # the next restore needs its own slack
            return self._changed(Change("restore", step, self.level, p95), t)
        return None

    def _changed(self, change: Change, t: float) -> Change:
        self._t_change = t
        self.changes.append(change)
        return change

    def summary(self) -> dict:
        """summary.json's ``deadline`` section: steps, counts, where it ended."""
        return {"ms": self.deadline_ms, "steps": list(self.steps),
                "degrades": sum(c.action == "degrade" for c in self.changes),
                "restores": sum(c.action == "restore" for c in self.changes),
                "level_end": self.level,
                "steps_in_force_end": list(self.steps[:self.level]),
                "restore_hold_s_end": self.restore_hold_s}
