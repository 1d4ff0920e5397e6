"""``drivesegrt replay CLIP --port N``: serve a recorded drive as a live network stream.

ffmpeg reads the clip in real time (``-re``), loops it, and sends MPEG-TS; over HTTP on
127.0.0.1 (or as UDP to a port), so a setup can be tested against a "camera" without one:

    drivesegrt replay drive.mp4 --port 8554 &
    drivesegrt run --source http://127.0.0.1:8554/live.ts
    drivesegrt run --source http://127.0.0.1:8554/live.ts     # again: the server keeps serving

HTTP: the server holds its listening socket for its whole life and starts one ffmpeg per
client (the clip from its start, looped, written straight into the client's connection), so
clients come and go, one after another or several
at once (up to ``max_clients``). ffmpeg's own ``-listen 1`` server serves one client and
exits, and between its restarts the port is closed, so a second client was refused.
"""
from __future__ import annotations

import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from .video import open_video


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for a server started next)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if not path:
        raise FileNotFoundError("ffmpeg not found on PATH (Debian/Ubuntu: apt-get install ffmpeg)")
    return path


class ReplayServer:
    """``clip`` served as a live MPEG-TS stream at ``url``.

    ``protocol="http"``: a listening socket that runs one ffmpeg per client (see the module
    docstring); ``clients_served`` counts the clients whose stream ended. ``loop=False``:
    the clip once, to the first client, then the port closes (a camera that goes away). ``udp``: one ffmpeg
    sending to the address. ``transcode`` re-encodes to H.264 (needed when the clip's codec
    cannot go into MPEG-TS as is, or to set a frame rate). ``speed`` reads the clip that many
    times faster than real time (ffmpeg ``-readrate``; e.g. 4: a 25 fps clip arrives at 100
    frames a second), for soak tests that need many frames. ``stop()`` closes the socket and
    every client's stream (a camera going away)."""

    REQUEST_TIMEOUT_S = 10.0      # a client must send its request within this
    SEND_TIMEOUT_S = 30.0         # a client that takes nothing for this long is dropped

    def __init__(self, clip: str | Path, port: int, host: str = "127.0.0.1",
                 protocol: str = "http", loop: bool = True, transcode: bool = False,
                 fps: float | None = None, speed: float = 1.0, max_clients: int = 4):
        self.clip = Path(clip)
        if not self.clip.is_file():
            raise FileNotFoundError(f"clip not found: {self.clip}")
        open_video(self.clip).close()          # not a video: say so now, not per client
        if protocol not in ("http", "udp"):
            raise ValueError(f"protocol {protocol!r} not supported; allowed: http, udp")
        if not 0 < port < 65536:
            raise ValueError(f"bad port {port}")
        if not 0 < speed <= 100:
            raise ValueError(f"replay speed must be in (0, 100], got {speed}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.port, self.host, self.protocol = port, host, protocol
        self.loop, self.transcode, self.fps, self.speed = loop, transcode, fps, float(speed)
        self.max_clients = max_clients
        self.proc: subprocess.Popen | None = None      # udp: the one ffmpeg
        self.clients_served = 0
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._clients: dict[socket.socket, subprocess.Popen | None] = {}
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        if self.protocol == "http":
            return f"http://{self.host}:{self.port}/live.ts"
        return f"udp://{self.host}:{self.port}"

    def command(self, target: str | None = None) -> list[str]:
        """The ffmpeg command line: MPEG-TS to ``target`` (http: a client's socket as
        ``pipe:FD``) or, by default, to the UDP address."""
        cmd = [ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-nostdin"]
        cmd += ["-re"] if self.speed == 1.0 else ["-readrate", f"{self.speed:g}"]
        if self.loop:
            cmd += ["-stream_loop", "-1"]
        cmd += ["-i", str(self.clip), "-an"]
        if self.transcode or self.fps:
            cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
                    "-g", "25", "-pix_fmt", "yuv420p"]
            if self.fps:
                cmd += ["-r", str(self.fps)]
        else:
            cmd += ["-c:v", "copy"]
        cmd += ["-f", "mpegts"]
        cmd.append(target or f"{self.url}?pkt_size=1316")
        return cmd

    def start(self) -> "ReplayServer":
        """Bind (http; ValueError naming the address when the port is taken) or start ffmpeg
        (udp)."""
        self._stopping.clear()
        if self.protocol == "udp":
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)
            return self
        try:
            self._listener = socket.create_server((self.host, self.port))
        except OSError as e:
            raise ValueError(f"cannot listen on {self.host}:{self.port} "
                             f"({e.strerror or e})") from None
        self._spawn(self._accept_loop)
        return self

    def _spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name="replay")
        t.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [t]

    def _accept_loop(self) -> None:
        listener = self._listener
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:                      # closed by stop()
                return
            with self._lock:
                busy = len(self._clients) >= self.max_clients
                if not busy:
                    self._clients[conn] = None
            if busy:
                _send_quietly(conn, b"HTTP/1.1 503 Service Unavailable\r\n"
                                    b"Connection: close\r\nContent-Length: 0\r\n\r\n")
                conn.close()
                continue
            self._spawn(self._serve, conn)
            if not self.loop:         # the clip once, to one client: then the camera is gone
                self._close_listener()
                return

    def _close_listener(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)    # wakes accept(); close() alone does not
            except OSError:
                pass
            listener.close()

    def _serve(self, conn: socket.socket) -> None:
        """One client: read its request, answer, then an ffmpeg writes the stream straight
        into the connection (no copy through Python) until the client leaves or stop()."""
        proc = None
        try:
            conn.settimeout(self.REQUEST_TIMEOUT_S)
            if not _read_request(conn):
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n"
                         b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n")
            # ffmpeg gets the socket as a plain blocking fd (Python's timeout made it
            # non-blocking); a client that takes nothing for SEND_TIMEOUT_S fails its write.
            conn.setblocking(True)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("ll", int(self.SEND_TIMEOUT_S), 0))
            with self._lock:
                if self._stopping.is_set():
                    return
                proc = subprocess.Popen(self.command(f"pipe:{conn.fileno()}"),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, pass_fds=(conn.fileno(),))
                self._clients[conn] = proc
            proc.wait()                  # a client that leaves ends ffmpeg's writes (EPIPE)
        except OSError:
            pass                         # the client left before its answer
        finally:
            with self._lock:
                self._clients.pop(conn, None)
                self.clients_served += 1
            if proc is not None:
                _end(proc)
            conn.close()

    def wait_ready(self, timeout: float = 10.0) -> "ReplayServer":
        """Block until the stream can be read: http listens from ``start``; udp: ffmpeg must
        still run after a moment (a bad clip makes it exit at once)."""
        if self.protocol == "udp":
            deadline = time.monotonic() + min(timeout, 0.5)
            while time.monotonic() < deadline:
                if not self.running():
                    raise ValueError(f"ffmpeg exited with code "
                                     f"{self.proc.poll() if self.proc else '?'} before serving "
                                     f"{self.url}")
                time.sleep(0.05)
        elif not self.running():
            raise ValueError(f"the replay server for {self.url} is not running")
        return self

    def running(self) -> bool:
        """udp: ffmpeg runs; http: listening or still streaming to a client."""
        if self.protocol == "udp":
            return self.proc is not None and self.proc.poll() is None
        with self._lock:
            busy = self._listener is not None or bool(self._clients)
        return busy and not self._stopping.is_set()

    def stop(self) -> None:
        """Close the listening socket, end every client's ffmpeg and connection."""
        self._stopping.set()
        self._close_listener()
        with self._lock:
            clients = list(self._clients.items())
        for conn, proc in clients:
            if proc is not None:
                _end(proc)
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        if self.proc is not None:
            _end(self.proc)
            self.proc = None

    def __enter__(self):
        self.start()
        try:
            return self.wait_ready()
        except (ValueError, TimeoutError):
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


