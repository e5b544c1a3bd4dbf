"""The control endpoint: add, remove and list streams of a running vigil.

ZeroMQ REQ/REP on ``runtime.control`` (e.g. ``tcp://127.0.0.1:5560``), one JSON object per
request and per reply. Requests::

    {"op": "add", "uri": "rtsp://cam2/live", "stream_id": "cam2", ...SourceConfig fields}
    {"op": "remove", "stream_id": "cam2"}
    {"op": "list"}

Replies have ``ok``; a failure has ``error`` (one line), a success the op's fields::

    {"ok": true, "stream_id": "cam2"}                         # add, remove
    {"ok": true, "streams": [{"stream_id": "cam1", "uri": "rtsp://***@cam1/live",
                              "state": "streaming", "running": true}, ...]}   # list
    {"ok": false, "error": "stream 'cam2' is already running"}

``state`` is ``connecting``, ``streaming``, ``waiting`` (camera down, retrying) or ``ended``.
URIs are always shown with their credentials hidden.

Peers are untrusted: a request is one frame of at most ``runtime.control_max_message_bytes``
(64 KiB; ZeroMQ drops a peer that sends more), a JSON object nested at most 16 deep; anything
else gets ``{"ok": false, "error": ...}`` and the run goes on. ``add`` takes only sources that
``runtime.allowed_sources`` allows (URI scheme prefixes and path roots); a refusal never says
whether a path exists. The source is probed in a thread, so the supervisor's loop never
waits on it; the reply comes when the probe ends (at most ``runtime.probe_timeout_s``).

``vigil streams add|remove|list --control ENDPOINT`` is the command-line client
(:func:`request`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import zmq

from stream.zsocket import (
    ClientKeys,
    CurveServerKeys,
    PeerError,
    SocketLimits,
    client_socket,
    parse_json_object,
    server_socket,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
#: Longest ``uri`` an ``add`` may carry (a file name longer than the OS allows raised OSError).
MAX_URI_CHARS = 2048


class ControlError(Exception):
    """A control request that got no valid reply (endpoint down, timeout, bad reply)."""


class Deferred:
    """A reply that needs slow work (a source probe): ``work`` runs in a daemon thread, then
    ``finish(result or exception)`` runs in the server's (the supervisor's) thread and gives
    the reply. If the work is not done in ``timeout_s`` the reply is ``timeout_reply``; its
    thread may go on (a probe cannot be interrupted), so at most :attr:`MAX_THREADS` run at
    once and :meth:`busy` tells a handler to refuse more."""

    MAX_THREADS = 4
    _running = 0
    _lock = threading.Lock()

    @classmethod
    def busy(cls) -> bool:
        with cls._lock:
            return cls._running >= cls.MAX_THREADS

    def __init__(
        self,
        work: Callable[[], Any],
        finish: Callable[[Any], dict[str, Any]],
        *,
        timeout_s: float,
        timeout_reply: dict[str, Any],
    ) -> None:
        self.future: Future[Any] = Future()
        self.finish = finish
        self.deadline = time.monotonic() + timeout_s
        self.timeout_reply = timeout_reply
        threading.Thread(target=self._run, args=(work,), name="vigil-probe", daemon=True).start()

    def _run(self, work: Callable[[], Any]) -> None:
        with Deferred._lock:
            Deferred._running += 1
        try:
            self.future.set_result(work())
        except BaseException as exc:  # handed to finish() in the server's thread
            self.future.set_exception(exc)
        finally:
            with Deferred._lock:
                Deferred._running -= 1

    def reply(self) -> dict[str, Any] | None:
        """The reply once the work is done (or timed out); None while it runs."""
        if self.future.done():
            exc = self.future.exception()
            return self.finish(exc if exc is not None else self.future.result())
        if time.monotonic() > self.deadline:
            return self.timeout_reply
        return None


Handler = Callable[[dict[str, Any]], "dict[str, Any] | Deferred"]


class ControlServer:
    """The REP side, polled from the supervisor's loop (never blocks longer than asked).

    Every request gets exactly one reply, whatever it holds, so the REP state machine stays
    in step; a handler's exception becomes an error reply, logged with its traceback.
    """

    def __init__(
        self,
        zctx: zmq.Context,
        endpoint: str,
        handler: Handler,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        curve: CurveServerKeys | None = None,
    ) -> None:
        self._zctx, self._endpoint, self._curve = zctx, endpoint, curve
        self._limits = SocketLimits(max_message_bytes=max_message_bytes, sndhwm=100, rcvhwm=100)
        self._max_bytes = max_message_bytes
        self.sock = self._bind()
        self.handler = handler
        self._pending: Deferred | None = None
        self.answered = self.refused = 0

    def _bind(self) -> zmq.Socket:
        return server_socket(
            self._zctx, zmq.REP, self._endpoint, limits=self._limits, curve=self._curve
        )

    def serve(self, timeout_ms: int = 0) -> bool:
        """Answer at most one request (or finish the pending one); True if a reply went out."""
        try:
            return self._serve(timeout_ms)
        except zmq.ContextTerminated:
            raise
        except Exception:  # never the supervisor's loop: a fresh socket, in step again
            log.exception("control endpoint failed; reopening it")
            self._pending = None
            self.sock.close(linger=0)
            self.sock = self._bind()
            return False

    def _serve(self, timeout_ms: int) -> bool:
        if self._pending is not None:
            reply = self._pending.reply()
            if reply is None:
                return False
            self._pending = None
            return self._send(reply)
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            return False
        frames = self.sock.recv_multipart(zmq.NOBLOCK)
        try:
            if len(frames) != 1:
                raise PeerError(f"a request is one frame, not {len(frames)}")
            request = parse_json_object(frames[0], max_bytes=self._max_bytes)
            reply = self.handler(request)
        except (PeerError, ValueError, KeyError, TypeError) as exc:
            self.refused += 1
            log.warning("control: bad request: %s", str(exc)[:200])
            reply = {"ok": False, "error": f"bad request: {str(exc)[:200]}"}
        except Exception:
            self.refused += 1
            log.exception("control: request failed")
            reply = {"ok": False, "error": "internal error (see vigil's log)"}
        if isinstance(reply, Deferred):
            self._pending = reply
            return False
        return self._send(reply)

    def _send(self, reply: dict[str, Any]) -> bool:
        self.sock.send(json.dumps(reply).encode(), zmq.NOBLOCK)
        self.answered += 1
        return True

    def close(self) -> None:
        self.sock.close()


def source_allowed(uri: str, allowed: list[str]) -> bool:
    """Whether ``runtime.allowed_sources`` allows ``uri``: an entry with ``://`` allows the
    URIs that start with it (``rtsp://``, ``rtsp://10.0.0.``); any other entry is a path root
    that allows itself and everything under it (``/srv/video``, ``/dev/video0``). Paths are
    compared after resolving ``..`` and symlinks, so nothing escapes a root; nothing here
    tells a caller whether a path exists."""
    if "://" in uri and not uri.startswith("file://"):
        return any("://" in entry and uri.startswith(entry) for entry in allowed)
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    if not path or "\0" in path or not os.path.isabs(path):
        return False
    try:
        real = os.path.realpath(path)  # non-strict: a missing path resolves as text
    except (OSError, ValueError):
        return False
    for entry in allowed:
        if "://" in entry or not os.path.isabs(entry):
            continue
        root = os.path.realpath(entry)
        if real == root or real.startswith(root.rstrip("/") + "/"):
            return True
    return False


def request(
    endpoint: str,
    message: dict[str, Any],
    timeout_s: float = 5.0,
    *,
    curve: ClientKeys | None = None,
) -> dict[str, Any]:
    """Send one request and return the reply; :class:`ControlError` if none in ``timeout_s``.
    ``curve``: the client keys (:func:`stream.zsocket.load_client_keys`) for a CURVE endpoint."""
    ctx = zmq.Context.instance()
    sock = client_socket(ctx, zmq.REQ, endpoint, curve=curve)
    try:
        sock.send(json.dumps(message).encode())
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise ControlError(f"no reply from {endpoint} in {timeout_s:g} s (is vigil running?)")
        try:
            reply = json.loads(sock.recv())
        except ValueError as exc:
            raise ControlError(f"bad reply from {endpoint}: {exc}") from None
        if not isinstance(reply, dict):
            raise ControlError(f"bad reply from {endpoint}: not a JSON object")
        return reply
    finally:
        sock.close()
