"""``drivesegrt batch``: many recorded drives through ``run``'s recorded pipeline, on Ray.

    drivesegrt batch fleet/ extra.mp4 drives.csv --output runs/fleet [--workers N]
    drivesegrt batch fleet/ --output /shared/fleet --address auto     # a running Ray cluster

Each drive (drives.py) goes through the same pipeline, with the same model/backend/config flags
and the same outputs as ``drivesegrt run``, into ``DIR/<drive_id>/``, on Ray workers that hold
one engine each (worker.py, schedule.py). The ledger ``DIR/batch.jsonl`` (ledger.py) makes the
batch resumable and exactly-once: a re-run skips drives that are done with their outputs
intact, redoes the rest, retries failed ones with ``--retry-failed``, and refuses a changed
model or config unless ``--force``. The fleet report (report.py) and the per-frame Parquet
dataset (frames.py) come at the end. Exit codes: 0 every drive done, 1 some failed (listed),
2 bad usage, 130 after Ctrl-C/SIGTERM (the ledger stays correct).
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import sys
from pathlib import Path

from ..run import add_pipeline_arguments, load_run_config
from .drives import find_drives
from .layout import FRAMES, LEDGER, PARTIAL, RAY, RESERVED

# Flags of `run` that make no sense for drives in a batch (live view, window, camera
# reconnects; --overwrite: every drive is written into a new folder): set to "not given" here;
# a config file that sets show or view is refused.
_LIVE_ONLY = {"source": None, "show": None, "view": None, "view_token": None,
              "view_host": None, "reconnect_timeout": None, "overwrite": None,
              "sources_file": None, "allow_missing": None, "deadline_ms": None}


def add_arguments(p) -> None:
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="video file, folder of videos and/or image folders (scanned "
                   "recursively), image folder, glob, or manifest (.txt/.list: one path per "
                   "line; .csv: path,drive_id)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="batch folder: DIR/<drive_id>/ per drive, batch.jsonl, report.*, "
                   "frames/*.parquet (on a cluster: a folder every node sees at this path)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="engines (Ray actors) running drives at once (default: the CPUs of "
                   "this machine or cluster / --cpus-per-worker)")
    p.add_argument("--address", metavar="auto|HOST:PORT",
                   help="join a running Ray cluster (ray start --head) instead of starting "
                   "Ray on this machine")
    p.add_argument("--cpus-per-worker", type=float, metavar="C",
                   help="CPUs Ray reserves for each worker (default: --threads, else 1); the "
                   "engine's threads default to it")
    p.add_argument("--gpus-per-worker", type=float, metavar="G",
                   help="GPUs Ray reserves for each worker, fractions allowed (default: 1 with "
                   "--device cuda, else 0)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run drives that failed in an earlier run again")
    p.add_argument("--force", action="store_true",
                   help="redo every drive, also when the model or config changed since the "
                   "drives in DIR were made")
    add_pipeline_arguments(p)
    p.set_defaults(**_LIVE_ONLY)


def batch_config(args):
    """The run config every drive gets (source and output are set per drive) and the
    resources per worker: (RunConfig, cpus, gpus)."""
    cfg = load_run_config(args)
    if cfg.sinks.show or cfg.sinks.view:
        raise ValueError("config keys 'sinks.show' and 'sinks.view' are for live runs, not "
                         "for drivesegrt batch")
    cpus = args.cpus_per_worker if args.cpus_per_worker is not None else (cfg.model.threads or 1)
    gpus = args.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if cfg.model.device.startswith("cuda") else 0.0
    if cpus <= 0 or gpus < 0 or (args.workers is not None and args.workers < 1):
        raise ValueError(f"--cpus-per-worker must be > 0, --gpus-per-worker >= 0 and "
                         f"--workers >= 1 (got {cpus:g}, {gpus:g}, {args.workers})")
    from ..infer.build import model_path
    from ..infer.pick import AUTO_BACKEND

    if cfg.model.backend == AUTO_BACKEND:       # every worker must run the one engine named
        raise ValueError("--backend auto chooses per run; a batch needs the backend named "
                         "(drivesegrt run --backend auto prints its choice)")
    model = model_path(cfg.model.path or None, cfg.model.backend).absolute()
    cfg = dataclasses.replace(cfg, source="", output=None, model=dataclasses.replace(
        cfg.model, path=str(model), threads=cfg.model.threads or max(1, int(cpus))))
    return cfg, cpus, gpus


def prepare(output: str) -> Path:
    """The batch folder: new, empty, or one a batch made (it holds batch.jsonl); anything
    else is refused, so a drive folder never replaces a folder of someone else's."""
    out = Path(output).absolute()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"--output {output}: cannot create it "
                              f"({e.strerror or type(e).__name__})") from None
    ours = RESERVED | {PARTIAL, RAY}
    if not (out / LEDGER).is_file():
        foreign = sorted(p.name for p in out.iterdir() if p.name.casefold() not in ours)
        if foreign:
            raise ValueError(f"--output {output}: the folder holds other files ({foreign[0]}, "
                             f"...) and no {LEDGER}; choose a new or empty folder")
    return out


