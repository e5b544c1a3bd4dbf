"""The routes of the HTTP endpoint (:mod:`pipeline.http`): one request handler per connection.

:class:`RouteHandler` answers the routes listed in :mod:`pipeline.http` for the service it is
given (:class:`Service`): the access check first, then plain responses, alert clips from the
output folder (only from inside ``clips/``, with single byte ranges: :func:`inside`,
:func:`byte_range`), and the streaming responses (MJPEG, Server-Sent Events), each of which
waits with a timeout and notices within :data:`GONE_CHECK_S` that its client has gone.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.access import HttpAccess

log = logging.getLogger("pipeline.http")

VIEWER = Path(__file__).resolve().parent / "web" / "viewer.html"
RECENT_EVENTS = 50
MAX_STREAM_CLIENTS = 32  # MJPEG and SSE responses at once (503 past it)
KEEPALIVE_S = 5.0
GONE_CHECK_S = 0.5  # how often a waiting streaming response checks that its client is there
CLIP_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg"}


class Service(Protocol):
    """What the routes need of the service (:class:`pipeline.http.HttpService`)."""

    tap: Any  # pipeline.http.LiveTap: frames, events, changed, closed
    access: HttpAccess
    clips_dir: Path | None
    stream_slots: threading.BoundedSemaphore  # MAX_STREAM_CLIENTS
    closing: threading.Event

    def status(self) -> dict[str, Any]: ...
    def metrics(self) -> tuple[bytes, str]: ...
    def alive(self) -> bool: ...


class ClientGone(Exception):
    """The client of a streaming response closed its connection."""


class RouteHandler(BaseHTTPRequestHandler):
    """The request handler; :class:`pipeline.http.HttpService` subclasses it with its ``svc``
    and socket timeout. ``server`` is that service's server (``reading_head``/``reading_done``
    bound the time to read a request head)."""

    svc: Service
    server: Any
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
        except (OSError, ClientGone):
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
        target = inside(root, rel) if root is not None else None
        if target is None or target.suffix not in CLIP_TYPES or not target.is_file():
            self._text(HTTPStatus.NOT_FOUND, f"no such clip: {rel}")
            return
        size = target.stat().st_size
        start, end = 0, size - 1
        ranged = byte_range(self.headers.get("Range"), size)
        if ranged == "bad":
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if ranged is not None:
            start, end = ranged
        self.send_response(HTTPStatus.PARTIAL_CONTENT if ranged else HTTPStatus.OK)
        self.send_header("Content-Type", CLIP_TYPES[target.suffix])
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
        if not self.svc.stream_slots.acquire(blocking=False):
            self._text(HTTPStatus.SERVICE_UNAVAILABLE, "too many streaming clients")
            return
        self.close_connection = True
        try:
            body(arg)
        finally:
            self.svc.stream_slots.release()

    def _wait(self, changed: Callable[[], bool]) -> bool:
        """Wait up to KEEPALIVE_S for ``changed()``; False when the server closes. Raises
        :class:`ClientGone` within :data:`GONE_CHECK_S` of the client closing its end, so a
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
                raise ClientGone
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


def inside(root: Path, rel: str) -> Path | None:
    """``root / rel`` resolved (links followed) if it stays inside ``root``, else None."""
    if "\x00" in rel or "\\" in rel:
        return None
    try:
        target = (root / rel).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return target if target.is_relative_to(root) and target != root else None


def byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
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
