"""The HTTP endpoint of a run (``--http [HOST:]PORT``, ``runtime.http``): live viewer, metrics,
health. It runs in threads of the supervisor process, so it outlives any stage restart and the
viewer recovers by itself.

Routes:

- ``GET /``: the live viewer (``pipeline/web/viewer.html``, one file, no build step).
- ``GET /metrics``: Prometheus text format (:mod:`pipeline.metrics`).
- ``GET /healthz``: 200 ``ok`` while the supervisor's loop turns; 503 otherwise.
- ``GET /readyz``: 200 ``ready`` when every running stream delivers frames and no stage is
  stalled or down; else 503 with one line per reason, naming the stream or stage.
- ``GET /api/status``: the run's state as JSON (streams, stages, readiness).
- ``GET /video/<stream>``: MJPEG (``multipart/x-mixed-replace``) of the annotated frames.
- ``GET /snapshot/<stream>.jpg``: the newest annotated frame (404 before the first).
- ``GET /events``: Server-Sent Events, the newest :data:`RECENT_EVENTS` events then live ones.
- ``GET /clips/<stream>/<name>.mp4|.jpg``: alert clips and snapshots from the output folder's
  ``clips/`` (see :mod:`stream.clips`), only from inside it (no ``..``, no links out, no other
  file types); single ``Range`` requests are answered (206) so browsers can seek in a clip.

Frames and events reach the supervisor from the publish stage over the run's ``tap`` socket
(:class:`pipeline.workers.ViewerTap`); a :class:`LiveTap` thread keeps the newest JPEG per
stream and a bounded list of recent events. Streaming clients (MJPEG, SSE) are bounded by
:data:`MAX_STREAM_CLIENTS` (503 past it); each waits with a timeout and ends when the run does.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import zmq

log = logging.getLogger(__name__)

VIEWER = Path(__file__).resolve().parent / "web" / "viewer.html"
RECENT_EVENTS = 50
MAX_STREAM_CLIENTS = 32
KEEPALIVE_S = 5.0


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
                if parts[0] == b"frame" and len(parts) == 4:
                    count += 1
                    self.frames[parts[1].decode()] = (count, parts[3])
                elif parts[0] == b"event" and len(parts) == 2:
                    line = parts[1].decode()
                    self.events.append((json.loads(line).get("seq") or 0, line))
                self.changed.notify_all()
        self._sock.close()

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        self._thread.join(2.0)


class HttpService:
    """The HTTP server thread. ``status()`` returns the run's JSON status (cheap: the
    supervisor refreshes it), ``metrics()`` the Prometheus text, ``alive()`` the liveness."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tap: LiveTap,
        status: Callable[[], dict[str, Any]],
        metrics: Callable[[], tuple[bytes, str]],
        alive: Callable[[], bool],
        out_dir: Path | None = None,
    ) -> None:
        self.tap, self.status, self.metrics, self.alive = tap, status, metrics, alive
        self.clips_dir = (Path(out_dir) / "clips").resolve() if out_dir is not None else None
        self._clients = threading.BoundedSemaphore(MAX_STREAM_CLIENTS)
        self.closing = threading.Event()
        service = self

        class Handler(_Handler):
            svc = service

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
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

    def close(self) -> None:
        self.closing.set()
        with self.tap.changed:
            self.tap.changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)


class _Handler(BaseHTTPRequestHandler):
    svc: HttpService
    server_version = "vigil"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        log.debug("http %s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        path = unquote(urlsplit(self.path).path)
        try:
            if path == "/":
                self._send(HTTPStatus.OK, VIEWER.read_bytes(), "text/html; charset=utf-8")
            elif path == "/metrics":
                body, content_type = self.svc.metrics()
                self._send(HTTPStatus.OK, body, content_type)
            elif path == "/healthz":
                ok = self.svc.alive()
                self._text(
                    HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                    "ok" if ok else "supervisor loop not turning",
                )
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
                self._streaming(self._mjpeg, path[len("/video/") :])
            elif path == "/events":
                self._streaming(self._sse, self.headers.get("Last-Event-ID"))
            elif path.startswith("/clips/"):
                self._clip_file(path[len("/clips/") :])
            else:
                self._text(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away

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
        """Wait up to KEEPALIVE_S for ``changed()``; False when the server closes."""
        tap = self.svc.tap
        with tap.changed:
            tap.changed.wait_for(
                lambda: changed() or self.svc.closing.is_set() or tap.closed, KEEPALIVE_S
            )
        return not (self.svc.closing.is_set() or tap.closed)

    def _mjpeg(self, stream: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        frames = self.svc.tap.frames
        last = 0
        while self._wait(lambda seen=last: frames.get(stream, (0, b""))[0] != seen):
            count, jpeg = frames.get(stream, (0, b""))
            if count == last:
                continue
            last = count
            self.wfile.write(
                b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                + str(len(jpeg)).encode()
                + b"\r\n\r\n"
                + jpeg
                + b"\r\n"
            )
            self.wfile.flush()

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
