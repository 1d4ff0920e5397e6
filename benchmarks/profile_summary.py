"""Summarize a py-spy raw profile of a run: samples per thread, top self-time frames and the
drivesegrt functions the time is spent under.

    py-spy record --native --threads --subprocesses --rate 200 --format raw -o run.raw -- \
        python -m drivesegrt run --source CLIP --output runs/prof --overwrite
    python benchmarks/profile_summary.py run.raw [--top 8]

py-spy's raw format is one line per distinct stack, ``frame;frame;...;frame COUNT``, the
first frame naming the thread (``--threads``) and, with ``--subprocesses``, the process.
"Self" is the innermost frame (with ``--native``, the C/C++ function doing the work);
"under" is the innermost drivesegrt frame, i.e. which of our functions the time is spent in.
With ``--native`` py-spy also samples threads blocked in the C library; a sample whose
innermost frames wait on a lock, a condition or the GIL (``pthread_cond_*``,
``*acquire_lock*``, futex/sem/poll/sleep) is counted as "waiting", apart from the busy ones
the tables rank.
Not a test: nothing asserts a time.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

_THREAD = re.compile(r"thread \(\w+\): (?P<name>.*)")
_PROCESS = re.compile(r"process \d+:\"?(?P<cmd>[^\"]*)\"?")
_WAIT = re.compile(r"pthread_cond_|acquire_lock|sem_(timed)?wait|futex|epoll_wait|^poll |"
                   r"^select |nanosleep|sched_yield")


def _short(frame: str) -> str:
    """'fn (path/to/file.py:12)' -> 'fn (file.py)'; native frames keep their library."""
    m = re.match(r"(?P<fn>.*) \((?P<where>[^()]*)\)$", frame)
    if not m:
        return frame
    where = m["where"].rsplit("/", 1)[-1].split(":")[0]
    return f"{m['fn'][:60]} ({where})"


def summarize(lines, top: int = 8) -> str:
    threads: dict[str, Counter] = defaultdict(Counter)
    under: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    waiting: Counter = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        proc = ""
        if frames and _PROCESS.match(frames[0]):
            cmd = _PROCESS.match(frames[0])["cmd"].split()
            proc = (cmd[0].rsplit("/", 1)[-1] if cmd else "?") + ":"
            frames = frames[1:]
        m = _THREAD.match(frames[0]) if frames else None
        name = proc + (m["name"] if m else "?")
        body = frames[1:] if m else frames
        if not body:
            continue
        totals[name] += n
        if any(_WAIT.search(f) for f in body[-3:]):
            waiting[name] += n
            continue
        threads[name][_short(body[-1])] += n
        ours = [f for f in body if "drivesegrt/" in f]
        under[name][_short(ours[-1]) if ours else "(outside drivesegrt)"] += n
    everything = sum(totals.values()) or 1
    out = [f"{everything} samples"]
    for name, n in totals.most_common():
        busy = n - waiting[name]
        out.append(f"\n{name}: {n} samples ({100 * n / everything:.1f} %), busy {busy}, "
                   f"waiting {waiting[name]}")
        out.append("  self (share of busy samples):")
        for frame, k in threads[name].most_common(top):
            out.append(f"    {100 * k / max(1, busy):5.1f} %  {frame}")
        out.append("  under (innermost drivesegrt frame):")
        for frame, k in under[name].most_common(top):
            out.append(f"    {100 * k / max(1, busy):5.1f} %  {frame}")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("raw", help="py-spy --format raw output")
    p.add_argument("--top", type=int, default=8)
    args = p.parse_args()
    with open(args.raw) as f:
        print(summarize(f, args.top))


if __name__ == "__main__":
    main()
