"""The HTTP endpoint of a run (``--http [HOST:]PORT``, ``runtime.http``): live viewer, metrics,
health. It runs in threads of the supervisor process, so it outlives any stage restart and the
viewer recovers by itself.

Routes:

- ``GET /``: the live viewer (``pipeline/web/viewer.html``, one file, no build step).
- ``GET /metrics``: Prometheus text format (:mod:`pipeline.metrics`).
- ``GET /healthz``: 200 ``ok`` while the supervisor's loop turns; 503 otherwise. The only
  route open without the ``Host`` check and the token (for probes; it reveals nothing else).
- ``GET /readyz``: 200 ``ready`` when every running stream delivers frames and no stage is
  stalled or down; else 503 with one line per reason, naming the stream or stage.
- ``GET /api/status``: the run's state as JSON (streams, stages, readiness).
- ``GET /video/<stream>``: MJPEG (``multipart/x-mixed-replace``) of the annotated frames; 404
  for a stream this run never had; a stream that has ended gets its newest frame and the end.
- ``GET /snapshot/<stream>.jpg``: the newest annotated frame (404 before the first).
- ``GET /events``: Server-Sent Events, the newest :data:`RECENT_EVENTS` events then live ones.
- ``GET /clips/<stream>/<name>.mp4|.jpg``: alert clips and snapshots from the output folder's
  ``clips/`` (see :mod:`stream.clips`), only from inside it (no ``..``, no links out, no other
  file types); single ``Range`` requests are answered (206) so browsers can seek in a clip.

Frames and events reach the supervisor from the publish stage over the run's ``tap`` socket
(:class:`pipeline.workers.ViewerTap`); a :class:`LiveTap` thread keeps the newest JPEG per
stream and a bounded list of recent events. Streaming clients (MJPEG, SSE) are bounded by
:data:`MAX_STREAM_CLIENTS` (503 past it); each waits with a timeout, notices within
:data:`GONE_CHECK_S` that its client has gone, and ends when the run does.

Hostile clients (see :class:`HttpService`, :class:`HttpAccess`): a connection cap
(``runtime.http_max_connections``, a 503 and no thread past it), a deadline for the request head
and for stalled writes (``runtime.http_timeout_s``), the ``Host`` check against DNS rebinding
(``runtime.http_allowed_hosts``) and the bearer token (``runtime.http_token_file``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import zmq

log = logging.getLogger(__name__)

VIEWER = Path(__file__).resolve().parent / "web" / "viewer.html"
RECENT_EVENTS = 50
MAX_STREAM_CLIENTS = 32  # MJPEG and SSE responses at once (503 past it)
MAX_CONNECTIONS = 100  # default of runtime.http_max_connections: one thread each
TIMEOUT_S = 10.0  # default of runtime.http_timeout_s
KEEPALIVE_S = 5.0
GONE_CHECK_S = 0.5  # how often a waiting streaming response checks that its client is there
SESSION_COOKIE = "vigil_session"


class LiveTap:
    """Receives the publish stage's tap: newest JPEG per stream, recent events (bounded)."""

    def __init__(self, zctx: zmq.Context, endpoint: str, keep_events: int = 200) -> None:
        self._sock = zctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 64)
        self._sock.bind(endpoint)
        self.changed = threading.Condition()
        self.frames: dict[str, tuple[int, bytes]] = {}  # stream -> (frame counter, jpeg)
        self.events: deque[tuple[int, str]] = deque(maxlen=keep_events)  # (seq, json line)
        self.closed = False
        self._thread = threading.Thread(target=self._run, name="vigil-tap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        count = 0
        while not self.closed:
            try:
                if not self._sock.poll(200, zmq.POLLIN):
                    continue
                parts = self._sock.recv_multipart()
            except zmq.ZMQError:
                break
            with self.changed:
                try:
                    if parts[0] == b"frame" and len(parts) == 4:
                        count += 1
                        self.frames[parts[1].decode()] = (count, parts[3])
                    elif parts[0] == b"event" and len(parts) == 2:
                        line = parts[1].decode()
                        self.events.append((json.loads(line).get("seq") or 0, line))
                except Exception:  # one bad message must not freeze the viewer for the run
                    log.exception("viewer tap: message dropped")
                self.changed.notify_all()
        self._sock.close()

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        self._thread.join(2.0)


class HttpService:
    """The HTTP server thread. ``status()`` returns the run's JSON status (cheap: the
    supervisor refreshes it), ``metrics()`` the Prometheus text, ``alive()`` the liveness.

    Access (see :class:`HttpAccess`): every route but ``/healthz`` checks the ``Host`` header
    (DNS rebinding) and, with a token, the credentials. Limits: at most ``max_connections``
    connections at once (past it a connection gets a 503 and is closed without a thread), each
    must send its whole request head within ``timeout_s`` (a slowloris client is cut off then),
    and a write a client does not read for ``timeout_s`` ends its connection.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tap: LiveTap,
        status: Callable[[], dict[str, Any]],
        metrics: Callable[[], tuple[bytes, str]],
        alive: Callable[[], bool],
        access: HttpAccess | None = None,
        max_connections: int = MAX_CONNECTIONS,
        timeout_s: float = TIMEOUT_S,
        out_dir: Path | None = None,
    ) -> None:
        self.tap, self.status, self.metrics, self.alive = tap, status, metrics, alive
        self.access = access if access is not None else HttpAccess(bound_host=host)
        self.clips_dir = (Path(out_dir) / "clips").resolve() if out_dir is not None else None
        self._clients = threading.BoundedSemaphore(MAX_STREAM_CLIENTS)
        self.closing = threading.Event()
        service = self

        class Handler(_Handler):
            svc = service
            timeout = timeout_s  # per recv/send: a client that stops reading is dropped

        self._server = _Server(
            (host, port), Handler, max_connections=max_connections, timeout_s=timeout_s
        )
        self.port = self._server.server_address[1]
        self.host = host
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            daemon=True,
            name="vigil-http",
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def connections(self) -> int:
        """Connections being served now (each holds one thread)."""
        return self._server.active

    @property
    def refused(self) -> int:
        """Connections refused so far because :data:`MAX_CONNECTIONS` were open."""
        return self._server.refused

    def close(self) -> None:
        self.closing.set()
        with self.tap.changed:
            self.tap.changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)


class HttpAccess:
    """Who may use the HTTP endpoint: the ``Host`` check and the optional token.

    - ``Host``: the bound host, ``localhost``, ``127.0.0.1``, ``::1``, the names in
      ``allowed_hosts``, and any IP literal are accepted (DNS rebinding needs a name the
      attacker controls, so an IP literal cannot be one); anything else is 403. A request
      without ``Host`` (HTTP/1.0 tools; every browser sends one) is accepted.
    - ``token`` (``runtime.http_token_file``): ``Authorization: Bearer TOKEN``, or
      ``?token=TOKEN`` on any URL, or the session cookie that ``/?token=TOKEN`` sets
      (HttpOnly, SameSite=Strict) before redirecting to ``/``: the viewer's ``<img>`` and
      ``EventSource`` requests cannot send headers, but send the cookie.
    """

    def __init__(
        self,
        *,
        bound_host: str = "127.0.0.1",
        allowed_hosts: Sequence[str] = (),
        token: str | None = None,
    ) -> None:
        names = {"localhost", "127.0.0.1", "::1", bound_host, *allowed_hosts}
        self.allowed_hosts = frozenset(_host_name(n) for n in names if n)
        self.token = token or None
        self.session = (
            hmac.new(self.token.encode(), b"vigil viewer session", hashlib.sha256).hexdigest()
            if self.token
            else None
        )

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header may be served (see the class doc)."""
        if header is None:
            return True
        name = _host_name(header)
        if name in self.allowed_hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def authorized(self, headers: Any, query: dict[str, list[str]]) -> bool:
        """Whether the request carries the token (header, query or session cookie)."""
        if self.token is None:
            return True
        auth = headers.get("Authorization") or ""
        if auth[:7].lower() == "bearer " and _same(auth[7:].strip(), self.token):
            return True
        if any(_same(t, self.token) for t in query.get("token", [])):
            return True
        return self.session is not None and _same(_cookie(headers, SESSION_COOKIE), self.session)

    def session_cookie(self) -> str:
        """The ``Set-Cookie`` value that lets a browser in without the token in its URLs."""
        return f"{SESSION_COOKIE}={self.session}; Path=/; HttpOnly; SameSite=Strict"


def _host_name(value: str) -> str:
    """``Host`` header or host -> the lower-case name without port or brackets."""
    host = value.strip().lower()
    if host.startswith("["):  # [v6]:port
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:  # name:port (several ":" is a bare IPv6 address)
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _cookie(headers: Any, name: str) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(headers.get("Cookie") or "")
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once; a connection that has not
    sent its whole request head ``timeout_s`` after it began is shut down (slowloris)."""

    daemon_threads = True
    block_on_close = False  # server_close must not wait for streaming clients
    request_queue_size = 128  # listen backlog: at socketserver's 5, a burst waits for SYN retries

    def __init__(
        self, address: tuple[str, int], handler: type, *, max_connections: int, timeout_s: float
    ) -> None:
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._heads: dict[socket.socket, float] = {}  # reading a request head -> deadline
        self.active = 0
        self.refused = 0
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning(
                    "http: connection refused, %d open (runtime.http_max_connections); "
                    "%d refused so far",
                    self.active,
                    self.refused,
                )
            _answer_busy(request)
            self.shutdown_request(request)
            return
        with self._lock:
            self.active += 1
        try:
            super().process_request(request, client_address)  # starts its thread
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.reading_done(request)
            self._release()

    def _release(self) -> None:
        with self._lock:
            self.active -= 1
        self._slots.release()

    def reading_head(self, conn: socket.socket) -> None:
        with self._lock:
            self._heads[conn] = time.monotonic() + self.timeout_s

    def reading_done(self, conn: socket.socket) -> None:
        with self._lock:
            self._heads.pop(conn, None)

    def service_actions(self) -> None:
        """Every poll of the accept loop: cut off connections whose request head is late."""
        now = time.monotonic()
        with self._lock:
            late = [conn for conn, deadline in self._heads.items() if deadline < now]
            for conn in late:
                del self._heads[conn]
        for conn in late:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # its thread's read returns at once: it ends
            except OSError:
                pass


def _answer_busy(request: socket.socket) -> None:
    """Best effort, never blocking the accept loop: a 503 to a connection past the cap."""
    try:
        request.setblocking(False)
        request.send(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 26\r\nConnection: close\r\n\r\ntoo many HTTP connections\n"
        )
    except OSError:
        pass


class _ClientGone(Exception):
    """The client of a streaming response closed its connection."""


class _Handler(BaseHTTPRequestHandler):
    svc: HttpService
    server: _Server
    server_version = "vigil"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        log.debug("http %s %s", self.address_string(), format % args)

    def handle_one_request(self) -> None:
        self.server.reading_head(self.connection)  # the whole head within timeout_s
        try:
            super().handle_one_request()
        finally:
            self.server.reading_done(self.connection)

    def parse_request(self) -> bool:
        ok = super().parse_request()  # has read the headers
        self.server.reading_done(self.connection)
        return ok

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        access = self.svc.access
        try:
            if path == "/healthz":  # open to probes: it says only whether the loop turns
                ok = self.svc.alive()
                self._text(
                    HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                    "ok" if ok else "supervisor loop not turning",
                )
                return
            if not access.host_allowed(self.headers.get("Host")):
                self._text(
                    HTTPStatus.FORBIDDEN,
                    f"Host {self.headers.get('Host')!r} not allowed "
                    "(add it to runtime.http_allowed_hosts)",
                )
                return
            query = parse_qs(parts.query)
            if not access.authorized(self.headers, query):
                self._unauthorized()
                return
            if path == "/" and access.token and "token" in query:
                self._to_viewer_with_cookie()  # the token leaves the address bar and history
                return
            self._route(path)
        except (OSError, _ClientGone):
            self.close_connection = True  # the client went away or stopped reading

    def _route(self, path: str) -> None:
        if path == "/":
            self._send(HTTPStatus.OK, VIEWER.read_bytes(), "text/html; charset=utf-8")
        elif path == "/metrics":
            body, content_type = self.svc.metrics()
            self._send(HTTPStatus.OK, body, content_type)
        elif path == "/readyz":
            status = self.svc.status()
            if status.get("ready"):
                self._text(HTTPStatus.OK, "ready")
            else:
                self._text(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    "\n".join(status.get("reasons") or ["starting"]),
                )
        elif path == "/api/status":
            body = json.dumps(self.svc.status()).encode()
            self._send(HTTPStatus.OK, body, "application/json")
        elif path.startswith("/snapshot/") and path.endswith(".jpg"):
            frame = self.svc.tap.frames.get(path[len("/snapshot/") : -len(".jpg")])
            if frame is None:
                self._text(HTTPStatus.NOT_FOUND, "no frame of that stream yet")
            else:
                self._send(HTTPStatus.OK, frame[1], "image/jpeg")
        elif path.startswith("/video/"):
            stream = path[len("/video/") :]
            if self._stream_state(stream) == "unknown":
                self._text(HTTPStatus.NOT_FOUND, f"no stream {stream!r}")
            else:
                self._streaming(self._mjpeg, stream)
        elif path == "/events":
            self._streaming(self._sse, self.headers.get("Last-Event-ID"))
        elif path.startswith("/clips/"):
            self._clip_file(path[len("/clips/") :])
        else:
            self._text(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def _unauthorized(self) -> None:
        body = (
            b"this vigil needs its access token: open /?token=TOKEN once in a browser (it sets "
            b"a cookie), or send Authorization: Bearer TOKEN\n"
        )
        self.send_response(HTTPStatus.UNAUTHORIZED)
        self.send_header("WWW-Authenticate", 'Bearer realm="vigil"')
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _to_viewer_with_cookie(self) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", "/")
        self.send_header("Set-Cookie", self.svc.access.session_cookie())
        self.send_header("Content-Length", "0")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()

    # --- plain responses -----------------------------------------------------------------

    def _send(self, code: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _text(self, code: HTTPStatus, text: str) -> None:
        self._send(code, (text + "\n").encode(), "text/plain; charset=utf-8")

    # --- alert clips ---------------------------------------------------------------------

    def _clip_file(self, rel: str) -> None:
        """A clip or snapshot under the output folder's ``clips/``, never a file outside it."""
        root = self.svc.clips_dir
        target = _inside(root, rel) if root is not None else None
        if target is None or target.suffix not in _CLIP_TYPES or not target.is_file():
            self._text(HTTPStatus.NOT_FOUND, f"no such clip: {rel}")
            return
        size = target.stat().st_size
        start, end = 0, size - 1
        ranged = _byte_range(self.headers.get("Range"), size)
        if ranged == "bad":
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if ranged is not None:
            start, end = ranged
        self.send_response(HTTPStatus.PARTIAL_CONTENT if ranged else HTTPStatus.OK)
        self.send_header("Content-Type", _CLIP_TYPES[target.suffix])
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        with open(target, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = f.read(min(left, 1 << 16))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    # --- streaming responses -------------------------------------------------------------

    def _streaming(self, body: Callable[[Any], None], arg: Any) -> None:
        if not self.svc._clients.acquire(blocking=False):
            self._text(HTTPStatus.SERVICE_UNAVAILABLE, "too many streaming clients")
            return
        self.close_connection = True
        try:
            body(arg)
        finally:
            self.svc._clients.release()

    def _wait(self, changed: Callable[[], bool]) -> bool:
        """Wait up to KEEPALIVE_S for ``changed()``; False when the server closes. Raises
        :class:`_ClientGone` within :data:`GONE_CHECK_S` of the client closing its end, so a
        gone client frees its streaming slot at once, not at the next frame written."""
        tap = self.svc.tap
        deadline = time.monotonic() + KEEPALIVE_S
        while True:
            left = deadline - time.monotonic()
            with tap.changed:
                tap.changed.wait_for(
                    lambda: changed() or self.svc.closing.is_set() or tap.closed,
                    max(min(left, GONE_CHECK_S), 0.0),
                )
            if self.svc.closing.is_set() or tap.closed:
                return False
            if self._client_gone():
                raise _ClientGone
            if changed() or time.monotonic() >= deadline:
                return True

    def _client_gone(self) -> bool:
        """Whether the client has closed its end (readable, and a peek reads end of file)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _stream_state(self, stream: str) -> str:
        """``running``, ``ended`` (its source has stopped) or ``unknown`` (never in this run)."""
        for info in self.svc.status().get("streams") or []:
            if info.get("stream_id") == stream:
                return "running" if info.get("running", True) else "ended"
        return "running" if stream in self.svc.tap.frames else "unknown"

    def _mjpeg(self, stream: str) -> None:
        """Frames as they come; a stream that has ended gets its newest frame and the
        response ends (the viewer then shows that frame as a still)."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        frames = self.svc.tap.frames
        last = 0
        while True:
            ended = self._stream_state(stream) != "running"
            count, jpeg = frames.get(stream, (0, b""))
            if count != last:
                last = count
                self.wfile.write(
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                    + str(len(jpeg)).encode()
                    + b"\r\n\r\n"
                    + jpeg
                    + b"\r\n"
                )
                self.wfile.flush()
            if ended or not self._wait(lambda seen=last: frames.get(stream, (0, b""))[0] != seen):
                return

    def _sse(self, last_event_id: str | None) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        events = self.svc.tap.events
        with self.svc.tap.changed:
            recent = list(events)
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
        backlog = [e for e in recent if after is None or e[0] > after][-RECENT_EVENTS:]
        last_seq = recent[-1][0] if recent else 0
        self._write_events(backlog)
        while True:
            alive = self._wait(lambda seen=last_seq: bool(events) and events[-1][0] != seen)
            with self.svc.tap.changed:
                new = [e for e in events if e[0] > last_seq]
            if new:
                last_seq = new[-1][0]
                self._write_events(new)
            else:
                self.wfile.write(b": keepalive\n\n")
                self.wfile.flush()
            if not alive:
                return

    def _write_events(self, events: list[tuple[int, str]]) -> None:
        if events:
            self.wfile.write(b"".join(f"id: {s}\ndata: {line}\n\n".encode() for s, line in events))
            self.wfile.flush()


_CLIP_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg"}


def _inside(root: Path, rel: str) -> Path | None:
    """``root / rel`` resolved (links followed) if it stays inside ``root``, else None."""
    if "\x00" in rel or "\\" in rel:
        return None
    try:
        target = (root / rel).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return target if target.is_relative_to(root) and target != root else None


def _byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=a-b`` / ``a-`` / ``-n`` range -> (first, last) byte; "bad" if it cannot be
    served; None for no (or a multi-) range: the whole file."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes=") :].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            start, end = max(size - n, 0), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    if start > end or start >= size:
        return "bad"
    return start, end
