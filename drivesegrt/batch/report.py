"""The fleet report: ``DIR/report.json``, ``DIR/report.md`` and ``DIR/report.png``, made from
the ledger's records of the current drives (so it covers drives done by earlier runs too) and
the figures of the run that just ended.

Per drive: state, frames in/out/failed, video duration, wall time and processing FPS, class
coverage (each class's mean share of a frame, from the runs' ``coverage`` figure), the road's
share per frame summarized (mean, min, p5, p50, p95, max and a short series), and the reason
of a failure. Totals: drives
by state, frames, hours of video, class coverage over the fleet (frame-weighted). The per-frame
records are the Parquet dataset in ``DIR/frames/`` (frames.py).
"""
from __future__ import annotations

import time
from pathlib import Path

from ..files import write_json
from .drives import Drive
from .layout import FRAMES, REPORT_JSON, REPORT_MD, REPORT_PNG

DRIVE_KEYS = ("kind", "frames_in", "frames_out", "frames_failed", "frames_dropped",
              "duration_s", "wall_s", "fps", "size", "class_shares", "road_share", "reason",
              "node")


def build(drives: list[Drive], states: dict[str, dict], last_run: dict,
          fingerprint: dict) -> dict:
    """report.json's dict."""
    rows = []
    for d in drives:
        rec = states.get(d.id, {})
        state = rec.get("state", "not done")
        if state not in ("done", "failed"):
            state = "not done"
        rows.append({"id": d.id, "source": d.source, "state": state,
                     **{k: rec[k] for k in DRIVE_KEYS if k in rec}})
    done = [states[r["id"]] for r in rows if r["state"] == "done"]
    covered = [r for r in done if r["class_shares"]]          # runs that recorded coverage
    frames = sum(r["frames_out"] for r in covered)
    classes = done[0]["classes"] if done else []
    shares = {c: round(sum(r["class_shares"].get(c, 0.0) * r["frames_out"] for r in covered)
                       / frames, 6) for c in classes} if frames else {}
    road = [(r["road_share"]["mean"], r["frames_out"]) for r in done if r.get("road_share")]
    totals = {
        "drives": len(rows),
        "done": len(done),
        "failed": sum(r["state"] == "failed" for r in rows),
        "not_done": sum(r["state"] == "not done" for r in rows),
        "frames": sum(r["frames_out"] for r in done),
        "frames_failed": sum(r["frames_failed"] for r in done),
        "video_s": round(sum(r["duration_s"] or 0.0 for r in done), 3),
        "processing_s": round(sum(r["wall_s"] for r in done), 3),
        "class_shares": shares,
        "road_share_mean": round(sum(m * n for m, n in road) / max(1, sum(n for _, n in road)),
                                 4) if road else None,
    }
    return {"generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model_sha256": fingerprint["model_sha256"], "fingerprint": fingerprint["fingerprint"],
            "config": fingerprint["config"], "classes": classes,
            "palette": done[0]["palette"] if done else [],
            "totals": totals, "last_run": last_run, "drives": rows,
            "frames_dataset": FRAMES + "/"}


def write(out: Path, report: dict) -> list[Path]:
    """report.json, report.md and report.png in ``out``; their paths."""
    out = Path(out)
    write_json(out / REPORT_JSON, report)
    (out / REPORT_MD).write_text(markdown(report))
    plot(report, out / REPORT_PNG)
    return [out / REPORT_MD, out / REPORT_JSON, out / REPORT_PNG]


