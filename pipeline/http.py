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
- ``GET /events``: Server-Sent Events, the newest
  :data:`~pipeline.http_routes.RECENT_EVENTS` events then live ones.
- ``GET /clips/<stream>/<name>.mp4|.jpg``: alert clips and snapshots from the output folder's
  ``clips/`` (see :mod:`stream.clips`), only from inside it (no ``..``, no links out, no other
  file types); single ``Range`` requests are answered (206) so browsers can seek in a clip.

Frames and events reach the supervisor from the publish stage over the run's ``tap`` socket
(:class:`~pipeline.stages.publish_sinks.ViewerTap`); a :class:`LiveTap` thread keeps the
newest JPEG per stream and a bounded list of recent events. Streaming clients (MJPEG, SSE) are
bounded by :data:`~pipeline.http_routes.MAX_STREAM_CLIENTS` (503 past it); each waits with a
timeout, notices within :data:`~pipeline.http_routes.GONE_CHECK_S` that its client has gone,
and ends when the run does.

Hostile clients (see :class:`HttpService`, :class:`pipeline.access.HttpAccess`): a connection
cap (``runtime.http_max_connections``, a 503 and no thread past it), a deadline for the request
head and for stalled writes (``runtime.http_timeout_s``), the ``Host`` check against DNS rebinding
(``runtime.http_allowed_hosts``) and the bearer token (``runtime.http_token_file``).

This module holds the server side (the connection cap, the head deadline, the tap);
:mod:`pipeline.http_routes` the routes, :class:`pipeline.access.HttpAccess` the access rules.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import zmq

from pipeline.access import HttpAccess
from pipeline.http_routes import MAX_STREAM_CLIENTS, RouteHandler
from pipeline.protocol import TapKind

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 100  # default of runtime.http_max_connections: one thread each
TIMEOUT_S = 10.0  # default of runtime.http_timeout_s


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
                    if parts[0] == TapKind.FRAME and len(parts) == 4:
                        count += 1
                        self.frames[parts[1].decode()] = (count, parts[3])
                    elif parts[0] == TapKind.EVENT and len(parts) == 2:
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
        self.stream_slots = threading.BoundedSemaphore(MAX_STREAM_CLIENTS)
        self.closing = threading.Event()
        service = self

        class Handler(RouteHandler):
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
