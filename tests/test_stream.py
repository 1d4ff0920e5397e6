"""Reconnector: backoff schedule, outage accounting, give-up and cancel, on a real ffmpeg stream."""
from __future__ import annotations

import itertools
import threading
import time

import pytest
from helpers import HIGHWAY_CLIP, needs_ffmpeg

from drivesegrt.capture import open_source
from drivesegrt.capture.reconnect import Backoff, Reconnector
from drivesegrt.capture.replay import ReplayServer, free_port


def test_backoff_doubles_up_to_the_maximum():
    assert list(itertools.islice(Backoff().delays(), 7)) == [0.5, 1, 2, 4, 5, 5, 5]
    assert list(itertools.islice(Backoff(0.1, 0.3, 3).delays(), 3)) == [0.1, 0.3, 0.3]
    with pytest.raises(ValueError, match="bad backoff"):
        Backoff(2.0, 1.0)


def test_bad_timeout_and_first_open_errors_propagate():
    def never_opens():
        raise ValueError("stream x does not open")

    with pytest.raises(ValueError, match="reconnect timeout must be > 0"):
        Reconnector(never_opens, "stream x", timeout_s=0)
    with pytest.raises(ValueError, match="does not open"):       # bad input, not an outage
        Reconnector(never_opens, "stream x")


@needs_ffmpeg
@pytest.mark.timeout(120)
def test_stream_source_outage_give_up_and_cancel(shared_data):
    port = free_port()
    with ReplayServer(HIGHWAY_CLIP, port) as srv:
        give_up = open_source(srv.url, reconnect_timeout=1.0, backoff=Backoff(0.2, 0.4))
        assert give_up.read().image.shape == (540, 960, 3)
    # Server gone: buffered frames drain, then reopening fails until the timeout.
    t0 = time.monotonic()
    while give_up.read() is not None:
        pass
    assert "did not come back within 1 s" in give_up.end_reason
    assert give_up.reconnects == 0 and give_up.outage_s >= 1.0
    assert give_up.describe()["reconnect_attempts"] >= 2
    assert time.monotonic() - t0 < 30
    give_up.close()

    with ReplayServer(HIGHWAY_CLIP, port) as srv:
        forever = open_source(srv.url)                 # no timeout: retries until stopped
        forever.read()
    result = []
    reader = threading.Thread(target=lambda: result.append(
        [f for f in iter(forever.read, None)]))
    reader.start()
    time.sleep(1.5)
    assert reader.is_alive()                           # still waiting for the camera
    forever.interrupt()                                # what the capture stage's stop() does
    reader.join(timeout=10)
    assert not reader.is_alive() and forever.end_reason is None
    forever.close()
