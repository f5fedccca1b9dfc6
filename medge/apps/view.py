"""Browser view for headless devices: the latest JPEG frame as MJPEG plus live stats over HTTP.

Routes: ``/`` a page showing both, ``/stream`` ``multipart/x-mixed-replace`` MJPEG, ``/frame.jpg``
the latest frame, ``/stats`` JSON, ``/events`` server-sent stats events.  The producer calls
`BrowserView.publish(jpeg_bytes)`, which only swaps a reference: every client thread sends the
newest frame when it is ready for one, so a slow or stalled client just gets fewer frames and
never slows the pipeline (there is no per-client queue).  Binds 127.0.0.1 unless told otherwise.
HTTPS, the token and the headers are `medge.apps.view_security`'s; only GET and HEAD are answered.
"""

from __future__ import annotations

import errno
import html
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from medge.apps.scheduling import set_os_thread_name
from medge.apps.view_security import BASE_HEADERS, DATA_CSP, LOGIN_PAGE, Guard, ViewSecurity, page_csp
from medge.common.errors import MedgeError, UsageError
from medge.common.registry import import_optional

BOUNDARY = "medgeframe"


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """JPEG bytes of a uint8 grey (H, W) or BGR (H, W, 3) image (OpenCV channel order)."""
    cv2 = import_optional("cv2", what="the browser view")

    ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise MedgeError(f"cannot encode a {image.shape} {image.dtype} frame as JPEG")
    return buf.tobytes()


def parse_view(spec: str, default_port: int = 8080) -> tuple[str, str, int]:
    """``browser[:HOST:PORT]`` / ``browser:PORT`` / ``window`` / ``none`` → (kind, host, port)."""
    kind, _, rest = spec.partition(":")
    if kind not in ("browser", "window", "none"):
        raise UsageError(f"--view {spec!r}: expected browser[:HOST:PORT], window or none")
    if kind != "browser" or not rest:
        if rest:
            raise UsageError(f"--view {kind} takes no address (got {spec!r})")
        return kind, "127.0.0.1", default_port
    host, _, port_text = rest.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"--view {spec!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--view {spec!r}: port must be 0–65535")
    return kind, host or "127.0.0.1", port


class LazyFrame:
    """A frame made (e.g. drawn and JPEG-encoded) by the first reader that wants it, then shared."""

    __slots__ = ("_make", "_data", "_lock")

    def __init__(self, make: Callable[[], bytes]) -> None:
        self._make: Callable[[], bytes] | None = make
        self._data: bytes | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes:
        """The frame's bytes (made on the first call, in the caller's thread)."""
        with self._lock:
            if self._make is not None:
                self._data, self._make = self._make(), None
            return self._data  # type: ignore[return-value]


