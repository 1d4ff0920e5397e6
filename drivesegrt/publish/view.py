"""Live browser view: a sink serving the overlay as MJPEG and the run's stats as JSON.

    drivesegrt run --source rtsp://cam/1 --view http://127.0.0.1:8080
    # open http://127.0.0.1:8080/ in a browser

    /             a page: the live overlay and stats (FPS, per-stage ms, dropped, reconnects),
                  refreshed about once a second
    /stream.mjpg  multipart/x-mixed-replace JPEG stream of the newest overlay
    /stats.json   the numbers behind the page

Several cameras (``channel(name)``: one sink per camera, one server): the page is a grid of
the cameras' overlays with a stats row each; ``/stream.mjpg?camera=NAME`` is one camera's
stream and ``/stats.json`` has a ``cameras`` mapping of each camera's numbers.

The view must never slow the pipeline: ``write`` only keeps a reference to the newest overlay
(no copy, no encode). A separate encoder thread JPEG-encodes the newest frame at most
``max_fps`` times a second and only while a client watches; every client thread sends the
newest JPEG when it can, so a slow browser skips frames instead of queueing them. Binds to
127.0.0.1 unless another host is given; port 0 picks a free port (``url`` has the real one).

Safe to expose:
- beyond loopback, ``exposure_warning`` says so (the run prints it); ``token`` makes every
  request need ``?token=TOKEN`` or ``Authorization: Bearer TOKEN`` (401 otherwise);
- the Host header must name this server: a loopback name, an IP address, the bound host, or
  one of ``hosts`` (403 otherwise), so a DNS-rebinding page cannot read a loopback view;
- a request's line and headers must arrive within ``request_timeout`` (a watchdog closes
  the connection otherwise, trickling bytes does not help), and at most ``max_connections``
  are served at once (more get 503 without a thread);
- no software version in the headers.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import socket
import sys
import threading
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from ..frame import STAGES, Frame
from ..timing import RateMeter, now
from .sinks import Sink

BOUNDARY = "drivesegrt-frame"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
SERVER_NAME = "drivesegrt-view"         # the Server header: no versions


def parse_address(address: str) -> tuple[str, int]:
    """``http://HOST:PORT``, ``HOST:PORT`` or ``PORT`` -> (host, port); host defaults to
    127.0.0.1. ValueError naming the address when it is not one of those."""
    text = str(address).strip()
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    parts = urlsplit(text if "://" in text else f"http://{text}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or port is None or parts.path not in ("", "/"):
        raise ValueError(f"--view {address!r}: expected http://HOST:PORT (e.g. "
                         f"http://127.0.0.1:8080; port 0 = any free port)")
    return parts.hostname or "127.0.0.1", port


class _Feed:
    """One camera's newest overlay, its JPEG and its recent stats. ``write`` only keeps a
    reference; the feed's encoder thread makes JPEGs (at most ``max_fps``, only while a client
    watches)."""

    def __init__(self, max_fps: float, quality: int, closed: threading.Event,
                 counters: Callable[[], dict] | None = None):
        self.max_fps, self.quality = max_fps, quality
        self.counters = counters
        self._closed = closed
        self._lock = threading.Condition()
        self._wake = threading.Event()
        self._latest: tuple[int, np.ndarray] | None = None    # (frame index, overlay), by ref
        self._jpeg: bytes | None = None
        self._jpeg_seq = 0
        self._clients = 0
        self.clients_served = 0
        self.jpegs_encoded = 0
        self._rate = RateMeter(30)
        self._fps, self._t_last = 0.0, 0.0
        self._stages: dict[str, deque] = {k: deque(maxlen=30) for k in STAGES}
        self._ages: deque = deque(maxlen=30)
        self._frames_out = 0
        self._size = (0, 0)
        self.thread = threading.Thread(target=self._encode_loop, name="view-encode",
                                       daemon=True)

    # -- the publish thread's side: keep a reference, nothing else --------------------------
    def write(self, frame: Frame) -> None:
        t = now()
        with self._lock:
            self._latest = (frame.index, frame.overlay)
            self._frames_out += 1
            self._size = frame.size
            self._fps, self._t_last = self._rate.tick(t), t
            for k, v in frame.stages_ms.items():
                if k in self._stages:
                    self._stages[k].append(v)
            self._ages.append((t - frame.t_capture) * 1e3)
        if self._clients:
            self._wake.set()

    # -- encoder thread ----------------------------------------------------------------------
    def _encode_loop(self) -> None:
        period = 1.0 / self.max_fps
        encoded_index = None
        while not self._closed.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            with self._lock:
                latest = self._latest
            if not self._clients or latest is None or latest[0] == encoded_index:
                continue
            t0 = now()
            ok, buf = cv2.imencode(".jpg", latest[1], [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if ok:
                with self._lock:
                    self._jpeg, self._jpeg_seq = buf.tobytes(), self._jpeg_seq + 1
                    self.jpegs_encoded += 1
                    self._lock.notify_all()
            encoded_index = latest[0]
            # Rate cap: the next encode starts no sooner than one period after this one.
            self._closed.wait(max(0.0, period - (now() - t0)))
            self._wake.set()       # a newer frame may have arrived meanwhile

    def next_jpeg(self, after_seq: int, timeout: float = 1.0) -> tuple[bytes | None, int]:
        """The newest JPEG newer than ``after_seq`` (waits up to ``timeout``): (jpeg, seq),
        or (None, after_seq) on timeout/close."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._jpeg_seq > after_seq or self._closed.is_set(),
                                       timeout) or self._closed.is_set():
                return None, after_seq
            return self._jpeg, self._jpeg_seq

    def client_joined(self) -> None:
        with self._lock:
            self._clients += 1
            self.clients_served += 1
        self._wake.set()

    def client_left(self) -> None:
        with self._lock:
            self._clients -= 1

    @property
    def viewers(self) -> int:
        return self._clients

    def stats(self) -> dict:
        """Rates and recent per-stage medians, plus the pipeline's counters."""
        with self._lock:
            stages = {k: round(float(np.median(v)), 2) for k, v in self._stages.items() if v}
            ages = list(self._ages)
            stalled = now() - self._t_last > 2.0        # e.g. during a stream outage
            out = {"frames_out": self._frames_out, "fps": 0.0 if stalled else round(self._fps, 2),
                   "width": self._size[0], "height": self._size[1],
                   "stages_ms": stages,
                   "frame_age_ms": round(float(np.median(ages)), 1) if ages else None,
                   "viewers": self._clients, "jpegs_encoded": self.jpegs_encoded}
        if self.counters is not None:
            out.update(self.counters())
        return out

    def wake(self) -> None:
        self._wake.set()
        with self._lock:
            self._lock.notify_all()