def main(args) -> int:
    """``drivesegrt batch``: progress on stderr, drives and totals on stdout, exit 0/1/2/130."""
    from . import cluster, report
    from .ledger import Ledger, fingerprint

    ray = cluster.import_ray()
    cfg, cpus, gpus = batch_config(args)
    drives = find_drives(args.sources)
    out = prepare(args.output)
    fp = fingerprint(cfg, Path(cfg.model.path))
    ledger = Ledger(out)
    try:
        refuse_changes(ledger, fp, args.force)
        ledger.start(fp, args.force, len(drives))
        plan = ledger.plan(drives, args.retry_failed)
        print_plan(drives, plan)
        outcome, last_run = process(ray, args, cfg, (cpus, gpus), out, plan.todo, ledger)
        states = {d.id: ledger.states.get(d.id, {}) for d in drives}
        ledger.end(done=_count(states, "done"), failed=_count(states, "failed"),
                   interrupted=last_run["interrupted"], wall_s=last_run["wall_s"])
        paths = report.write(out, report.build(drives, states, last_run, fp))
    finally:
        ledger.close()
    print_end(states, last_run, paths, out)
    if outcome is not None and outcome.interrupted:
        return 130
    if outcome is not None and outcome.error:
        print(f"drivesegrt: error: {outcome.error}", file=sys.stderr)
        return 1
    return 0 if _count(states, "done") == len(drives) else 1


def refuse_changes(ledger, fp: dict, force: bool) -> None:
    """ValueError when the batch folder's drives were made with another model or config."""
    from .ledger import changes

    previous = ledger.last_start
    if previous and previous["fingerprint"] != fp["fingerprint"] and not force:
        diff = changes(previous, fp)
        raise ValueError(f"{ledger.path}: its drives were made with another model or config "
                         f"({'; '.join(diff[:3])}); pass --force to redo them, or choose "
                         f"another --output")


def print_plan(drives, plan) -> None:
    print(f"drives   {len(drives)} found: {len(plan.todo)} to do, {len(plan.done)} done "
          f"earlier, {len(plan.failed)} failed earlier"
          + (" (--retry-failed runs them again)" if plan.failed else ""), flush=True)
    for drive_id, why in plan.redo.items():
        print(f"redo     {drive_id}: {why}", flush=True)


