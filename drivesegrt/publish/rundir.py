"""The run directory: claimed by one run at a time, fresh, and with room kept for summary.json.

    rundir = RunDir.claim(Path("runs/demo"), overwrite=False)
    ...                                     # sinks write overlay.mp4, masks/, frames.jsonl
    rundir.write_summary(summary)           # in the space reserved at the start
    rundir.release()

- **One run per directory**: ``.drivesegrt.lock`` holds the holder's pid, host and start time
  under an exclusive ``flock``; a second run gets ValueError naming the holder. The kernel
  drops the lock when its process dies, so a lock file left by a killed run is taken over
  (``stale_holder`` says whose it was).
- **Fresh**: a directory that already holds anything refuses the run (ValueError) unless
  ``overwrite``; then what a run writes (:data:`OWNED`) is removed, and nothing else, so masks
  of an earlier run never mix with the new ones.
- **summary.json is always written**: its space is reserved at the start (a placeholder file
  of :data:`RESERVE` bytes); at the end the summary is written into those blocks, then renamed
  into place, so a full disk cannot take it and a reader never sees half a file.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

from ..files import json_text

LOCK = ".drivesegrt.lock"
_RESERVE_FILE = ".summary.json.reserve"
SUMMARY = "summary.json"
# What a run writes; the only names --overwrite removes (a directory's contents included).
OWNED = ("overlay.mp4", "overlays", "masks", "confidence", "frames.jsonl", SUMMARY,
         f"{SUMMARY}.tmp", _RESERVE_FILE)
# Bytes kept for summary.json: a summary is a few KiB; long paths and many cameras fit too.
RESERVE = 64 * 1024


class RunDir:
    """A claimed run directory (see the module docstring). Use :meth:`claim`."""

    def __init__(self, path: Path, lock_fd: int, stale_holder: dict | None):
        self.path = path
        self.stale_holder = stale_holder
        self._lock_fd = lock_fd
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)

    @classmethod
    def claim(cls, path: Path, overwrite: bool = False, cameras: tuple[str, ...] = ()) -> RunDir:
        """Create ``path`` if needed, lock it for this run, make sure it holds no earlier
        outputs (removing them with ``overwrite``, also inside the ``cameras``' directories
        of a several-camera run) and reserve summary.json's space. PermissionError when it
        cannot be written; ValueError when another run holds it or it is not empty."""
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, stale = _lock(path / LOCK)
        except OSError as e:
            raise PermissionError(f"output directory {path} is not writable "
                                  f"({e.strerror or type(e).__name__})") from None
        try:
            rundir = cls(path, fd, stale)
            rundir._make_fresh(overwrite, cameras)
            rundir._reserve()
        except BaseException:
            _unlock(path / LOCK, fd)
            raise
        return rundir

    def _make_fresh(self, overwrite: bool, cameras: tuple[str, ...] = ()) -> None:
        # A killed run leaves its lock and reservation behind: not outputs.
        present = sorted(p.name for p in self.path.iterdir()
                         if p.name not in (LOCK, _RESERVE_FILE))
        if not present:
            return
        if not overwrite:
            listed = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
            raise ValueError(f"output directory {self.path} is not empty ({listed}); use "
                             f"--overwrite to replace a previous run's outputs, or another "
                             f"--output")
        for folder in (self.path, *(self.path / c for c in cameras)):
            for name in OWNED:
                _remove(folder / name)

    def _reserve(self) -> None:
        try:
            with open(self.path / _RESERVE_FILE, "wb") as f:
                f.write(b" " * RESERVE)
                f.flush()
                os.fsync(f.fileno())           # allocated now, not at writeback
        except OSError as e:
            raise PermissionError(f"output directory {self.path} is not writable "
                                  f"({e.strerror or type(e).__name__})") from None

    def gone(self) -> bool:
        """True when the directory was removed (or replaced) since the run claimed it."""
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._identity

    def write_summary(self, summary: dict) -> Path:
        """Write summary.json into the reserved space, then rename it into place. OSError
        (its filename set) when even that fails."""
        target = self.path / SUMMARY
        tmp = self.path / f"{SUMMARY}.tmp"
        data = json_text(summary).encode()
        try:
            reserved = (self.path / _RESERVE_FILE).exists()
            if reserved:
                os.replace(self.path / _RESERVE_FILE, tmp)
            # "r+b" keeps the reserved blocks: overwriting them needs no free space.
            with open(tmp, "r+b" if reserved else "wb") as f:
                f.write(data)
                f.truncate()
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as e:
            _remove(tmp)
            e.filename = str(target)
            raise
        return target

    def release(self) -> None:
        """Give the directory up: the lock file is removed, then unlocked."""
        if self._lock_fd >= 0:
            _remove(self.path / _RESERVE_FILE)
            _unlock(self.path / LOCK, self._lock_fd)
            self._lock_fd = -1


def _lock(path: Path) -> tuple[int, dict | None]:
    """Lock ``path`` (created if needed) for this process: (fd, the previous holder when it
    left a stale lock behind). ValueError naming the holder when another run holds it."""
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ValueError(f"output directory {path.parent} is in use by another run "
                             f"({describe_holder(holder)}); wait for it to end or choose another "
                             f"--output") from None
        except BaseException:
            os.close(fd)
            raise
        # The holder before us may have removed the file between our open and our lock:
        # then we hold a lock on a name nobody else sees; start again on the new file.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        stale = _read_holder(fd)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        return fd, stale
    raise ValueError(f"output directory {path.parent}: could not take its lock {path.name}")


def _unlock(path: Path, fd: int) -> None:
    _remove(path)
    os.close(fd)                               # closing drops the flock


def _read_holder(fd: int) -> dict | None:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return {"pid": "?", "host": "?", "started": "?"}
    return holder if isinstance(holder, dict) else None


def describe_holder(holder: dict | None) -> str:
    """'pid N on HOST, started TIME': who holds (or held) a run directory's lock."""
    if not holder:
        return "holder unknown"
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
            f"{holder.get('started', '?')}")


def _remove(path: Path) -> None:
    """Remove a file, or a directory's contents (the directory itself stays: it may be a mount
    point or a link the user set up for outputs). Missing is fine."""
    try:
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        else:
            path.unlink()
    except FileNotFoundError:
        pass