class ViewChannel(Sink):
    """One camera of a several-camera view: the sink its lane writes to (``ViewSink.channel``).
    Closing it does nothing; the run closes the view."""

    name = "view"

    def __init__(self, view: "ViewSink", feed: _Feed, camera: str):
        self._view, self._feed, self.camera = view, feed, camera

    def write(self, frame: Frame) -> None:
        self._feed.write(frame)

    def set_counters(self, counters: Callable[[], dict]) -> None:
        self._feed.counters = counters

    def describe(self) -> dict:
        return {"path": None, "url": f"{self._view.url}stream.mjpg?camera={self.camera}",
                "jpegs_encoded": self._feed.jpegs_encoded}


class ViewSink(Sink):
    """Serves the live overlay and stats over HTTP (see the module docstring).

    address: where to listen. counters: optional callable returning the run's live counters
    (``frames_in``, ``frames_dropped``, ``frames_failed``, ``reconnects``, ...), merged into
    /stats.json; set later with :meth:`set_counters` when the pipeline exists after the sinks.
    token: required on every request when set. hosts: more names allowed in the Host header.
    request_timeout: seconds for a request's line and headers (and for each read).
    max_connections: connections served at once; more are answered 503. Several cameras:
    ``channel(name)`` per camera instead of writing to this sink.
    """

    name = "view"

    def __init__(self, address: str = "http://127.0.0.1:8080", max_fps: float = 15.0,
                 quality: int = 80, counters: Callable[[], dict] | None = None,
                 token: str | None = None, hosts=(), request_timeout: float = 10.0,
                 max_connections: int = 16):
        host, port = parse_address(address)
        if max_fps <= 0 or not 1 <= quality <= 100:
            raise ValueError(f"view: need max_fps > 0 and quality 1..100, got {max_fps}, {quality}")
        if token is not None and not token:
            raise ValueError("--view-token must not be empty")
        self.max_fps, self.quality = float(max_fps), int(quality)
        self.token = token
        self.request_timeout = float(request_timeout)
        self.allowed_hosts = {_host_name(h) for h in (*LOOPBACK_NAMES, host, *hosts)}
        self._deadlines: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._feed = _Feed(self.max_fps, self.quality, self._closed, counters)
        self._channels: dict[str, _Feed] = {}
        self._t_start = now()
        try:
            self._server = _CappedServer((host, port), _handler_for(self), max_connections)
        except OSError as e:
            raise ValueError(f"--view: cannot listen on {host}:{port} "
                             f"({e.strerror or e})") from None
        self.host, self.port = host, self._server.server_address[1]
        self.url = f"http://{host}:{self.port}/"
        bound = ipaddress.ip_address(self._server.server_address[0])
        self.exposure_warning = None if bound.is_loopback else (
            f"the live view listens on {host}:{self.port}, reachable from the network over "
            f"plain HTTP: " + ("anyone who can reach it sees the camera; set --view-token"
                               if token is None else "the token travels unencrypted"))
        self._threads = [threading.Thread(target=self._server.serve_forever, name="view-http",
                                          kwargs={"poll_interval": 0.2}, daemon=True),
                         self._feed.thread,
                         threading.Thread(target=self._watchdog, name="view-watchdog",
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def set_counters(self, counters: Callable[[], dict]) -> None:
        self._feed.counters = counters

    def channel(self, camera: str) -> ViewChannel:
        """The sink of camera ``camera`` (made on first use): its tile in the page's grid."""
        with self._lock:
            feed = self._channels.get(camera)
            if feed is None:
                feed = self._channels[camera] = _Feed(self.max_fps, self.quality, self._closed)
                self._threads.append(feed.thread)
                feed.thread.start()
        return ViewChannel(self, feed, camera)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self._channels)

    def feed(self, camera: str | None) -> _Feed | None:
        """The feed a request asks for: a camera's, or (None) the one-camera feed."""
        if camera is None:
            return self._feed if not self._channels else None
        return self._channels.get(camera)

    @property
    def jpegs_encoded(self) -> int:
        return self._feed.jpegs_encoded + sum(f.jpegs_encoded for f in self._channels.values())

    @property
    def clients_served(self) -> int:
        return self._feed.clients_served + sum(f.clients_served for f in self._channels.values())

    # -- the publish thread's side: keep a reference, nothing else --------------------------
    def write(self, frame: Frame) -> None:
        self._feed.write(frame)

    def next_jpeg(self, after_seq: int, timeout: float = 1.0) -> tuple[bytes | None, int]:
        """The one-camera feed's newest JPEG newer than ``after_seq`` (see _Feed)."""
        return self._feed.next_jpeg(after_seq, timeout)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- requests: who may ask, and how long they may take -----------------------------------
    def host_allowed(self, header: str | None) -> bool:
        """A Host header naming this server: an IP address, a loopback name, the bound host
        or a configured name. A rebinding page's own DNS name is none of these."""
        if not header:
            return False
        name = _host_name(header)
        try:
            ipaddress.ip_address(name)
            return True                 # rebinding needs a DNS name: an address is safe
        except ValueError:
            return name in self.allowed_hosts

    def token_ok(self, query: str, authorization: str | None) -> bool:
        if self.token is None:
            return True
        given = parse_qs(query).get("token", [""])[-1]
        scheme, _, bearer = (authorization or "").partition(" ")
        if scheme.lower() == "bearer":
            given = given or bearer.strip()
        return hmac.compare_digest(given.encode(), self.token.encode())

    def watch(self, conn: socket.socket) -> None:
        """The request on ``conn`` must be read within ``request_timeout`` from now."""
        with self._lock:
            self._deadlines[conn] = now() + self.request_timeout

    def unwatch(self, conn: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(conn, None)

    def _watchdog(self) -> None:
        period = min(0.5, max(0.05, self.request_timeout / 5))
        while not self._closed.wait(period):
            t = now()
            with self._lock:
                late = [c for c, deadline in self._deadlines.items() if deadline < t]
                for c in late:
                    del self._deadlines[c]
            for c in late:
                try:
                    c.shutdown(socket.SHUT_RDWR)   # the handler's blocked read returns: done
                except OSError:
                    pass

    # -- stats -------------------------------------------------------------------------------
    def stats(self) -> dict:
        """/stats.json: one camera's rates, per-stage medians and counters, or (several) a
        ``cameras`` mapping of those."""
        common = {"uptime_s": round(now() - self._t_start, 1)}
        if not self._channels:
            return {**self._feed.stats(), **common}
        cameras = {name: feed.stats() for name, feed in list(self._channels.items())}
        return {"cameras": cameras, "viewers": sum(c["viewers"] for c in cameras.values()),
                **common}

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for feed in (self._feed, *self._channels.values()):
            feed.wake()
        self._server.shutdown()
        self._server.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def describe(self) -> dict:
        return {"path": None, "url": self.url, "clients_served": self.clients_served,
                "jpegs_encoded": self.jpegs_encoded}


def _host_name(host: str) -> str:
    """The name part of a Host header or address, lower case: 'Example.com.:80' -> 'example.com',
    '[::1]:8080' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class _CappedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once; beyond that a fixed 503
    is written and the connection closed on the accepting thread (no thread, no waiting)."""

    daemon_threads = True
    BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nServer: " + SERVER_NAME.encode()
            + b"\r\nContent-Type: text/plain\r\nContent-Length: 34\r\nRetry-After: 5\r\n"
            b"Connection: close\r\n\r\ntoo many connections to the view\r\n")

    def __init__(self, address, handler, max_connections: int):
        if max_connections < 1:
            raise ValueError(f"view: max_connections must be >= 1, got {max_connections}")
        self.max_connections = max_connections
        self._active = 0
        self._count_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self._count_lock:
            full = self._active >= self.max_connections
            if not full:
                self._active += 1
        if not full:
            super().process_request(request, client_address)
            return
        try:
            request.settimeout(1.0)
            request.sendall(self.BUSY)
        except OSError:
            pass                                 # the client is gone already
        self.shutdown_request(request)

    def handle_error(self, request, client_address):
        # A client that vanished or was cut off by the watchdog is routine, not a traceback
        # on the run's terminal; anything else is a bug and is printed as usual.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._count_lock:
                self._active -= 1


def _handler_for(view: ViewSink):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = view.request_timeout           # each read of a request (StreamRequestHandler)

        def version_string(self) -> str:          # the default appends the Python version
            return SERVER_NAME

        def log_message(self, *args):   # quiet: the run's own output is on the terminal
            pass

        def handle_one_request(self):
            view.watch(self.connection)           # the line and headers, within the timeout
            try:
                super().handle_one_request()
            finally:
                view.unwatch(self.connection)

        def do_GET(self):
            view.unwatch(self.connection)         # headers read; responses have own timeouts
            url = urlsplit(self.path)
            if not view.host_allowed(self.headers.get("Host")):
                self.send_error(HTTPStatus.FORBIDDEN, "host not allowed",
                                "the Host header does not name this server")
                return
            if not view.token_ok(url.query, self.headers.get("Authorization")):
                self.send_response(HTTPStatus.UNAUTHORIZED)
                body = b"token required: ?token=TOKEN or 'Authorization: Bearer TOKEN'\n"
                self.send_header("WWW-Authenticate", 'Bearer realm="drivesegrt-view"')
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            path = url.path
            if path in ("/", "/index.html"):
                page = GRID_PAGE if view.cameras else PAGE
                self._send(page.encode(), "text/html; charset=utf-8")
            elif path == "/stats.json":
                self._send(json.dumps(view.stats()).encode(), "application/json")
            elif path == "/stream.mjpg":
                camera = parse_qs(url.query).get("camera", [None])[-1]
                feed = view.feed(camera)
                if feed is None:
                    self.send_error(HTTPStatus.NOT_FOUND, "no such camera",
                                    f"cameras: {', '.join(view.cameras)}")
                    return
                self._stream(feed)
            else:
                self.send_error(HTTPStatus.NOT_FOUND)

        def _send(self, body: bytes, ctype: str) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _stream(self, feed: _Feed) -> None:
            self.close_connection = True
            self.connection.settimeout(10)       # a stalled browser frees its thread
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            feed.client_joined()
            try:
                seq = 0
                while not view.closed:
                    jpeg, seq = feed.next_jpeg(seq)
                    if jpeg is None:
                        continue
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                     f"Content-Length: {len(jpeg)}\r\n\r\n".encode())
                    self.wfile.write(jpeg)
                    self.wfile.write(b"\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
                pass                               # the browser went away
            finally:
                feed.client_left()

    return Handler


# Both pages end alike: fetch /stats.json once a second (the page's ?token=... along) and
# hand it to the page's own render(s).
_POLL = """async function refresh() {
  try {
    const r = await fetch("/stats.json" + location.search, {cache: "no-store"});
    render(await r.json());
    document.getElementById("status").textContent = "live";
  } catch (e) {
    document.getElementById("status").textContent = "disconnected";
  }
}
refresh();
setInterval(refresh, 1000);
</script></body></html>
"""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>drivesegrt live</title>
<style>
 body { margin: 0; background: #111; color: #ddd; font: 14px system-ui, sans-serif; }
 main { display: flex; gap: 16px; padding: 12px; align-items: flex-start; }
 img { width: min(72vw, 1280px); height: auto; border: 1px solid #333; background: #000; }
 table { border-collapse: collapse; min-width: 220px; }
 td { padding: 2px 8px; border-bottom: 1px solid #2a2a2a; }
 td.v { text-align: right; font-variant-numeric: tabular-nums; color: #fff; }
 h1 { font-size: 16px; margin: 0 0 8px; }
 #status { color: #8c8; }
</style></head>
<body><main>
 <img id="live" alt="live overlay">
 <div><h1>drivesegrt live <span id="status">connecting</span></h1>
 <table id="stats"><tbody></tbody></table></div>
</main>
<script>
const ROWS = [["fps", "FPS"], ["frames_out", "published"], ["frames_in", "captured"],
              ["frames_dropped", "dropped"], ["frames_failed", "failed"],
              ["reconnects", "reconnects"], ["frame_age_ms", "frame age ms"],
              ["viewers", "viewers"]];
function row(name, value) {
  return "<tr><td>" + name + "</td><td class=v>" + (value === undefined || value === null
         ? "-" : value) + "</td></tr>";
}
// The page's own query (?token=...) goes along with every request it makes.
document.getElementById("live").src = "/stream.mjpg" + location.search;
function render(s) {
  let html = ROWS.map(([k, label]) => row(label, s[k])).join("");
  for (const [stage, ms] of Object.entries(s.stages_ms || {}))
    html += row(stage + " ms", ms.toFixed(1));
  document.querySelector("#stats tbody").innerHTML = html;
}
""" + _POLL

GRID_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>drivesegrt live: cameras</title>
<style>
 body { margin: 0; background: #111; color: #ddd; font: 14px system-ui, sans-serif; }
 h1 { font-size: 16px; margin: 12px 12px 0; }
 #status { color: #8c8; }
 #grid { display: grid; gap: 12px; padding: 12px;
         grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); align-items: start; }
 figure { margin: 0; background: #181818; border: 1px solid #333; }
 figure img { width: 100%; height: auto; display: block; background: #000; }
 figcaption { padding: 4px 8px; font-variant-numeric: tabular-nums; }
 figcaption b { color: #fff; margin-right: 8px; }
 figcaption span { margin-right: 10px; }
</style></head>
<body><h1>drivesegrt live <span id="status">connecting</span></h1>
<div id="grid"></div>
<script>
const STATS = [["fps", "FPS"], ["frames_out", "published"], ["frames_dropped", "dropped"],
               ["frames_failed", "failed"], ["reconnects", "reconnects"],
               ["frame_age_ms", "age ms"]];
const tiles = {};
function tile(name) {
  if (tiles[name]) return tiles[name];
  const fig = document.createElement("figure");
  fig.id = "cam-" + name;
  const img = document.createElement("img");
  img.alt = name;
  const q = new URLSearchParams(location.search);      // the page's ?token=... goes along
  q.set("camera", name);
  img.src = "/stream.mjpg?" + q.toString();
  const cap = document.createElement("figcaption");
  fig.append(img, cap);
  document.getElementById("grid").append(fig);
  return tiles[name] = cap;
}
function render(s) {
  for (const [name, c] of Object.entries(s.cameras || {})) {
    tile(name).innerHTML = "<b>" + name + "</b>" + STATS.map(([k, label]) =>
      "<span>" + label + " " + (c[k] === undefined || c[k] === null ? "-" : c[k]) +
      "</span>").join("");
  }
}
""" + _POLL
