"""Per-frame data of one drive: its frames.jsonl as a Parquet table, and the drive's class
coverage from the ``coverage`` figure of every frame.

The table has one row per line of the drive's frames.jsonl, so every figure a run records
there comes along (stage times, latency, and the driving figures: ``coverage`` per class,
``drivable`` share, free space ahead and polygon, region shares, confidence), nested objects
flattened with ``_`` (``stages_ms_infer``, ``coverage_Road``, ``drivable_free_ahead``), plus
``drive``. ``DIR/frames/`` then reads as one dataset: ``pandas.read_parquet("DIR/frames")``,
``duckdb.sql("SELECT * FROM 'DIR/frames/*.parquet'")``, ``ray.data.read_parquet("DIR/frames")``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# Points kept of the road share's time series in the ledger and report (the Parquet file has
# every frame).
SERIES_POINTS = 100


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


def read_records(jsonl: Path) -> list[dict]:
    return [json.loads(line) for line in Path(jsonl).read_text().splitlines() if line.strip()]


def write_parquet(records: list[dict], drive_id: str, path: Path) -> None:
    """The drive's frame records as one Parquet file (columns in first-seen order, absent
    values null; ``stem``, the image name, is always there: null for videos)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"drive": drive_id, "stem": None, **flatten(r, "_")} for r in records]
    columns: dict[str, None] = {"drive": None, "stem": None}
    for row in rows:
        columns.update(dict.fromkeys(row))
    table = pa.table({c: pa.array([row.get(c) for row in rows],
                                  type=pa.string() if c in ("drive", "stem") else None)
                      for c in columns})
    pq.write_table(table, path)


def coverage(records: list[dict], class_names) -> dict:
    """The drive's class coverage from its frames' ``coverage`` figures: each class's mean
    share of a frame, and the road's share per frame summarized (mean, min, p5, p50, p95, max;
    ``series``: up to SERIES_POINTS means of consecutive frames); empty and None when the run
    recorded no coverage (``--figures`` without it) or the model has no road class."""
    frames = [r["coverage"] for r in records if "coverage" in r]
    if not frames:
        return {"class_shares": {}, "road_share": None}
    shares = np.array([[f.get(n, 0.0) for n in class_names] for f in frames])    # (N, C)
    road = [i for i, name in enumerate(class_names) if name.lower() == "road"]
    road_share = None
    if road:
        per_frame = shares[:, road[0]]
        chunks = np.array_split(per_frame, min(SERIES_POINTS, len(per_frame)))
        p5, p50, p95 = np.percentile(per_frame, [5, 50, 95])
        road_share = {"mean": round(float(per_frame.mean()), 4),
                      "min": round(float(per_frame.min()), 4), "p5": round(float(p5), 4),
                      "p50": round(float(p50), 4), "p95": round(float(p95), 4),
                      "max": round(float(per_frame.max()), 4),
                      "series": [round(float(c.mean()), 4) for c in chunks]}
    return {"class_shares": {n: round(float(v), 6) for n, v in zip(class_names, shares.mean(0))},
            "road_share": road_share}
