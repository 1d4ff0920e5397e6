"""From ``drivesegrt batch SOURCES...`` to drives: one recorded video or image folder each,
with an id that names its output folder.

SOURCES are video files, folders (scanned recursively: every video is a drive, every folder
holding images is one drive), globs, and manifests (``.txt``/``.list``/``.lst``: one path per
line, ``#`` comments; ``.csv``: a ``path`` column and an optional ``drive_id`` column; relative
paths are relative to the manifest). Every manifest entry is exactly one drive, so a missing or
empty entry becomes a drive that fails (recorded, the others go on); a SOURCE on the command
line that names nothing is bad usage.

Drive ids are stable: a drive's id is its path relative to the SOURCE folder it was found in
(folders joined with ``-``, suffix dropped; a file or image folder named directly: its stem or
name; a manifest: ``drive_id`` or the entry's stem), restricted to ``[A-Za-z0-9._-]``. Ids that
would collide (case-insensitively, or with a name the batch folder uses itself) all get
``-<6 hex digits of their absolute path>`` appended, so the result depends only on the set of
drives, never on their order.
"""
from __future__ import annotations

import csv
import glob
import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..files import IMAGE_EXTS, VIDEO_EXTS, image_paths, is_image
from .layout import RESERVED

MANIFEST_EXTS = (".txt", ".list", ".lst", ".csv")
_ID_OK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Drive:
    id: str            # output folder name under the batch folder
    source: str        # what ``open_source`` opens: a video file, or an image folder or glob
    kind: str          # "video" | "images"
    bytes: int = 0     # size of the recording (longest first makes the batch end sooner)


@dataclass(frozen=True)
class _Found:
    name: str          # id before collisions are resolved
    source: Path       # a video file, an image folder or an image glob
    kind: str
    explicit: bool = False   # a manifest's drive_id: kept as given


def find_drives(sources: list[str]) -> list[Drive]:
    """The drives named by ``sources``, in the order found, each recording once."""
    found: list[_Found] = []
    for spec in sources:
        found += _expand(spec)
    # A recording named twice (a folder and a manifest line) is one drive, at its first
    # place, named by a manifest's drive_id when one gives it.
    unique: dict[str, _Found] = {}
    for f in found:
        key = str(Path(f.source).resolve())
        if key not in unique or (f.explicit and not unique[key].explicit):
            unique[key] = f
    return _assign_ids(list(unique.values()))


def _expand(spec: str) -> list[_Found]:
    path = Path(spec)
    if not path.exists() and any(ch in spec for ch in "*?["):
        matches = sorted(glob.glob(spec, recursive=True))
        if not matches:
            raise FileNotFoundError(f"no files match {spec}")
        images = [m for m in matches if Path(m).suffix.lower() in IMAGE_EXTS]
        found = [_Found(_name(Path(images[0]).parent.name or "images"), Path(spec), "images")] \
            if images else []
        for m in matches:
            if m not in images:
                found += _expand_path(Path(m), spec)
        return found
    if not path.exists():
        raise FileNotFoundError(f"source not found: {spec}")
    return _expand_path(path, spec)


def _expand_path(path: Path, spec: str) -> list[_Found]:
    if path.is_dir():
        found = _scan(path, path)
        if not found:
            raise FileNotFoundError(f"no videos or images found in {spec} (video suffixes: "
                                    f"{', '.join(VIDEO_EXTS)}; image suffixes: "
                                    f"{', '.join(IMAGE_EXTS)})")
        return found
    if path.suffix.lower() in MANIFEST_EXTS:
        return _read_manifest(path)
    if path.suffix.lower() in IMAGE_EXTS:
        return [_Found(_name(path.stem), path, "images")]
    return [_Found(_name(path.stem), path, "video")]


def _scan(folder: Path, root: Path) -> list[_Found]:
    """Every video below ``folder`` and every folder holding images, in name order."""
    entries = sorted(folder.iterdir())
    found = []
    if any(is_image(e) for e in entries):
        rel = folder.relative_to(root).parts
        found.append(_Found(_name("-".join(rel) if rel else folder.name), folder, "images"))
    for e in entries:
        if e.is_file() and e.suffix.lower() in VIDEO_EXTS:
            found.append(_Found(_name("-".join(e.relative_to(root).with_suffix("").parts)),
                                e, "video"))
    for e in entries:
        if e.is_dir() and not e.name.startswith("."):
            found += _scan(e, root)
    return found


def _read_manifest(path: Path) -> list[_Found]:
    base = path.parent
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text manifest (one path per line, or CSV with "
                         f"path,drive_id)") from None
    rows: list[tuple[int, str, str | None]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        fields = [f.strip() for f in reader.fieldnames or []]
        if "path" not in fields:
            raise ValueError(f"{path}: a CSV manifest needs a 'path' column (and optionally "
                             f"'drive_id'); header: {','.join(fields) or '(empty)'}")
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if row["path"]:
                rows.append((line, row["path"], row.get("drive_id") or None))
    else:
        for line, entry in enumerate(text.splitlines(), start=1):
            entry = entry.strip()
            if entry and not entry.startswith("#"):
                rows.append((line, entry, None))
    found = []
    for line, entry, drive_id in rows:
        source = Path(entry) if Path(entry).is_absolute() else base / entry
        if drive_id is not None and not _ID_OK.fullmatch(drive_id):
            raise ValueError(f"{path}:{line}: drive_id {drive_id!r}: use letters, digits, "
                             f"'.', '_' and '-' (not first)")
        kind = "images" if image_paths(source) is not None else "video"
        name = drive_id or _name(source.name if source.is_dir() else source.stem)
        found.append(_Found(name, source, kind, explicit=drive_id is not None))
    if not found:
        raise ValueError(f"{path}: manifest lists no drives")
    return found


def _name(text: str) -> str:
    """``text`` restricted to [A-Za-z0-9._-], not starting with '.' or '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    return re.sub(r"^[.-]+", "_", name) or "drive"


def _assign_ids(found: list[_Found]) -> list[Drive]:
    groups: dict[str, list[_Found]] = defaultdict(list)
    for f in found:
        groups[f.name.casefold()].append(f)
    explicit: dict[str, _Found] = {}
    for f in found:
        if f.explicit:
            other = explicit.setdefault(f.name.casefold(), f)
            if other is not f:
                raise ValueError(f"drive_id {f.name!r} is given twice ({other.source} and "
                                 f"{f.source})")
    drives = []
    for f in found:
        key = f.name.casefold()
        clash = len(groups[key]) > 1 or key in RESERVED
        name = f.name
        if clash and not f.explicit:
            digest = hashlib.sha1(str(Path(f.source).absolute()).encode()).hexdigest()[:6]
            name = f"{f.name}-{digest}"
        # Absolute: workers may run in another folder (or on another machine, same mount).
        drives.append(Drive(name, str(Path(f.source).absolute()), f.kind, _bytes(f)))
    ids = [d.id.casefold() for d in drives]
    if len(set(ids)) != len(ids) or set(ids) & RESERVED:
        dup = next(i for i in ids if ids.count(i) > 1 or i in RESERVED)
        raise ValueError(f"drive id {dup!r} cannot be made unique; give drive_id values in a "
                         f"CSV manifest")
    return drives


def _bytes(f: _Found) -> int:
    if f.kind == "video":
        path = Path(f.source)
        return path.stat().st_size if path.is_file() else 0
    return sum(p.stat().st_size for p in image_paths(f.source) or [])
