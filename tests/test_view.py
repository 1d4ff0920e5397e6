"""The live browser view (--view): HTTP endpoints, and the page for real in headless Chromium."""
from __future__ import annotations

import importlib.util
import json
import re
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


def get(url: str, timeout: float = 10, headers: dict | None = None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                timeout=timeout) as r:
        return r.headers, r.read()


def raw_exchange(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send ``request`` on a fresh TCP connection to 127.0.0.1 and read until the server
    closes it: the raw response (status line, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def headers_of(response: bytes) -> dict[str, str]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head)}


def request(path: str = "/", host: str | None = "127.0.0.1", *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", *([f"Host: {host}"] if host is not None else []),
             *extra, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


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


@pytest.fixture
def view():
    v = ViewSink("http://127.0.0.1:0", hosts=("cam.example",))
    v.write(published_frame(0))
    yield v
    v.close()


@pytest.mark.parametrize("host, status", [
    ("127.0.0.1", 200), ("localhost", 200), ("LOCALHOST.:{port}", 200), ("[::1]:{port}", 200),
    ("192.168.1.20:{port}", 200), ("cam.example:{port}", 200),      # an address; an allowed name
    ("rebind.attacker.example:{port}", 403), ("localhost.attacker.example", 403), (None, 403)])
def test_view_checks_the_host_header(view, host, status):
    """DNS rebinding: a page on attacker.example whose name now resolves to 127.0.0.1 sends
    its own name as Host; the view answers only to names that are its own."""
    host = None if host is None else host.format(port=view.port)
    for path in ("/", "/stats.json", "/stream.mjpg"):
        if status == 200 and path == "/stream.mjpg":
            continue                                  # endless; its 403 case is what matters
        assert status_of(raw_exchange(view.port, request(path, host))) == status, (host, path)


def test_view_token_is_required_in_the_query_or_a_bearer_header():
    v = ViewSink("http://127.0.0.1:0", token="s3cret-token")
    try:
        v.write(published_frame(0))
        for path in ("/", "/stats.json", "/stream.mjpg", "/stats.json?token=wrong"):
            r = raw_exchange(v.port, request(path))
            assert status_of(r) == 401, path
            assert headers_of(r)["www-authenticate"].startswith("Bearer")
        r = raw_exchange(v.port, request("/stats.json", "127.0.0.1",
                                         "Authorization: Bearer not-it"))
        assert status_of(r) == 401
        _, page = get(v.url + "?token=s3cret-token")
        assert b"location.search" in page                    # it passes the token along
        _, body = get(v.url + "stats.json", headers={"Authorization": "Bearer s3cret-token"})
        assert json.loads(body)["frames_out"] == 1
        parts = []
        feeder = threading.Thread(target=lambda: [v.write(published_frame(i)) or time.sleep(0.05)
                                                  for i in range(1, 40)])
        feeder.start()
        try:
            parts = mjpeg_parts(v.url + "stream.mjpg?token=s3cret-token", 1)
        finally:
            feeder.join()
        assert cv2.imdecode(np.frombuffer(parts[0], np.uint8), cv2.IMREAD_COLOR) is not None
    finally:
        v.close()


def test_view_headers_carry_no_version(view):
    for r in (raw_exchange(view.port, request("/")),
              raw_exchange(view.port, request("/nope")),
              raw_exchange(view.port, request("/", "evil.example"))):
        head = r.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        assert headers_of(r)["server"] == "drivesegrt-view", head
        assert "Python" not in head and "/3." not in head


def test_view_partial_request_times_out():
    """Slowloris: a request whose headers never end, trickled a line at a time, is cut off
    at the request deadline (not only after a silent read), and its thread is freed."""
    v = ViewSink("http://127.0.0.1:0", request_timeout=1.0)
    try:
        with socket.create_connection(("127.0.0.1", v.port), timeout=30) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            t0 = time.monotonic()
            closed = False
            while time.monotonic() - t0 < 20:
                try:
                    s.sendall(b"X-Slow: 1\r\n")          # never the blank line
                except OSError:
                    closed = True
                    break
                s.settimeout(0.2)
                try:
                    if s.recv(4096) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
            assert closed, "the server kept a never-ending request open"
        assert status_of(raw_exchange(v.port, request("/"))) == 200     # still serving
    finally:
        v.close()


def test_view_caps_connections_and_answers_503_beyond():
    v = ViewSink("http://127.0.0.1:0", request_timeout=30, max_connections=3)
    held = []
    try:
        for _ in range(3):                                   # three slow clients hold a slot each
            s = socket.create_connection(("127.0.0.1", v.port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\n")
            held.append(s)
        time.sleep(0.3)                                      # let the server accept them
        threads = threading.active_count()
        r = raw_exchange(v.port, request("/"))
        assert status_of(r) == 503 and b"too many connections" in r
        assert headers_of(r)["server"] == "drivesegrt-view"
        assert threading.active_count() == threads          # refused without a thread
        for s in held:
            s.close()
        held.clear()
        deadline = time.monotonic() + 10                     # slots free once they are gone
        while status_of(raw_exchange(v.port, request("/"))) != 200:
            assert time.monotonic() < deadline, "slots never freed"
            time.sleep(0.1)
    finally:
        for s in held:
            s.close()
        v.close()


def test_view_beyond_loopback_warns(tmp_path, capsys):
    """Listening on every interface (0.0.0.0) says so on stderr, with what to do; with a token
    the warning says the token travels in the clear. Only 127.0.0.1 is talked to here."""
    model = tiny_checkpoint(tmp_path / "m.pt", input_size=(96, 128))
    rc = cli_main("run", "--backend", "torch", "--source", "synthetic:?frames=2&w=160&h=120",
                  "--model", model, "--output", tmp_path / "o", "--no-video",
                  "--view", "http://0.0.0.0:0")
    err = capsys.readouterr().err
    assert rc == 0
    assert re.search(r"drivesegrt: warning: the live view listens on 0\.0\.0\.0:\d+, reachable "
                     r"from the network over plain HTTP: anyone who can reach it sees the "
                     r"camera; set --view-token\n", err), err
    v = ViewSink("http://0.0.0.0:0", token="t0k")
    try:
        assert v.exposure_warning.endswith("plain HTTP: the token travels unencrypted")
        assert status_of(raw_exchange(v.port, request("/"))) == 401
    finally:
        v.close()
    loopback = ViewSink("http://127.0.0.1:0")
    loopback.close()
    assert loopback.exposure_warning is None


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
    """`drivesegrt run --view --view-token` on a live source; Chromium loads the page with the
    token in its URL (the page passes it on to the stream and the stats), the overlay image
    updates and the stats change; a screenshot is saved in the test's tmp dir."""
    model = tiny_checkpoint(tmp_path / "tiny.pt", input_size=(96, 128))
    out = tmp_path / "run"
    run = LiveRun("run", "--backend", "torch", "--source",
                  "synthetic:?w=640&h=360&fps=12&frames=0&live=1", "--model", model,
                  "--config", one_thread_config, "--output", out, "--no-video",
                  "--view", "http://127.0.0.1:0", "--view-token", "t0k-chromium")
    try:
        line = run.wait_for_line("live view at http://127.0.0.1:")
        assert line.endswith(" (token required)")
        url = line.split("live view at ")[1].split()[0]
        with Chromium(tmp_path) as browser:
            browser.navigate(url + "?token=t0k-chromium")
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


def test_view_with_several_cameras_serves_a_stream_and_stats_per_camera():
    view = ViewSink("http://127.0.0.1:0", max_fps=50)
    try:
        front, rear = view.channel("front"), view.channel("rear")
        front.set_counters(lambda: {"frames_dropped": 3, "reconnects": 0})
        rear.set_counters(lambda: {"frames_dropped": 0, "reconnects": 2})
        for i in range(4):
            front.write(published_frame(i, size=(160, 90)))
        rear.write(published_frame(7, size=(64, 48)))
        _, page = get(view.url)
        assert b"grid" in page and b"camera" in page
        stats = json.loads(get(view.url + "stats.json")[1])
        assert set(stats["cameras"]) == {"front", "rear"}
        assert (stats["cameras"]["front"]["frames_out"], stats["cameras"]["rear"]["frames_out"]
                ) == (4, 1)
        assert stats["cameras"]["rear"]["reconnects"] == 2
        assert (stats["cameras"]["rear"]["width"], stats["cameras"]["rear"]["height"]) == (64, 48)
        [jpeg] = mjpeg_parts(view.url + "stream.mjpg?camera=rear", 1)
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (48, 64, 3)
        for path in ("stream.mjpg?camera=side", "stream.mjpg"):   # no such camera / which one?
            with pytest.raises(urllib.error.HTTPError) as e:
                get(view.url + path)
            assert e.value.code == 404
        assert rear.describe()["url"] == f"{view.url}stream.mjpg?camera=rear"
    finally:
        view.close()


@pytest.mark.timeout(240)
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
@pytest.mark.skipif(importlib.util.find_spec("websocket") is None,
                    reason="websocket-client not installed (pip install -e '.[dev]')")
def test_grid_of_cameras_in_headless_chromium(tmp_path, one_thread_config):
    """Two live cameras of different sizes in one run with --view: the page shows a tile per
    camera, each with its own overlay stream at its own size and a stats row."""
    model = tiny_checkpoint(tmp_path / "tiny.pt", input_size=(96, 128))
    out = tmp_path / "run"
    run = LiveRun("run", "--backend", "torch",
                  "--source", "front=synthetic:?w=320&h=180&fps=10&frames=0&live=1",
                  "--source", "rear=synthetic:?w=240&h=180&fps=10&frames=0&live=1",
                  "--model", model, "--config", one_thread_config, "--output", out,
                  "--no-video", "--view", "http://127.0.0.1:0")
    try:
        url = run.wait_for_line("live view at http://127.0.0.1:").split("live view at ")[1]
        with Chromium(tmp_path) as browser:
            browser.navigate(url.split()[0])
            tiles = browser.wait_for(GRID_STATE, timeout=60)
            assert {t["name"]: (t["width"], t["height"]) for t in tiles} == {
                "front": (320, 180), "rear": (240, 180)}
            assert all(re.search(r"published \d+", t["text"]) and "dropped" in t["text"]
                       for t in tiles)
            browser.screenshot(tmp_path / "grid_view.png")
        rc = run.interrupt(signal.SIGINT)
    finally:
        run.kill()
    assert rc == 130, run.stderr
    s = read_summary(out)
    assert s["cameras"]["front"]["outputs"]["view"]["url"].endswith("camera=front")


# Every tile with a decoded image and a stats row (null until both cameras show).
GRID_STATE = """(() => {
  const figs = [...document.querySelectorAll("#grid figure")];
  const tiles = figs.map(f => ({name: f.id.slice(4), width: f.querySelector("img").naturalWidth,
    height: f.querySelector("img").naturalHeight, text: f.querySelector("figcaption").innerText}));
  return tiles.length === 2 && tiles.every(t => t.width && t.text) ? tiles : null;
})()"""
