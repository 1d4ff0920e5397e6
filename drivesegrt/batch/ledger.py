"""``DIR/batch.jsonl``: what happened to every drive, and the commit that makes a drive's
outputs appear whole.

The ledger is append-only, one JSON object a line, flushed and fsynced (only the batch's driver
writes it; a lock file keeps a second batch out of the same folder):

    {"event": "start", "time", "fingerprint", "model_sha256", "config", "force", "drives"}
    {"drive": ID, "state": "queued", "source"}
    {"drive": ID, "state": "done", "source", "frames_in", "frames_out", ..., "outputs"}
    {"drive": ID, "state": "failed", "source", "reason"}
    {"event": "end", "time", "done", "failed", "interrupted", "wall_s"}

A drive's state is its last record of the current *epoch*, which begins at the first start
record and at every start whose fingerprint differs from the one before it or that says
``force``: so outputs made with another model or config never count as done. A drive is
written into ``DIR/.partial/<id>/<attempt>/`` and renamed to ``DIR/<id>/`` only when complete;
its "done" record comes after the rename, so a crash at any point leaves a drive that is either
done with whole outputs or redone on the next run.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RunConfig, to_dict
from .drives import Drive
from .frames import flatten
from .layout import FRAMES, LEDGER, LOCK, PARTIAL

# Config keys that do not change what a drive's outputs contain: how fast it runs (threads,
# queues), where things are (the model is fingerprinted by its content), live-only options,
# --overwrite (every drive is written into a new folder).
NOT_IN_FINGERPRINT = ("source", "output", "overwrite", "model.path", "model.threads",
                      "pipeline.", "stream.", "sinks.show", "sinks.view")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(cfg: RunConfig, model_file: Path) -> dict:
    """What decides a drive's outputs: the model file's content and the config keys that
    shape the outputs. {"fingerprint", "model_sha256", "config"} (config: flat dotted keys)."""
    config = {k: v for k, v in flatten(to_dict(cfg), ".").items()
              if not k.startswith(NOT_IN_FINGERPRINT)}
    model_sha = sha256_file(model_file)
    digest = hashlib.sha256(json.dumps({"model": model_sha, "config": config},
                                       sort_keys=True).encode()).hexdigest()
    return {"fingerprint": digest[:16], "model_sha256": model_sha, "config": config}


def changes(old: dict, new: dict) -> list[str]:
    """What differs between two start records' fingerprints, as 'key: old -> new'."""
    diffs = []
    if old.get("model_sha256") != new["model_sha256"]:
        diffs.append(f"model file sha256 {str(old.get('model_sha256'))[:12]} -> "
                     f"{new['model_sha256'][:12]}")
    before, after = old.get("config", {}), new["config"]
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            diffs.append(f"{key}: {before.get(key)!r} -> {after.get(key)!r}")
    return diffs


@dataclass
class Plan:
    """What a run does with each drive."""
    todo: list[Drive] = field(default_factory=list)
    done: list[Drive] = field(default_factory=list)         # done earlier, outputs intact
    failed: list[Drive] = field(default_factory=list)       # failed earlier, not retried
    redo: dict[str, str] = field(default_factory=dict)      # id -> why a done drive is redone


