"""The latency budget's decisions (deadline.py) on a fed clock: no threads, no sleeping."""
from __future__ import annotations

import pytest

from drivesegrt.deadline import STEPS, DeadlineController


def feed(ctl, age_ms, t0, t1, fps=20.0):
    """Ages of frames published at ``fps`` from t0 to t1; returns every change on the way."""
    changes, t = [], t0
    while t < t1:
        ctl.observe(age_ms, t)
        change = ctl.update(t)
        if change is not None:
            changes.append((round(t, 2), change.action, change.step, change.level))
        t += 1.0 / fps
    return changes


def test_degrades_one_step_per_hold_in_order_then_stops_at_the_last():
    ctl = DeadlineController(100.0, STEPS, window_s=1.0, hold_s=1.0)
    changes = feed(ctl, 150.0, 0.0, 6.0)
    assert [(a, s, lvl) for _, a, s, lvl in changes] == [
        ("degrade", "point_filter", 1), ("degrade", "overlay_half", 2),
        ("degrade", "skip_paced", 3), ("degrade", "input_small", 4)]
    times = [t for t, *_ in changes]
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(times, times[1:]))
    assert ctl.level == 4 and ctl.summary()["degrades"] == 4


def test_between_the_thresholds_nothing_changes():
    """p95 under the deadline but above restore_below x deadline: the degraded level holds."""
    ctl = DeadlineController(100.0, ("point_filter", "overlay_half"), hold_s=0.5)
    feed(ctl, 150.0, 0.0, 2.0)
    assert ctl.level == 2
    assert feed(ctl, 80.0, 2.0, 20.0) == [] and ctl.level == 2


def test_restores_last_step_first_after_sustained_slack():
    ctl = DeadlineController(100.0, ("point_filter", "overlay_half"), hold_s=0.5,
                             restore_below=0.7, restore_hold_s=2.0)
    feed(ctl, 150.0, 0.0, 2.0)
    changes = feed(ctl, 30.0, 2.0, 12.0)
    assert [(a, s, lvl) for _, a, s, lvl in changes] == [
        ("restore", "overlay_half", 1), ("restore", "point_filter", 0)]
    # The window first has to forget the slow frames (1 s), then 2 s of slack per restore.
    assert changes[0][0] >= 2.0 + 2.0 and changes[1][0] - changes[0][0] >= 2.0


def test_a_load_at_the_edge_does_not_flip_flop():
    """Slow while a step is off, fast while it is on (the step is exactly what helps): after a
    restore that is undone at once, the restore hold doubles, so changes get rarer."""
    ctl = DeadlineController(100.0, ("point_filter",), hold_s=0.5, restore_hold_s=1.0)
    changes, t = [], 0.0
    while t < 60.0:
        ctl.observe(40.0 if ctl.level else 160.0, t)
        change = ctl.update(t)
        if change is not None:
            changes.append(t)
        t += 0.05
    degraded_for = [b - a for a, b in zip(changes[::2], changes[1::2])]   # degrade -> restore
    assert len(changes) < 20                      # without the backoff: one every ~1.5 s
    assert degraded_for[-1] > 3 * degraded_for[0]
    assert ctl.restore_hold_s == 8.0


def test_too_few_frames_decide_nothing():
    ctl = DeadlineController(100.0, STEPS, min_samples=3)
    ctl.observe(500.0, 0.0)
    ctl.observe(500.0, 0.1)
    assert ctl.update(0.1) is None and ctl.level == 0


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="unknown deadline step 'faster'"):
        DeadlineController(100.0, ("faster",))
    with pytest.raises(ValueError, match="deadline must be > 0 ms, got 0"):
        DeadlineController(0.0)
