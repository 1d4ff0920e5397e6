"""The batch worker: one process holding one engine, running drives one at a time through
the same recorded pipeline as ``drivesegrt run`` (``run.execute``), each into a fresh attempt
folder. It runs as a Ray actor (``schedule.py`` makes it one).

A drive's result is a plain dict, the ledger's record for it:

    {"drive", "state": "done", "attempt", "node", "pid", "frames_in", "frames_out", ...}
    {"drive", "state": "failed", "reason", ...}       a bad drive: its error in one line
    {"drive", "state": "interrupted", ...}            the worker was told to stop mid-drive
    {"drive", "state": "unavailable", "reason"}       the engine did not load on this worker
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path

from ..config import RunConfig
from ..files import write_json
from .drives import Drive
from .frames import coverage, read_records, write_parquet
from .layout import PARTIAL
from .ledger import output_manifest, sha256_file


class DriveWorker:
    """Loads the engine once (``assemble.load_segmenter``), then ``process`` drives with it."""

    def __init__(self, cfg: RunConfig, quiet: bool = True):
        from ..capture import quiet_decoder_logs
        from ..assemble import load_segmenter

        if quiet:
            quiet_decoder_logs()
        self.cfg = cfg
        self.seg = self.load_error = None
        try:
            self.seg, _ = load_segmenter(cfg)
        # Kept, not raised: the driver gets it as a plain result (an "unavailable" worker)
        # instead of a traceback inside Ray's actor error.
        except Exception as e:  # noqa: BLE001
            self.load_error = _one_line(e)

    def where(self) -> dict:
        """This worker's process id and the id of its node in the Ray cluster."""
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    def process(self, drive: Drive, out: str) -> dict:
        """Run ``drive`` into ``out/.partial/<id>/<pid>-<random>/`` (its Parquet file beside
        it); the result record. The attempt's name carries this process's id, so the attempt
        of a worker that died is easy to tell apart."""
        from ..run import execute

        attempt = Path(out) / PARTIAL / drive.id / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        base = {"drive": drive.id, "source": drive.source, **self.where(),
                "attempt": str(attempt)}
        if self.seg is None:
            return {**base, "state": "unavailable", "reason": self.load_error}
        cfg = dataclasses.replace(self.cfg, source=drive.source, output=str(attempt))
        try:
            summary, code = execute(cfg, progress=False, segmenter=self.seg)
        # A bad drive (unreadable, corrupt, empty, an engine that fails on its frames) is
        # that drive's failure, recorded with its reason; the worker goes on with the next.
        except Exception as e:  # noqa: BLE001
            shutil.rmtree(attempt, ignore_errors=True)
            return {**base, "state": "failed", "reason": _one_line(e)}
        if code == 130:
            shutil.rmtree(attempt, ignore_errors=True)
            return {**base, "state": "interrupted"}
        if code != 0:
            shutil.rmtree(attempt, ignore_errors=True)
            return {**base, "state": "failed", "reason": summary["error"]}
        return {**base, "state": "done",
                **self._finish(drive, attempt, Path(out) / drive.id, summary)}

    def _finish(self, drive: Drive, attempt: Path, final: Path, summary: dict) -> dict:
        names = list(self.seg.class_names)
        parquet = attempt.with_name(attempt.name + ".parquet")
        jsonl = attempt / "frames.jsonl"
        records = read_records(jsonl) if jsonl.is_file() else []
        write_parquet(records, drive.id, parquet)
        _point_summary_at(attempt, summary, final)
        src = summary["source"]
        frames_out = summary["frames_out"]
        return {"kind": drive.kind,
                "frames_in": summary["frames_in"], "frames_out": frames_out,
                "frames_failed": summary["frames_failed"],
                "frames_dropped": summary["frames_dropped"],
                "fps": summary["fps"], "wall_s": summary["wall_s"],
                "source_fps": src["fps"],
                "duration_s": round(frames_out / src["fps"], 3)
                if drive.kind == "video" and src["fps"] else None,
                "size": [src["width"], src["height"]],
                "classes": names, "palette": [list(c) for c in self.seg.palette],
                **coverage(records, names),
                "outputs": output_manifest(attempt),
                "parquet": {"path": str(parquet), "bytes": parquet.stat().st_size,
                            "sha256": sha256_file(parquet)}}


def _point_summary_at(attempt: Path, summary: dict, final: Path) -> None:
    """summary.json names the folder the drive ends up in, not its attempt folder."""
    text = json.dumps(summary).replace(json.dumps(str(attempt))[1:-1],
                                       json.dumps(str(final))[1:-1])
    write_json(attempt / "summary.json", json.loads(text))


def _one_line(e: BaseException) -> str:
    msg = (str(e).splitlines() or [""])[0]
    return msg if isinstance(e, (ValueError, OSError)) and msg else \
        f"{type(e).__name__}: {msg}".rstrip(": ")