class FrameBoard:
    """The latest frame and its number; readers wait for a newer one (no queue).  A frame published
    as a function is made only when a reader wants it (`LazyFrame`): no reader, no encoding."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: bytes | LazyFrame | None = None
        self._seq = 0
        self._closed = False

    def publish(self, jpeg: bytes | Callable[[], bytes]) -> None:
        """Replace the latest frame (never blocks on readers); a function is called by the first reader."""
        with self._cond:
            self._frame, self._seq = jpeg if isinstance(jpeg, bytes) else LazyFrame(jpeg), self._seq + 1
            self._cond.notify_all()

    def latest(self) -> tuple[int, bytes | None]:
        """(number, bytes) of the latest frame (bytes None before the first)."""
        with self._cond:
            seq, frame = self._seq, self._frame
        return seq, frame.get() if isinstance(frame, LazyFrame) else frame

    def wait_newer(self, seen: int, timeout: float) -> tuple[int, bytes | None]:
        """Wait up to `timeout` s for a frame newer than number `seen`; returns the latest."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > seen or self._closed, timeout)
            seq, frame = self._seq, self._frame
        return seq, frame.get() if isinstance(frame, LazyFrame) else frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{background:#111;color:#ddd;font:14px sans-serif;margin:1em}}
#frame{{max-width:100%;border:1px solid #333}} #summary{{margin:.5em 0;font-size:16px;color:#fff}} table{{border-collapse:collapse;margin-top:.5em}}
td{{padding:2px 10px;border-bottom:1px solid #333}} td.k{{color:#9ab}}
#header .line{{color:#bcd}} #header .warning{{width:max-content;max-width:100%;background:#a60;color:#fff;padding:2px 10px;margin:2px 0}}</style></head>
<body><h3>{title}</h3>{header}<img id="frame" src="/stream" alt="live stream">
<div id="alert" hidden style="width:max-content;background:#c22;color:#fff;font-weight:bold;padding:2px 10px"></div>
<div id="nosignal" hidden style="width:max-content;background:#c22;color:#fff;font-weight:bold;padding:2px 10px">NO SIGNAL</div>
<div id="summary">waiting for stats…</div>
<details open><summary>all stats</summary>
<table id="stats"><tr><td>waiting for stats…</td></tr></table></details>
<script>
function rows(obj, prefix, out) {{
  for (const [k, v] of Object.entries(obj)) {{
    const key = prefix ? prefix + "." + k : k;
    if (v && typeof v === "object" && !Array.isArray(v)) rows(v, key, out); else out.push([key, v]);
  }}
  return out;
}}
function num(v, digits) {{ return typeof v === "number" ? v.toFixed(digits) : "n/a"; }}
function summarize(d) {{
  if (typeof d.summary === "string") return d.summary;  // an app's own summary line (the ECG page)
  const f = d.frames || {{}}, e = ((d.latency_ms || {{}}).end_to_end) || {{}};
  return "fps " + num(d.fps_recent, 1) + " · pipeline latency p50 " + num(e.p50, 1) + " ms, p99 " + num(e.p99, 1) +
    " ms · frames in " + f.in + ", out " + f.out + ", dropped " + f.dropped + ", corrupt " + f.corrupt +
    (d.running === false ? " · stopped" : "");
}}
function show(data) {{
  if (data.frames) document.getElementById("summary").textContent = summarize(data);
  document.getElementById("nosignal").hidden = !(data.source && data.source.signal === false);
  const alert = document.getElementById("alert"); alert.hidden = !data.alert; alert.textContent = data.alert || "";
  const t = document.getElementById("stats");
  t.innerHTML = "";
  for (const [k, v] of rows(data, "", [])) {{
    const tr = t.insertRow(); const a = tr.insertCell(); const b = tr.insertCell();
    a.className = "k"; a.textContent = k;
    b.textContent = typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(2)) : String(v);
  }}
  t.dataset.updates = String(Number(t.dataset.updates || 0) + 1);
}}
const es = new EventSource("/events");
let ended = false;
es.onmessage = (e) => {{ const d = JSON.parse(e.data); show(d); ended = d.running === false; }};
es.onerror = () => {{
  if (!ended) return;  // the run ended: keep its last frame and summary, stop reconnecting
  es.close();
  document.getElementById("summary").textContent += " · run ended";
}};
</script></body></html>
"""


class BrowserView:
    """A threaded HTTP server showing the latest JPEG frame and live stats.

    `stats` is a callable returning a JSON-ready dict (e.g. `Pipeline.stats`).  Use `start()` (or
    the context manager), `publish(jpeg)` from the producer, `close()` at the end.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, title: str = "medge",
                 stats: Callable[[], dict[str, Any]] | None = None, stats_interval_s: float = 0.5,
                 max_clients: int = 16, send_timeout_s: float = 10.0, port_hint: str = "choose another port",
                 security: ViewSecurity | None = None) -> None:
        self.host, self.port, self.title = host, port, title
        self.security = security or ViewSecurity()
        self.guard: Guard | None = None
        self.board = FrameBoard()
        self._stats = stats or (lambda: {})
        self._interval = stats_interval_s
        self._clients = threading.BoundedSemaphore(max_clients)
        self._send_timeout = send_timeout_s
        self._port_hint = port_hint
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.frames_sent = 0
        self._sent_lock = threading.Lock()
        self._header = ""
        self._streaming = 0  # clients in /stream or /events: close() lets them send their last frame and stats

    @property
    def url(self) -> str:
        """``http(s)://host:port/`` (the real port and scheme once started; never the token)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.guard.scheme if self.guard else 'http'}://{host}:{self.port}/"

    @property
    def open_url(self) -> str:
        """The URL to print for a person: `url`, plus ``login#token=…`` when the view needs a token."""
        return self.url + (self.guard.url_suffix() if self.guard else "")

    def set_stats(self, stats: Callable[[], dict[str, Any]]) -> None:
        """Replace the stats callable (e.g. once the pipeline exists)."""
        self._stats = stats

    def set_header(self, lines: list[str], warnings: list[str]) -> None:
        """Lines shown under the page title (e.g. model name and version) and warnings in amber boxes
        (e.g. a demo model, a calibration the app refused); plain text, escaped."""
        items = [f'<div class="line">{html.escape(line)}</div>' for line in lines]
        items += [f'<div class="warning">{html.escape(w)}</div>' for w in warnings]
        self._header = f'<div id="header">{"".join(items)}</div>' if items else ""

    def publish(self, jpeg: bytes | Callable[[], bytes]) -> None:
        """Show `jpeg` (bytes of one JPEG image, or a function making them, called only when a client
        wants the frame) to every client; returns at once."""
        self.board.publish(jpeg)

    def start(self) -> "BrowserView":
        """Bind and serve in a background thread; one-line `MedgeError` when the port is taken or a
        non-loopback bind has no token (see `ViewSecurity.check_bind`)."""
        self.security.check_bind(self.host)
        self.guard = guard = Guard(self.security)
        handler = _make_handler(self)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True
            # A restarted app (systemd Restart=, a redeploy) rebinds while its old connections sit in
            # TIME_WAIT; on POSIX SO_REUSEADDR still refuses a port another listener holds.
            allow_reuse_address = os.name == "posix"

            def finish_request(self, request, client_address) -> None:  # in the client's own thread
                if guard.ssl_context is not None:
                    try:
                        request = guard.ssl_context.wrap_socket(request, server_side=True)
                    except (OSError, ValueError):  # plain HTTP, a failed or timed-out handshake: drop it
                        return
                super().finish_request(request, client_address)

            def handle_error(self, request, client_address) -> None:  # a client gone mid-request is no error
                return

        try:
            self._server = Server((self.host, self.port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise MedgeError(f"port {self.port} on {self.host} is already in use; {self._port_hint}") from None
            raise MedgeError(f"cannot serve the browser view on {self.host}:{self.port} ({exc.strerror or exc}); "
                             "pass another host/port") from None
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._serve, name="medge-view", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        set_os_thread_name("medge-view")  # its request threads inherit the name (and the normal policy)
        self._server.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        """Stop serving; streaming clients get the last frame and the final stats first (up to 1 s)."""
        self.board.close()
        deadline = time.monotonic() + 1.0
        while self._streaming and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "BrowserView":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # used by the handler
    def _stats_json(self) -> bytes:
        data = self._stats()
        data = {**data, "view": {"frames_sent": self.frames_sent}}
        return json.dumps(data, default=str).encode()

    def _count_sent(self) -> None:
        with self._sent_lock:
            self.frames_sent += 1


def _make_handler(view: BrowserView) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "medge-view"
        sys_version = ""
        timeout = 30.0  # for a request line and headers; streams set their own
        _head = False  # this request is a HEAD: headers only
        _csp_sent = False

        def handle_one_request(self) -> None:  # one handler serves every request of a keep-alive connection
            self._head = self._csp_sent = False
            super().handle_one_request()

        def __getattr__(self, name: str) -> Any:
            if name.startswith("do_"):  # every method but GET and HEAD
                return self._not_allowed
            raise AttributeError(name)

        def _not_allowed(self) -> None:
            self.close_connection = True
            self.send_response(405)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def end_headers(self) -> None:
            for name, value in BASE_HEADERS.items():
                self.send_header(name, value)
            if not getattr(self, "_csp_sent", False):
                self.send_header("Content-Security-Policy", DATA_CSP)
            super().end_headers()

        def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
            self._head = True
            self.do_GET()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - no access log (no PHI, no noise)
            return

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            path = self.path.split("?", 1)[0]
            if path == "/login":
                self._html(LOGIN_PAGE)
                return
            if not view.guard.authorised(self.headers.get("Authorization"), self.headers.get("Cookie")):
                self._send(401, "text/plain", b"token required: open the link the app printed, or sign in with "
                           b"the token as password\n",
                           {"WWW-Authenticate": 'Basic realm="medge view (the token is the password)"'})
                return
            routes = {"/": self._page, "/index.html": self._page, "/stats": self._stats, "/session": self._session,
                      "/frame.jpg": self._frame, "/stream": self._stream, "/events": self._events}
            route = routes.get(path)
            if route is None:
                self._send(404, "text/plain", b"not found\n")
                return
            if path in ("/stream", "/events") and not self._head:
                if not view._clients.acquire(blocking=False):
                    self._send(503, "text/plain", b"too many clients\n")
                    return
                with view._sent_lock:
                    view._streaming += 1
                try:
                    self.connection.settimeout(view._send_timeout)
                    route()
                except OSError:  # broken pipe, reset, send timeout: the client is gone
                    self.close_connection = True
                finally:
                    with view._sent_lock:
                        view._streaming -= 1
                    view._clients.release()
                return
            route()

        def _send(self, code: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not self._head:
                self.wfile.write(body)

        def _html(self, page: str) -> None:
            self._csp_sent = True
            self._send(200, "text/html; charset=utf-8", page.encode(), {"Content-Security-Policy": page_csp(page)})

        def _page(self) -> None:
            self._html(PAGE.format(title=html.escape(view.title), header=view._header))

        def _session(self) -> None:
            self._send(204, "text/plain", b"", {"Set-Cookie": view.guard.session_cookie()})

        def _stats(self) -> None:
            self._send(200, "application/json", view._stats_json())

        def _frame(self) -> None:
            _, frame = view.board.latest()
            if frame is None:
                self._send(503, "text/plain", b"no frame yet\n")
            else:
                self._send(200, "image/jpeg", frame)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if self._head:
                return
            seen, repeated = 0, True
            while not view.board.closed:
                seq, frame = view.board.wait_newer(seen, timeout=0.5)
                if frame is None or (seq == seen and repeated):
                    continue
                # a browser shows a part only once the next one starts: when no newer frame came, the newest
                # (a "no signal" card, say) goes once more, so it shows even if no other frame follows
                repeated, seen = seq == seen, seq
                head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame)}\r\n\r\n").encode()
                self.wfile.write(head + frame + b"\r\n")
                self.wfile.flush()
                if not repeated:
                    view._count_sent()
            self.wfile.write(f"--{BOUNDARY}--\r\n".encode())  # the end: the browser shows the last frame and keeps it
            self.wfile.flush()

        def _events(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if self._head:
                return
            while not view.board.closed:
                self.wfile.write(b"data: " + view._stats_json() + b"\n\n")
                self.wfile.flush()
                time.sleep(view._interval)
            self.wfile.write(b"data: " + view._stats_json() + b"\n\n")  # the final stats stay on the page
            self.wfile.flush()

    return Handler
