"""The browser view over real sockets: page, stats, MJPEG stream, several clients, a stalled client, a taken port."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest

from medge.apps.view import BOUNDARY, BrowserView, encode_jpeg, parse_view
from medge.common.errors import MedgeError, UsageError


def _jpeg(value: int, size: int = 64) -> bytes:
    return encode_jpeg(np.full((size, size), value, dtype=np.uint8))


def _read_stream_frames(url: str, n: int, timeout: float = 10) -> list[bytes]:
    """Parse `n` JPEG parts from a multipart/x-mixed-replace stream."""
    frames = []
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        assert resp.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        while len(frames) < n:
            assert resp.readline().strip() == f"--{BOUNDARY}".encode()
            headers = {}
            while (line := resp.readline().strip()):
                key, _, value = line.decode().partition(":")
                headers[key.lower()] = value.strip()
            assert headers["content-type"] == "image/jpeg"
            frames.append(resp.read(int(headers["content-length"])))
            resp.readline()
    return frames


@pytest.fixture
def view():
    with BrowserView("127.0.0.1", 0, title="test view", stats=lambda: {"fps": 12.5}) as v:
        yield v


def _publisher(view: BrowserView, stop: threading.Event, period: float = 0.01) -> threading.Thread:
    def run():
        i = 0
        while not stop.is_set():
            view.publish(_jpeg(i % 256))
            i += 1
            time.sleep(period)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_page_stats_frame_and_defaults(view):
    assert view.url.startswith("http://127.0.0.1:")
    page = urllib.request.urlopen(view.url, timeout=5).read().decode()
    assert '<img id="frame" src="/stream"' in page and "EventSource" in page and "test view" in page
    stats = json.loads(urllib.request.urlopen(view.url + "stats", timeout=5).read())
    assert stats["fps"] == 12.5 and "view" in stats
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(view.url + "frame.jpg", timeout=5)
    assert err.value.code == 503  # no frame yet
    view.publish(_jpeg(7))
    assert urllib.request.urlopen(view.url + "frame.jpg", timeout=5).read() == _jpeg(7)


def test_stream_serves_several_clients_the_latest_frames(view):
    stop = threading.Event()
    _publisher(view, stop)
    results: dict[int, list[bytes]] = {}
    clients = [threading.Thread(target=lambda k=k: results.__setitem__(k, _read_stream_frames(view.url + "stream", 5)))
               for k in range(3)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(15)
    stop.set()
    assert sorted(results) == [0, 1, 2]
    for frames in results.values():
        assert len(set(frames)) == 5  # each part is a new frame, never a repeat


def test_events_stream_pushes_stats(view):
    with urllib.request.urlopen(view.url + "events", timeout=5) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        first = resp.readline()
        assert first.startswith(b"data: ") and json.loads(first[6:])["fps"] == 12.5


def test_stalled_client_does_not_block_the_publisher_or_other_clients(view):
    stalled = socket.create_connection(("127.0.0.1", view.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")  # then never reads
    big = encode_jpeg(np.random.default_rng(0).integers(0, 255, (480, 640), dtype=np.uint8), quality=95)
    t0 = time.perf_counter()
    for _ in range(300):  # ~40 MB, far beyond any socket buffer
        view.publish(big)
    assert time.perf_counter() - t0 < 1.0
    stop = threading.Event()
    _publisher(view, stop)
    try:
        assert len(set(_read_stream_frames(view.url + "stream", 3))) == 3
    finally:
        stop.set()
        stalled.close()


def test_port_in_use_is_a_one_line_error(view):
    with pytest.raises(MedgeError) as err:
        BrowserView("127.0.0.1", view.port, port_hint="pass --view browser:HOST:PORT").start()
    assert str(err.value) == f"port {view.port} on 127.0.0.1 is already in use; pass --view browser:HOST:PORT"


@pytest.mark.parametrize("spec, expected", [
    ("browser", ("browser", "127.0.0.1", 8080)), ("browser:0.0.0.0:9000", ("browser", "0.0.0.0", 9000)),
    ("browser:9001", ("browser", "127.0.0.1", 9001)), ("none", ("none", "127.0.0.1", 8080)),
    ("window", ("window", "127.0.0.1", 8080)),
])
def test_parse_view(spec, expected):
    assert parse_view(spec) == expected


@pytest.mark.parametrize("spec", ["web", "browser:host:port", "none:1", "browser:1:99999"])
def test_parse_view_rejects(spec):
    with pytest.raises(UsageError):
        parse_view(spec)