def _read_request(conn: socket.socket) -> bool:
    """Read the client's request head (any path is the stream); False if it left first."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 16384:
        chunk = conn.recv(4096)
        if not chunk:
            return False
        data += chunk
    return True


def _send_quietly(conn: socket.socket, data: bytes) -> None:
    try:
        conn.sendall(data)
    except OSError:
        pass


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def add_arguments(p):
    p.add_argument("clip", help="video file to replay")
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (http) or send to (udp); default loopback only")
    p.add_argument("--protocol", choices=["http", "udp"], default="http")
    p.add_argument("--once", action="store_true",
                   help="play the clip once, to the first client, then exit")
    p.add_argument("--transcode", action="store_true", help="re-encode to H.264 (ultrafast)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (transcodes)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="read the clip this many times faster than real time (default 1)")


def main(args) -> int:
    """Serve until Ctrl-C/SIGTERM (``--once``: until the first client's clip ended)."""
    server = ReplayServer(args.clip, args.port, args.host, args.protocol, not args.once,
                          args.transcode, args.fps, args.speed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        with server:
            print(f"serving {server.clip} at {server.url} (Ctrl-C to stop)", flush=True)
            while not stop.wait(0.2):
                if not server.running():                 # udp: ffmpeg ended (--once, error)
                    code = server.proc.poll() if server.proc else 0
                    if code:
                        raise ValueError(f"ffmpeg exited with code {code} serving {server.url}")
                    break
                if args.once and server.clients_served:
                    break
    except KeyboardInterrupt:
        return 130
    return 0
