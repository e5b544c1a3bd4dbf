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
URIs are always shown with their credentials hidden. ``vigil streams add|remove|list --control
ENDPOINT`` is the command-line client (:func:`request`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import zmq

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(Exception):
    """A control request that got no valid reply (endpoint down, timeout, bad reply)."""


class ControlServer:
    """The REP side, polled from the supervisor's loop (never blocks longer than asked)."""

    def __init__(self, zctx: zmq.Context, endpoint: str, handler: Handler) -> None:
        self.sock = zctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.handler = handler

    def serve(self, timeout_ms: int = 0) -> bool:
        """Answer at most one waiting request; True if one was answered."""
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            return False
        raw = self.sock.recv()
        try:
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            reply = self.handler(request)
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        self.sock.send(json.dumps(reply).encode())
        return True

    def close(self) -> None:
        self.sock.close()


def request(endpoint: str, message: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request and return the reply; :class:`ControlError` if none in ``timeout_s``."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
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
