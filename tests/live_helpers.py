"""Helpers for live-source tests: free ports, `drivesegrt run` as a background process."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from pipeline_helpers import ROOT

from drivesegrt.capture.replay import free_port  # noqa: F401  (re-exported for the tests)


class LiveRun:
    """``python -m drivesegrt run ARGS`` in the background; stdout and stderr are collected
    line by line by threads, so a test can wait for a message while the run goes on."""

    def __init__(self, *args: str):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-m", "drivesegrt", "run", "--backend", "torch", *args], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._readers = [threading.Thread(target=self._collect, args=(pipe, lines), daemon=True)
                         for pipe, lines in ((self.proc.stderr, self.stderr_lines),
                                             (self.proc.stdout, self.stdout_lines))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _collect(pipe, lines: list[str]):
        for line in pipe:
            lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    @property
    def stdout(self) -> str:
        return "\n".join(self.stdout_lines)

    def wait_for_line(self, needle: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.stderr_lines):
                if needle in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise TimeoutError(f"no {needle!r} on stderr (rc={self.proc.poll()}): {self.stderr}")

    def wait_for_frames(self, jsonl: Path, n: int, timeout: float = 60) -> int:
        """Block until frames.jsonl has at least ``n`` lines; returns the count."""
        deadline = time.monotonic() + timeout
        count = 0
        while time.monotonic() < deadline:
            if jsonl.exists():
                count = jsonl.read_text().count("\n")
                if count >= n:
                    return count
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise TimeoutError(f"{count} < {n} frames published (rc={self.proc.poll()}): "
                           f"{self.stderr}")

    def finish(self, timeout: float = 120) -> int:
        """Wait for the exit; returns the exit code (stdout/stderr collected)."""
        rc = self.proc.wait(timeout)
        for t in self._readers:
            t.join(timeout=10)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