class Ledger:
    """The ledger of the batch folder ``out``, locked for this process until ``close``."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / LEDGER
        self._lock = open(self.out / LOCK, "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "?"
            self._lock.close()
            raise ValueError(f"{self.out} is in use by another drivesegrt batch (pid "
                             f"{holder}); wait for it or choose another --output") from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()
        self.last_start: dict | None = None
        self.states: dict[str, dict] = {}
        for record in self._read():
            self._apply(record)
        self._f = open(self.path, "a")

    def _read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text().splitlines()
        records = []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if n == len(lines):      # a write cut short by a crash: that record never was
                    break
                raise ValueError(f"{self.path}:{n}: not a JSON line") from None
        return records

    def _apply(self, record: dict) -> None:
        if record.get("event") == "start":
            if (self.last_start is None or record.get("force")
                    or record["fingerprint"] != self.last_start["fingerprint"]):
                self.states = {}
            self.last_start = record
        elif "drive" in record:
            self.states[record["drive"]] = record

    def append(self, record: dict) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._apply(record)

    def start(self, fp: dict, force: bool, drives: int) -> None:
        self.append({"event": "start", "time": _now(), **fp, "force": force,
                     "drives": drives})

    def end(self, **counts) -> None:
        self.append({"event": "end", "time": _now(), **counts})

    def plan(self, drives: list[Drive], retry_failed: bool) -> Plan:
        """Split ``drives`` by their state in the current epoch (call after ``start``)."""
        plan = Plan()
        for d in drives:
            rec = self.states.get(d.id, {})
            state = rec.get("state")
            if state == "done":
                broken = intact(self.out, d.id, rec)
                if broken is None:
                    plan.done.append(d)
                    continue
                plan.redo[d.id] = broken
            elif state == "failed" and not retry_failed:
                plan.failed.append(d)
                continue
            plan.todo.append(d)
        return plan

    def close(self) -> None:
        self._f.close()
        self._lock.close()          # releases the lock


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---------------------------------------------------------------- outputs of one drive
def output_manifest(folder: Path) -> dict:
    """What a finished drive folder holds: sha256 and size of each file at its top, file
    count and bytes of each sub-folder (masks/, overlays/)."""
    files, dirs = {}, {}
    for p in sorted(Path(folder).iterdir()):
        if p.is_file():
            files[p.name] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        elif p.is_dir():
            sizes = [q.stat().st_size for q in p.rglob("*") if q.is_file()]
            dirs[p.name] = {"files": len(sizes), "bytes": sum(sizes)}
    return {"files": files, "dirs": dirs}


def parquet_path(out: Path, drive_id: str) -> Path:
    return Path(out) / FRAMES / f"{drive_id}.parquet"


def intact(out: Path, drive_id: str, record: dict) -> str | None:
    """None when the outputs a done record lists are all there with their sizes (a cheap
    check; sha256 is in the ledger for a full one), else what is missing."""
    folder = Path(out) / drive_id
    if not folder.is_dir():
        return f"{folder} is missing"
    listed = record.get("outputs", {})
    for name, info in listed.get("files", {}).items():
        p = folder / name
        if not p.is_file() or p.stat().st_size != info["bytes"]:
            return f"{p} is missing or changed"
    for name, info in listed.get("dirs", {}).items():
        sizes = [q.stat().st_size for q in (folder / name).rglob("*") if q.is_file()]
        if len(sizes) != info["files"] or sum(sizes) != info["bytes"]:
            return f"{folder / name} is missing files or changed"
    parquet = parquet_path(out, drive_id)
    if "parquet" in record and (not parquet.is_file()
                                or parquet.stat().st_size != record["parquet"]["bytes"]):
        return f"{parquet} is missing or changed"
    return None


def commit(out: Path, drive_id: str, attempt: Path, parquet: Path | None) -> int:
    """Move a complete attempt into place: the Parquet file to DIR/frames/<id>.parquet, the
    folder to DIR/<id> (renames on one file system: each is atomic). Outputs an earlier run left
    there without a done record in this epoch are replaced. Returns how many other attempts of
    the drive were lost (their workers died); their partial files are deleted."""
    final = Path(out) / drive_id
    if final.exists():
        shutil.rmtree(final)
    if parquet is not None:
        dst = parquet_path(out, drive_id)
        dst.parent.mkdir(exist_ok=True)
        os.replace(parquet, dst)
    os.rename(attempt, final)
    lost = [p for p in attempt.parent.iterdir() if p.is_dir()]
    shutil.rmtree(attempt.parent, ignore_errors=True)
    return len(lost)


def discard(out: Path, drive_id: str) -> None:
    """Remove what earlier runs left of a drive that is not done now (failed this time)."""
    shutil.rmtree(Path(out) / drive_id, ignore_errors=True)
    shutil.rmtree(Path(out) / PARTIAL / drive_id, ignore_errors=True)
    parquet_path(out, drive_id).unlink(missing_ok=True)
