"""Per-frame data of one drive: the class pixels of every published frame (a sink beside the
run's own), and the drive's per-frame table as Parquet.

The table has one row per line of the drive's frames.jsonl (so every figure a run records
there, driving figures included, comes along), nested objects flattened with ``_``
(``stages_ms_infer``), plus ``drive`` and ``share_<class>`` (that class's share of the frame's
pixels). ``DIR/frames/`` then reads as one dataset: ``pandas.read_parquet("DIR/frames")``,
``duckdb.sql("SELECT * FROM 'DIR/frames/*.parquet'")``, ``ray.data.read_parquet("DIR/frames")``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..frame import Frame
from ..publish.sinks import Sink

# Points kept of the road share's time series in the ledger and report (the Parquet file has
# every frame).
SERIES_POINTS = 100


class ClassPixels(Sink):
    """Counts each class's pixels in every published frame (in the publish thread: one
    bincount per frame)."""

    name = "class_pixels"

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.counts: dict[int, np.ndarray] = {}     # frame index -> (C,) int64

    def write(self, frame: Frame) -> None:
        counts = np.bincount(frame.labels.ravel(), minlength=self.num_classes)
        self.counts[frame.index] = counts[:self.num_classes]

    def describe(self) -> dict:
        return {"path": None, "frames": len(self.counts)}


def column_name(class_name: str) -> str:
    return "share_" + re.sub(r"[^a-z0-9]+", "_", class_name.lower()).strip("_")


def flatten(record: dict, sep: str, prefix: str = "") -> dict:
    """Nested objects as one level: {"a": {"b": 1}} -> {"a<sep>b": 1}; tuples as lists (as
    they come back from JSON)."""
    out = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(flatten(v, sep, f"{prefix}{k}{sep}"))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def frame_rows(jsonl: Path, pixels: ClassPixels, class_names, drive_id: str) -> list[dict]:
    """frames.jsonl's records joined with the class shares of the same frame."""
    names = [column_name(c) for c in class_names]
    rows = []
    for line in Path(jsonl).read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        row = {"drive": drive_id, "stem": None, **flatten(record, "_")}
        counts = pixels.counts.get(record["index"])
        total = int(counts.sum()) if counts is not None else 0
        for name, n in zip(names, counts if counts is not None else [0] * len(names)):
            row[name] = float(n) / total if total else None
        rows.append(row)
    return rows


def write_parquet(rows: list[dict], path: Path) -> None:
    """``rows`` as one Parquet file (columns in first-seen order, absent values null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    table = pa.table({c: pa.array([row.get(c) for row in rows],
                                  type=pa.string() if c in ("drive", "stem") else None)
                      for c in columns} if rows else {"drive": pa.array([], pa.string())})
    pq.write_table(table, path)


def coverage(pixels: ClassPixels, class_names) -> dict:
    """The drive's class coverage: each class's share of all pixels, and the road's share per
    frame summarized (mean, min, p5, p50, p95, max; ``series``: up to SERIES_POINTS means of
    consecutive frames); road None when the model has no road class."""
    if not pixels.counts:
        return {"class_shares": {}, "pixels": 0, "road_share": None}
    counts = np.stack([pixels.counts[i] for i in sorted(pixels.counts)])     # (N, C)
    total = counts.sum()
    shares = {name: round(float(n) / total, 6) for name, n in zip(class_names, counts.sum(0))}
    road = [i for i, name in enumerate(class_names) if name.lower() == "road"]
    road_share = None
    if road:
        per_frame = counts[:, road[0]] / np.maximum(counts.sum(1), 1)
        chunks = np.array_split(per_frame, min(SERIES_POINTS, len(per_frame)))
        p5, p50, p95 = np.percentile(per_frame, [5, 50, 95])
        road_share = {"mean": round(float(per_frame.mean()), 4),
                      "min": round(float(per_frame.min()), 4), "p5": round(float(p5), 4),
                      "p50": round(float(p50), 4), "p95": round(float(p95), 4),
                      "max": round(float(per_frame.max()), 4),
                      "series": [round(float(c.mean()), 4) for c in chunks]}
    return {"class_shares": shares, "pixels": int(total), "road_share": road_share}
