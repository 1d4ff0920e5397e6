"""Ray for a batch: start it embedded on this machine, or join a running cluster.

Embedded (no ``--address``): ``ray.init`` starts a one-machine Ray in this process's session
with its files and logs under the batch folder (``DIR/.ray``; a short folder under the system's
temp dir with a ``DIR/.ray`` link when DIR's path is too long for the AF_UNIX sockets Ray puts
there), no dashboard, worker output to the log files only. ``--address auto|HOST:PORT`` joins a
cluster started with ``ray start`` (its logs stay where that cluster keeps them). Ray is an
optional dependency (``pip install "drivesegrt[fleet]"``): it is imported here, only when a
batch runs.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

from .layout import RAY

INSTALL_HINT = ('drivesegrt batch needs Ray: pip install "drivesegrt[fleet]" '
                '(or pip install "ray>=2.9" pyarrow)')
# AF_UNIX socket paths are limited to 107 bytes; Ray puts its sockets at
# <temp dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store (about 70 bytes after it).
_SOCKET_TAIL = 72
_SOCKET_MAX = 107


def import_ray():
    """The ``ray`` module, or ValueError with the one-line install hint."""
    try:
        import ray
    except ImportError:
        raise ValueError(INSTALL_HINT) from None
    try:
        import pyarrow  # noqa: F401  (the Parquet dataset)
    except ImportError:
        raise ValueError(INSTALL_HINT) from None
    return ray


def local_cpus() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def temp_dir(out: Path) -> Path:
    """Where embedded Ray keeps its session: DIR/.ray, or a short stand-in linked from it."""
    inside = Path(out).absolute() / RAY
    if len(str(inside)) + _SOCKET_TAIL <= _SOCKET_MAX:
        inside.mkdir(parents=True, exist_ok=True)
        return inside
    digest = hashlib.sha1(str(inside).encode()).hexdigest()[:10]
    short = Path(tempfile.gettempdir()) / f"dsrt-{digest}"
    short.mkdir(parents=True, exist_ok=True)
    if inside.is_symlink() and inside.resolve() != short.resolve():
        inside.unlink()
    if not inside.exists():
        inside.symlink_to(short, target_is_directory=True)
    return short


@contextlib.contextmanager
def session(ray, address: str | None, out: Path, num_cpus: int, verbose: bool):
    """Connect this process to Ray for the ``with`` block; yields a one-line description of
    what it joined. Unless ``verbose``, what Ray prints on this process's stdout while it is
    connected (a worker that died, a task it retries: its own log lines) goes to
    ``DIR/.ray/driver-<time>.log``: write the batch's own lines to the stdout taken before."""
    quiet = {} if verbose else {"logging_level": logging.ERROR, "log_to_driver": False}
    logs = Path(out) / RAY
    embedded = {} if address else {"num_cpus": num_cpus, "include_dashboard": False,
                                   "_temp_dir": str(temp_dir(out))}
    logs.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        if not verbose:
            log = stack.enter_context(open(logs / f"driver-{time.strftime('%Y%m%d-%H%M%S')}.log",
                                           "a"))
            stack.enter_context(contextlib.redirect_stdout(log))
        ray.init(address=address or "local", **embedded, **quiet)
        try:
            if address:
                nodes = sum(n["Alive"] for n in ray.nodes())
                yield (f"cluster at {address}: {nodes} nodes, "
                       f"{ray.cluster_resources().get('CPU', 0):g} CPUs")
            else:
                yield f"embedded ({num_cpus} CPUs)"
        finally:
            ray.shutdown()          # embedded: stops Ray's processes
