"""The live browser view (--view): HTTP endpoints, and the page for real in headless Chromium."""
from __future__ import annotations

import importlib.util
import json
import signal
import socket
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest
from browser import CHROMIUM, Chromium
from helpers import LiveRun, cli_main, published_frame, read_summary, tiny_checkpoint

from drivesegrt.publish.view import BOUNDARY, ViewSink, parse_address


def get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.headers, r.read()


def mjpeg_parts(url: str, n: int, timeout: float = 10) -> list[bytes]:
    """The first ``n`` JPEGs of a multipart/x-mixed-replace stream."""
    parts = []
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        while len(parts) < n:
            line = r.readline()
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                r.readline()                                   # blank line after headers
                parts.append(r.read(length))
    return parts


@pytest.mark.parametrize("address, expected", [
    ("http://127.0.0.1:8080", ("127.0.0.1", 8080)), ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("8081", ("127.0.0.1", 8081)), ("http://0.0.0.0:9000/", ("0.0.0.0", 9000))])
def test_parse_address(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["ftp://127.0.0.1:80", "http://127.0.0.1", "localhost:x",
                                     "http://127.0.0.1:80/view"])
def test_parse_address_rejects(address):
    with pytest.raises(ValueError, match="expected http://HOST:PORT"):
        parse_address(address)


def test_view_serves_page_stats_and_mjpeg_and_encodes_only_while_watched():
    view = ViewSink("http://127.0.0.1:0", max_fps=50)
    try:
        assert view.host == "127.0.0.1" and view.port > 0
        view.set_counters(lambda: {"frames_dropped": 7, "reconnects": 1})
        for i in range(5):
            view.write(published_frame(i))
        time.sleep(0.3)
        assert view.jpegs_encoded == 0                       # nobody watching: no encoding
        headers, page = get(view.url)
        assert headers["Content-Type"].startswith("text/html") and b"/stream.mjpg" in page
        _, body = get(view.url + "stats.json")
        stats = json.loads(body)
        assert stats["frames_out"] == 5 and stats["frames_dropped"] == 7
        assert stats["reconnects"] == 1 and stats["stages_ms"]["infer"] == 5.0

        stop = threading.Event()

        def feed():                                          # a 30 fps publisher
            i = 5
            while not stop.is_set():
                view.write(published_frame(i))
                i += 1
                time.sleep(1 / 30)

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            parts = mjpeg_parts(view.url + "stream.mjpg", 3)
        finally:
            stop.set()
            feeder.join()
        images = [cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR) for p in parts]
        assert all(img is not None and img.shape == (90, 160, 3) for img in images)
        assert len({int(img.mean()) for img in images}) == 3    # newer frames, not repeats
        with pytest.raises(urllib.error.HTTPError) as e:
            get(view.url + "nope")
        assert e.value.code == 404
    finally:
        view.close()
    assert view.describe()["clients_served"] == 1


def test_view_port_in_use_is_a_one_line_error(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{port}"):
            ViewSink(f"http://127.0.0.1:{port}")
        rc = cli_main("run", "--backend", "torch", "--source", "synthetic:?frames=2", "--model",
                      tiny_checkpoint(tmp_path / "m.pt", input_size=(96, 128)),
                      "--output", tmp_path / "o", "--view", f"127.0.0.1:{port}")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0]


@pytest.mark.timeout(240)
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
@pytest.mark.skipif(importlib.util.find_spec("websocket") is None,
                    reason="websocket-client not installed (pip install -e '.[dev]')")
def test_live_view_in_headless_chromium(tmp_path, one_thread_config):
    """`drivesegrt run --view` on a live source; Chromium loads the page, the overlay image
    updates and the stats change; a screenshot is saved in the test's tmp dir."""
    model = tiny_checkpoint(tmp_path / "tiny.pt", input_size=(96, 128))
    out = tmp_path / "run"
    run = LiveRun("run", "--backend", "torch", "--source",
                  "synthetic:?w=640&h=360&fps=12&frames=0&live=1", "--model", model,
                  "--config", one_thread_config, "--output", out, "--no-video",
                  "--view", "http://127.0.0.1:0")
    try:
        line = run.wait_for_line("live view at http://127.0.0.1:")
        url = line.split("live view at ")[1].strip()
        with Chromium(tmp_path) as browser:
            browser.navigate(url)
            first = browser.wait_for(PAGE_STATE, timeout=60)
            assert first["width"] == 640 and first["height"] == 360
            later = browser.wait_for(
                PAGE_STATE + f".then(s => s && s.hash !== {first['hash']} && "
                f"s.published !== {json.dumps(first['published'])} && s)", timeout=60)
            assert later["status"] == "live" and "dropped" in later["text"]
            shot = browser.screenshot(tmp_path / "live_view.png")
        run.proc.send_signal(signal.SIGINT)
        rc = run.finish()
    finally:
        run.kill()
    assert rc == 130, run.stderr
    png = cv2.imread(str(shot))
    assert png is not None and png.shape[0] > 300 and png.std() > 10
    s = read_summary(out)
    assert s["outputs"]["view"]["clients_served"] >= 1
    assert s["outputs"]["view"]["jpegs_encoded"] >= 2


# The page's state, as seen by the browser: a checksum of the displayed MJPEG image (drawn
# to a canvas: Chrome paints the newest part of the stream), its size and the stats table.
PAGE_STATE = """(async () => {
  const img = document.getElementById("live");
  if (!img || !img.naturalWidth) return null;
  const c = document.createElement("canvas");
  c.width = 64; c.height = 36;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0, 64, 36);
  const d = g.getImageData(0, 0, 64, 36).data;
  let hash = 0;
  for (let i = 0; i < d.length; i++) hash = (hash * 31 + d[i]) >>> 0;
  const text = document.getElementById("stats").innerText;
  const m = text.match(/published\\s+(\\d+)/);
  return {hash, width: img.naturalWidth, height: img.naturalHeight, text,
          published: m ? m[1] : null,
          status: document.getElementById("status").textContent};
})()"""