def _num(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def markdown(report: dict) -> str:
    t, run = report["totals"], report["last_run"]
    lines = [
        "# Fleet report", "",
        f"Generated {report['generated']}; model sha256 {report['model_sha256'][:12]}, "
        f"config fingerprint {report['fingerprint']}.", "",
        f"**{t['drives']} drives**: {t['done']} done, {t['failed']} failed, {t['not_done']} not "
        f"done; {t['frames']} frames ({t['frames_failed']} failed), "
        f"{t['video_s'] / 3600:.3f} h of video, {t['processing_s']:.1f} s of processing.", "",
        (f"Last run: {run['drives_processed']} drives, {run['frames_processed']} frames in "
         f"{run['wall_s']:.1f} s on {run['workers']} workers ({run['ray']}): "
         f"{run['drives_per_hour']:.1f} drives/hour, {run['frames_per_s']:.1f} frames/s"
         + (" (interrupted)" if run["interrupted"] else "") + "."
         if run["workers"] else "Last run: nothing to do (Ray was not started)."), "",
        "| drive | state | frames in | frames out | failed | video s | processing FPS "
        "| road share mean (p5-p95) | largest classes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["drives"]:
        road = r.get("road_share")
        road_text = f"{road['mean']:.2f} ({road['p5']:.2f}-{road['p95']:.2f})" if road else ""
        top = sorted((r.get("class_shares") or {}).items(), key=lambda kv: -kv[1])[:3]
        lines.append(
            f"| {r['id']} | {r['state']} | {_num(r.get('frames_in'), 'd')} "
            f"| {_num(r.get('frames_out'), 'd')} | {_num(r.get('frames_failed'), 'd')} "
            f"| {_num(r.get('duration_s'), '.1f')} | {_num(r.get('fps'), '.1f')} "
            f"| {road_text} | {', '.join(f'{c} {s:.0%}' for c, s in top)} |")
    if t["class_shares"]:
        lines += ["", "Class coverage over the fleet (mean share of a frame): "
                  + ", ".join(f"{c} {s:.1%}" for c, s in
                              sorted(t["class_shares"].items(), key=lambda kv: -kv[1])) + "."]
    failed = [r for r in report["drives"] if r["state"] == "failed"]
    if failed:
        lines += ["", "## Failed drives", ""]
        lines += [f"- `{r['id']}` ({r['source']}): {r.get('reason', '')}" for r in failed]
    lines += ["", f"Per-frame records: `{report['frames_dataset']}` (Parquet, one file per drive)."
              " Plot: `report.png`.", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """Processing FPS, class coverage and road share over time, one row per done drive."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in report["drives"] if r["state"] == "done"]
    n = max(1, len(done))
    height = 2.4 + 0.3 * n                           # inches: title, axes, class legend
    fig, (ax_fps, ax_cls, ax_road) = plt.subplots(
        1, 3, figsize=(15, height), gridspec_kw={"width_ratios": [1, 1.4, 1.6]})
    ids = [r["id"] for r in done]
    ax_fps.barh(ids, [r["fps"] for r in done], color="#4c72b0")
    ax_fps.set_xlabel("processing FPS")
    ax_fps.invert_yaxis()
    left = [0.0] * len(done)
    for c, name in enumerate(report["classes"]):
        widths = [r["class_shares"].get(name, 0.0) for r in done]
        color = [v / 255 for v in report["palette"][c]] if c < len(report["palette"]) else None
        ax_cls.barh(ids, widths, left=left, color=color, label=name)
        left = [a + b for a, b in zip(left, widths)]
    ax_cls.set_xlim(0, 1)
    ax_cls.set_xlabel("class share of a frame (mean)")
    ax_cls.set_yticks([])
    ax_cls.invert_yaxis()
    for r in done:
        series = (r.get("road_share") or {}).get("series") or []
        if series:
            xs = [(i + 0.5) / len(series) for i in range(len(series))]
            ax_road.plot(xs, series, label=r["id"], linewidth=1)
    ax_road.set_xlim(0, 1)
    ax_road.set_ylim(0, 1)
    ax_road.set_xlabel("position in drive")
    ax_road.set_ylabel("road share of frame")
    if done:
        ax_road.legend(fontsize=6, loc="upper right")
    t = report["totals"]
    fig.suptitle(f"{t['done']}/{t['drives']} drives done, {t['frames']} frames", fontsize=10)
    if report["classes"] and done:
        fig.legend(*ax_cls.get_legend_handles_labels(), loc="lower center", fontsize=7,
                   ncol=len(report["classes"]), frameon=False)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
