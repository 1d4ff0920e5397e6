"""Drives to Ray workers: one actor per worker (one engine each), one drive in flight per
actor, longest recording first; results handed back as they complete.

Faults are Ray's to retry: a worker process that dies (SIGKILL, out of memory, its node
leaving) is restarted by Ray (``max_restarts``), elsewhere when its node is gone, and the drive
it was running is run again from the start (``max_task_retries``) in a fresh attempt folder; the
lost attempt's partial files are never committed. A drive whose worker died on every try
is recorded failed with that reason. A worker that Ray gave up on is replaced by a new one.
Ctrl-C/SIGTERM once: no new drives, the running ones finish; twice: running drives are
abandoned (their workers killed, nothing of them committed).
"""
from __future__ import annotations

import signal
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig
from ..run import _SignalStop
from .drives import Drive
from .layout import PARTIAL
from .worker import DriveWorker

MAX_RESTARTS = 8       # restarts of one worker process before Ray gives it up
TASK_RETRIES = 2       # runs of a drive after the first when its worker died mid-drive
POLL_S = 0.25


@dataclass(frozen=True)
class Resources:
    workers: int
    cpus: float            # per worker
    gpus: float            # per worker


@dataclass
class Outcome:
    interrupted: bool
    wall_s: float
    frames_seen: int       # frames published by all attempts, lost ones included
    error: str | None      # why drives were left undone although nobody stopped the batch


class _Stop(_SignalStop):
    """``run``'s SIGINT/SIGTERM handling (installed in the main thread, restored on exit) with
    the batch's meaning: ``level`` 1 = schedule no more drives, 2 = abandon the running ones."""

    def __init__(self):
        super().__init__()
        self.level = 0

    def _handle(self, signum, _frame):
        self.level += 1
        name = signal.Signals(signum).name
        if self.level == 1:
            print(f"\ndrivesegrt: {name}: no new drives; the running ones finish (again to "
                  f"abandon them)", file=sys.stderr, flush=True)
        else:
            print(f"\ndrivesegrt: {name}: abandoning the running drives", file=sys.stderr,
                  flush=True)


class _FrameCounter:
    """Frames published so far, from the frames.jsonl files of running attempts (the batch
    folder is shared by every worker, so the driver can read them)."""

    def __init__(self, out: Path):
        self.partial = Path(out) / PARTIAL
        self._seen: dict[Path, tuple[int, int]] = {}     # file -> (bytes read, lines)

    def poll(self, drive_ids) -> int:
        for drive_id in drive_ids:
            for path in (self.partial / drive_id).glob("*/frames.jsonl"):
                done, lines = self._seen.get(path, (0, 0))
                try:
                    with open(path, "rb") as f:
                        f.seek(done)
                        chunk = f.read()
                except OSError:          # committed (renamed) or discarded meanwhile
                    continue
                self._seen[path] = (done + len(chunk), lines + chunk.count(b"\n"))
        return self.total

    @property
    def total(self) -> int:
        return sum(lines for _, lines in self._seen.values())


def run_drives(ray, todo: list[Drive], cfg: RunConfig, out: Path, res: Resources,
               quiet: bool, on_result) -> Outcome:
    """Run ``todo`` on up to ``res.workers`` Ray actors; ``on_result(record)`` for every drive
    that ends done or failed (in completion order). Interrupted drives are left out (not done).
    Workers are released as soon as no drive waits for one, so a worker Ray restarts after
    losing its node finds room on the nodes left."""
    from tqdm import tqdm

    worker_cls = ray.remote(DriveWorker).options(
        num_cpus=res.cpus, num_gpus=res.gpus, max_restarts=MAX_RESTARTS,
        max_task_retries=TASK_RETRIES, scheduling_strategy="SPREAD")
    t0 = time.perf_counter()
    pending = deque(sorted(todo, key=lambda d: -d.bytes))
    idle: list = []
    running: dict = {}                 # ref -> (drive, worker)
    created, limit = 0, res.workers * 3    # the first workers, then replacements
    requeued: Counter = Counter()
    init_error = error = None
    frames = _FrameCounter(out)
    drives_bar = tqdm(total=len(todo), unit="drive", desc="drives", position=0, leave=False,
                      disable=None)
    frames_bar = tqdm(unit="frame", desc="frames", position=1, leave=False, disable=None)
    with _Stop() as stop:
        while running or (pending and stop.level == 0):
            if stop.level == 0:
                while (pending and len(running) + len(idle) < min(res.workers, len(pending)
                                                                  + len(running))
                       and created < limit):
                    idle.append(worker_cls.remote(cfg, quiet))
                    created += 1
                while pending and idle:
                    worker, drive = idle.pop(), pending.popleft()
                    running[worker.process.remote(drive, str(out))] = (drive, worker)
            if not pending or stop.level:
                for worker in idle:            # nothing for it to do: free its CPUs/GPUs
                    ray.kill(worker, no_restart=True)
                idle.clear()
            if stop.level >= 2:
                break
            if not running:
                if init_error is not None:
                    raise ValueError(f"no batch worker could load the model: {init_error}")
                error = "no batch worker left: each died more often than Ray restarts one"
                break
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            frames_bar.update(frames.poll({d.id for d, _ in running.values()}) - frames_bar.n)
            for ref in ready:
                drive, worker = running.pop(ref)
                try:
                    result = ray.get(ref)
                    idle.append(worker)
                except ray.exceptions.RayActorError as e:
                    ray.kill(worker, no_restart=True)      # a fresh one takes its place
                    result = {"drive": drive.id, "source": drive.source, "state": "failed",
                              "reason": f"its worker process died on each of "
                                        f"{TASK_RETRIES + 1} tries "
                                        f"({_first_line(e.error_msg)})"}
                except ray.exceptions.RayTaskError as e:
                    idle.append(worker)
                    result = {"drive": drive.id, "source": drive.source, "state": "failed",
                              "reason": _first_line(str(e))}
                if result["state"] == "unavailable":       # the engine did not load here
                    idle.remove(worker)
                    ray.kill(worker, no_restart=True)
                    if result["reason"] != init_error:
                        print(f"drivesegrt: warning: a batch worker could not load the model: "
                              f"{result['reason']}", file=sys.stderr, flush=True)
                    init_error = result["reason"]
                    limit = created                # the next ones would fail the same way
                    pending.appendleft(drive)
                    continue
                if result["state"] == "interrupted":
                    if stop.level == 0 and requeued[drive.id] < TASK_RETRIES:
                        requeued[drive.id] += 1
                        pending.appendleft(drive)
                    continue
                on_result(result)
                drives_bar.update()
        for worker in [w for _, w in running.values()] + idle:
            ray.kill(worker, no_restart=True)
        interrupted = stop.level > 0
    drives_bar.close()
    frames_bar.close()
    return Outcome(interrupted, time.perf_counter() - t0, frames.total, error)


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]
