"""The names inside a batch folder (``drivesegrt batch ... --output DIR``), in one place.

    DIR/<drive_id>/          one drive's run folder, exactly as ``drivesegrt run`` writes it
    DIR/frames/<id>.parquet  per-frame records of every drive (one Parquet dataset)
    DIR/batch.jsonl          the ledger: what happened to every drive
    DIR/report.json .md .png the fleet report
    DIR/.partial/            drives being written (renamed into place when complete)
    DIR/.ray/                Ray's session files and logs (embedded Ray)
"""
LEDGER = "batch.jsonl"
LOCK = "batch.lock"
FRAMES = "frames"
REPORT_JSON, REPORT_MD, REPORT_PNG = "report.json", "report.md", "report.png"
PARTIAL = ".partial"
RAY = ".ray"
# A drive may not take one of these names (drives.py makes ids avoid them), casefolded.
RESERVED = {LEDGER, LOCK, FRAMES, REPORT_JSON, REPORT_MD, REPORT_PNG}
