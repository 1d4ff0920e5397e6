"""``drivesegrt replay CLIP --port N``: serve a recorded drive as a live network stream.

ffmpeg reads the clip in real time (``-re``), loops it, and serves MPEG-TS over HTTP on
127.0.0.1 (or UDP to a port), so a setup can be tested against a "camera" without one:

    drivesegrt replay drive.mp4 --port 8554 &
    drivesegrt run --source http://127.0.0.1:8554/live.ts
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


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
    """One ffmpeg process serving ``clip`` as a live stream at ``url``.

    With ``protocol="http"`` ffmpeg listens (``-listen 1``) and serves one client, then exits;
    ``serve_forever`` restarts it for the next client. ``transcode`` re-encodes to H.264 (needed
    when the clip's codec cannot go into MPEG-TS as is, or to set a frame rate). ``speed``
    reads the clip that many times faster than real time (ffmpeg ``-readrate``; e.g. 4: a
    25 fps clip arrives at 100 frames a second), for soak tests that need many frames."""

    def __init__(self, clip: str | Path, port: int, host: str = "127.0.0.1",
                 protocol: str = "http", loop: bool = True, transcode: bool = False,
                 fps: float | None = None, speed: float = 1.0):
        self.clip = Path(clip)
        if not self.clip.is_file():
            raise FileNotFoundError(f"clip not found: {self.clip}")
        if protocol not in ("http", "udp"):
            raise ValueError(f"protocol {protocol!r} not supported; allowed: http, udp")
        if not 0 < port < 65536:
            raise ValueError(f"bad port {port}")
        if not 0 < speed <= 100:
            raise ValueError(f"replay speed must be in (0, 100], got {speed}")
        self.port, self.host, self.protocol = port, host, protocol
        self.loop, self.transcode, self.fps, self.speed = loop, transcode, fps, float(speed)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.protocol == "http":
            return f"http://{self.host}:{self.port}/live.ts"
        return f"udp://{self.host}:{self.port}"

    def command(self) -> list[str]:
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
        if self.protocol == "http":
            cmd += ["-listen", "1", self.url]
        else:
            cmd += [f"{self.url}?pkt_size=1316"]
        return cmd

    def start(self) -> "ReplayServer":
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)
        return self

    def wait_ready(self, timeout: float = 10.0) -> "ReplayServer":
        """Block until ffmpeg listens (http) without connecting to it: a probe connection
        would use up its single client."""
        import psutil

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise ValueError(f"ffmpeg exited with code {self.proc.poll() if self.proc else '?'}"
                                 f" before serving {self.url}")
            if self.protocol != "http":
                return self
            try:
                conns = psutil.Process(self.proc.pid).net_connections(kind="tcp")
            except psutil.Error:
                conns = []
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in conns):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"ffmpeg did not start listening on {self.url} within {timeout} s")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
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


def add_arguments(p):
    p.add_argument("clip", help="video file to replay")
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (http) or send to (udp); default loopback only")
    p.add_argument("--protocol", choices=["http", "udp"], default="http")
    p.add_argument("--once", action="store_true", help="play the clip once instead of looping")
    p.add_argument("--transcode", action="store_true", help="re-encode to H.264 (ultrafast)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (transcodes)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="read the clip this many times faster than real time (default 1)")


def main(args) -> int:
    server = ReplayServer(args.clip, args.port, args.host, args.protocol, not args.once,
                          args.transcode, args.fps, args.speed)
    print(f"serving {server.clip} at {server.url} (Ctrl-C to stop)", flush=True)
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop["now"]:
            server.start().wait_ready()
            while server.running() and not stop["now"]:
                time.sleep(0.2)
            code = server.proc.poll() if server.proc else 0
            server.stop()
            if args.once or args.protocol == "udp" or stop["now"]:
                break
            if code not in (0, None):
                # ffmpeg failed on its own (bad clip, port in use): do not spin
                raise ValueError(f"ffmpeg exited with code {code} serving {server.url}")
            time.sleep(0.2)  # the client left; listen again for the next one
    except KeyboardInterrupt:
        server.stop()
        return 130
    finally:
        server.stop()
    return 0