def process(ray, args, cfg, resources: tuple[float, float], out: Path, todo, ledger):
    """Run the drives to do on Ray (nothing to do: Ray is not started); (Outcome or None,
    the report's figures of this run)."""
    from . import cluster
    from .schedule import Resources, run_drives

    cpus, gpus = resources
    stdout = sys.stdout          # ours; Ray's chatter on stdout goes to its log (cluster.py)
    for d in todo:
        ledger.append({"drive": d.id, "state": "queued", "source": d.source})
    outcome, workers, where = None, 0, "not started: nothing to do"
    if todo:
        num_cpus = max(cluster.local_cpus(), math.ceil((args.workers or 0) * cpus))
        try:
            with cluster.session(ray, args.address, out, num_cpus, args.verbose) as where:
                workers = _workers(ray, args.workers, cpus, gpus, len(todo))
                print(f"ray      {where}, logs in {out / RAY}; {workers} workers x {cpus:g} CPU"
                      + (f" + {gpus:g} GPU" if gpus else "")
                      + f", engine threads {cfg.model.threads}", file=stdout, flush=True)
                outcome = run_drives(ray, todo, cfg, out, Resources(workers, cpus, gpus),
                                     not args.verbose, _recorder(out, ledger, stdout))
        finally:
            shutil.rmtree(out / PARTIAL, ignore_errors=True)
    processed = [ledger.states[d.id] for d in todo if ledger.states[d.id]["state"] == "done"]
    frames = sum(r["frames_out"] for r in processed)
    wall = outcome.wall_s if outcome else 0.0
    return outcome, {"ray": where, "workers": workers, "wall_s": round(wall, 3),
                     "drives_processed": len(processed), "frames_processed": frames,
                     "drives_per_hour": round(len(processed) * 3600 / wall, 2) if wall else 0.0,
                     "frames_per_s": round(frames / wall, 2) if wall else 0.0,
                     "interrupted": bool(outcome and outcome.interrupted)}


def _recorder(out: Path, ledger, stdout):
    """What happens to a drive's result: a done drive is committed (renamed into place), then
    recorded; a failed one is recorded and what earlier runs left of it removed."""
    from tqdm import tqdm

    from .ledger import commit, discard, parquet_path

    def record(rec: dict) -> None:
        drive_id = rec["drive"]
        attempt = rec.pop("attempt", None)
        if rec["state"] == "done":
            rec["lost_attempts"] = commit(out, drive_id, Path(attempt),
                                          Path(rec["parquet"]["path"]))
            rec["parquet"]["path"] = str(parquet_path(out, drive_id))
            line = f"done     {drive_id}: {rec['frames_out']} frames, {rec['fps']:.1f} FPS"
            if rec["lost_attempts"]:
                line += (f" (its worker died {rec['lost_attempts']} time(s) mid-drive; redone "
                         f"from the start)")
        else:
            discard(out, drive_id)
            line = f"failed   {drive_id}: {rec['reason']}"
        ledger.append(rec)
        tqdm.write(line, file=stdout)

    return record


def print_end(states: dict[str, dict], last_run: dict, paths: list[Path], out: Path) -> None:
    done, failed = _count(states, "done"), _count(states, "failed")
    print(f"drives   {len(states)}: {done} done ({last_run['drives_processed']} now), {failed} "
          f"failed, {len(states) - done - failed} not done")
    if last_run["workers"]:
        print(f"speed    {last_run['drives_processed']} drives, {last_run['frames_processed']} "
              f"frames in {last_run['wall_s']:.1f} s: {last_run['drives_per_hour']:.0f} "
              f"drives/hour, {last_run['frames_per_s']:.1f} frames/s")
    for drive_id, rec in states.items():
        if rec.get("state") == "failed":
            print(f"failed   {drive_id}: {rec['reason']}")
    print(f"report   {paths[0]} (and {paths[1].name}, {paths[2].name}); per-frame Parquet: "
          f"{out / FRAMES}/")


def _count(states: dict[str, dict], state: str) -> int:
    return sum(rec.get("state") == state for rec in states.values())


def _workers(ray, requested: int | None, cpus: float, gpus: float, drives: int) -> int:
    """--workers, else as many as the cluster's CPUs (and GPUs) hold; never more than drives."""
    if requested:
        return min(requested, drives)
    resources = ray.cluster_resources()
    n = max(1, int(resources.get("CPU", 0) // cpus))
    if gpus:
        n = min(n, max(1, int(resources.get("GPU", 0) // gpus)))
    return min(n, drives)
